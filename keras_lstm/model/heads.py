"""What the controller heads see besides the backbone's output: the previous
controller, as classes.

Melee inputs persist: most frames repeat the previous frame's input. The
policy gets that input as scalars (one per stick axis), so copying a 17-way
class back out of the backbone takes a sharp learned map, and the backbone
must carry it. Giving the heads the previous classes one-hot makes "keep the
input" one linear weight per class (a learned transition table per head), so
the backbone's capacity goes to predicting changes. `docs/QUALITY.md` has
the measurements.

The spec is the Keras layer `PreviousInput`; `previous_input_numpy` is its
numpy form (what `PolicyStepper` runs), built on the controller's own
quantisation (`keras_lstm.data.controller`); `tests/model/test_heads.py`
holds the two equal.
"""

from __future__ import annotations

import keras
import numpy as np

from keras_lstm.data import controller, features
# N_BUTTONS, PREVIOUS_INPUT_SIZE: 8 buttons as 0/1, each stick axis one-hot (17), the shoulder one-hot (5).
from keras_lstm.model.numpy_policy import N_BUTTONS, PREVIOUS_INPUT_SIZE
from keras_lstm.model.numpy_policy import previous_input_onehot as previous_input_numpy  # noqa: F401 - the numpy form


@keras.saving.register_keras_serializable(package="keras_lstm")
class PreviousInput(keras.layers.Layer):
    """`numeric [..., NUMERIC_SIZE]` -> the previous controller it holds,
    `[..., PREVIOUS_INPUT_SIZE]`: buttons 0/1, stick and shoulder classes
    one-hot (the inverse of `controller.targets_as_input`)."""

    def call(self, numeric):
        pad = numeric[..., features.STATE_NUMERIC_SIZE :]
        half = (controller.STICK_CLASSES - 1) / 2.0
        sticks = keras.ops.clip(keras.ops.round((pad[..., N_BUTTONS : N_BUTTONS + 4] + 1.0) * half), 0, controller.STICK_CLASSES - 1)
        shoulder = keras.ops.clip(keras.ops.round(pad[..., N_BUTTONS + 4] * (controller.SHOULDER_CLASSES - 1)), 0, controller.SHOULDER_CLASSES - 1)
        parts = [pad[..., :N_BUTTONS]]
        parts += [keras.ops.one_hot(keras.ops.cast(sticks[..., i], "int32"), controller.STICK_CLASSES) for i in range(4)]
        parts.append(keras.ops.one_hot(keras.ops.cast(shoulder, "int32"), controller.SHOULDER_CLASSES))
        return keras.ops.concatenate(parts, axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (PREVIOUS_INPUT_SIZE,)


# A larger bias asks for a change e^B times as likely as keeping, past any
# ratio of two floats (float64's largest is e^709): the policy never changes
# its input there already. Under it, 2 x the bias added to float32 weights
# stays finite (folded: `fold_keep_bias`), where 1e39 overflowed to inf.
MAX_KEEP_BIAS = 1000.0


def check_keep_bias(bias: float) -> float:
    """A keep bias (nats), or ValueError: a number from 0 to `MAX_KEEP_BIAS`."""
    if not np.isfinite(bias) or not 0 <= bias <= MAX_KEEP_BIAS:
        raise ValueError(f"--keep-bias must be a finite number >= 0 and at most {MAX_KEEP_BIAS:g} (nats), got {bias}")
    return float(bias)


def fold_keep_bias(policy, bias: float) -> None:
    """Make `policy` (in place) keep its previous input unless a change is
    e^bias times as likely: each head's logits gain `bias` toward the
    previous input, as `keras_lstm.evaluation.keep_bias.keep_biased_logits`
    adds them. The heads see the previous input one-hot, so the bias is a
    change of their weights, and every form that reads them (the Keras
    model, `PolicyStepper`, an export) decides with it at no cost per frame.
    `tests/model/test_heads.py` holds the folded logits equal to the added
    ones."""
    bias = check_keep_bias(bias)
    if policy.previous_input is None:
        raise ValueError("--keep-bias needs heads that see the previous input; this policy was trained with --no-previous-input-heads")
    for head, layer in policy.head_layers.items():
        kernel, layer_bias = np.array(layer.kernel.numpy()), np.array(layer.bias.numpy())
        first = kernel.shape[0] - PREVIOUS_INPUT_SIZE  # the backbone's columns come first
        n_out = kernel.shape[1]
        columns = np.arange(n_out)
        if head == "buttons":
            # pressed before: +bias; released before: -bias (the 0/1 column times 2 bias, less bias)
            kernel[first + columns, columns] += 2 * bias
            layer_bias -= bias
        else:
            kernel[first + _class_offset(head) + columns, columns] += bias
        layer.kernel.assign(kernel)
        layer.bias.assign(layer_bias)


def _class_offset(head: str) -> int:
    """Where a class head's one-hot block starts in the previous input."""
    if head == "shoulder":
        return N_BUTTONS + len(controller.STICK_HEADS) * controller.STICK_CLASSES
    return N_BUTTONS + controller.STICK_HEADS.index(head) * controller.STICK_CLASSES
