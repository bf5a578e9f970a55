"""The evaluation's numpy loss and accuracy are the training step's, on the
same logits and targets (two copies of the math, held equal here)."""

import numpy as np
import pytest
import tensorflow as tf

from keras_lstm.data import controller
from keras_lstm.evaluation.evaluate import frame_losses, head_accuracy, predictions
from keras_lstm.model.losses import head_correct, policy_loss


def random_heads(n, seed):
    rng = np.random.default_rng(seed)
    logits = {"buttons": rng.normal(0, 3, size=(n, len(controller.BUTTONS))).astype(np.float32)}
    targets = {"buttons": rng.integers(0, 2, size=(n, len(controller.BUTTONS))).astype(np.float32)}
    for head in controller.CLASS_HEADS:
        k = controller.HEAD_CLASSES[head]
        logits[head] = rng.normal(0, 3, size=(n, k)).astype(np.float32)
        targets[head] = rng.integers(0, k, size=n).astype(np.int32)
    return logits, targets


@pytest.mark.parametrize("seed", [0, 1])
def test_numpy_frame_losses_equal_the_training_loss(seed):
    logits, targets = random_heads(257, seed)
    total, per_head = policy_loss({k: tf.constant(v) for k, v in targets.items()}, {k: tf.constant(v) for k, v in logits.items()})
    losses = frame_losses(logits, targets)
    # float32 TF against float64 numpy: a few float32 ulps of losses of ~1-30 nats
    for head in controller.HEADS:
        assert losses[head].mean() == pytest.approx(float(per_head[head]), rel=1e-5), head
    assert sum(v.mean() for v in losses.values()) == pytest.approx(float(total), rel=1e-5)


def test_numpy_accuracy_rule_equals_the_training_metric():
    logits, targets = random_heads(300, 2)
    correct = head_correct({k: tf.constant(v) for k, v in targets.items()}, {k: tf.constant(v) for k, v in logits.items()})
    accuracy = head_accuracy(predictions(logits), targets)  # the rule evaluate_policy applies in numpy
    for head in controller.HEADS:
        assert float(np.mean(correct[head])) == pytest.approx(accuracy[head]), head
