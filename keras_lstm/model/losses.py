"""The policy's loss and per-head correctness, in `keras.ops` (any backend).

The loss is the sum of the 8 button cross-entropies and the 5 class
cross-entropies, in nats, averaged over predicted frames. Logits and targets
may carry any leading dimensions (`[B]` frames, or `[B, T]` frames of
windows); the mean is over all of them. `keras_lstm.evaluation.evaluate`
computes the same in numpy (`tests/evaluation/test_evaluate.py` holds them
equal).
"""

from __future__ import annotations

import functools

import keras

from keras_lstm.data import controller


def policy_loss(targets: dict, logits: dict) -> tuple:
    """Mean over frames of the summed head cross-entropies (nats), and each
    head's mean loss."""
    ops = keras.ops
    per_head = {
        "buttons": ops.sum(ops.binary_crossentropy(ops.cast(targets["buttons"], "float32"), logits["buttons"], from_logits=True), axis=-1)
    }
    for head in controller.CLASS_HEADS:
        per_head[head] = ops.sparse_categorical_crossentropy(ops.cast(targets[head], "int32"), logits[head], from_logits=True)
    total = functools.reduce(ops.add, per_head.values())  # left to right, as TensorFlow's add_n sums
    return ops.mean(total), {h: ops.mean(v) for h, v in per_head.items()}


def head_correct(targets: dict, logits: dict) -> dict:
    """Per head, float 1/0 for a correct prediction at each frame (buttons:
    the fraction of the 8 buttons right)."""
    ops = keras.ops
    correct = {
        "buttons": ops.mean(
            ops.cast(ops.equal(ops.cast(logits["buttons"] > 0, "float32"), ops.cast(targets["buttons"], "float32")), "float32"),
            axis=-1,
        )
    }
    for head in controller.CLASS_HEADS:
        predicted = ops.cast(ops.argmax(logits[head], axis=-1), "int32")
        correct[head] = ops.cast(ops.equal(predicted, ops.cast(targets[head], "int32")), "float32")
    return correct


def flatten_time(v):
    """`[B, T, ...] -> [B*T, ...]`: per-frame logits or targets as frames."""
    shape = keras.ops.shape(v)
    return keras.ops.reshape(v, (-1,) + tuple(shape[2:]))
