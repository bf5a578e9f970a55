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

N_BUTTONS = len(controller.BUTTONS)
# 8 buttons as 0/1, then each stick axis one-hot (17), then the shoulder one-hot (5).
PREVIOUS_INPUT_SIZE = N_BUTTONS + len(controller.STICK_HEADS) * controller.STICK_CLASSES + controller.SHOULDER_CLASSES


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


def previous_input_numpy(numeric_BxF: np.ndarray) -> np.ndarray:
    """`PreviousInput` in numpy, one frame per game: `[B, NUMERIC_SIZE]` -> `[B, PREVIOUS_INPUT_SIZE]`."""
    pad = numeric_BxF[:, features.STATE_NUMERIC_SIZE :]
    out = np.zeros((len(pad), PREVIOUS_INPUT_SIZE), np.float32)
    out[:, :N_BUTTONS] = pad[:, :N_BUTTONS]
    rows = np.arange(len(pad))
    offset = N_BUTTONS
    for i in range(len(controller.STICK_HEADS)):
        out[rows, offset + controller.stick_to_class(pad[:, N_BUTTONS + i])] = 1.0
        offset += controller.STICK_CLASSES
    out[rows, offset + controller.shoulder_to_class(pad[:, N_BUTTONS + 4])] = 1.0
    return out


def check_keep_bias(bias: float) -> float:
    """A keep bias (nats), or ValueError: a finite number >= 0."""
    if not np.isfinite(bias) or bias < 0:
        raise ValueError(f"--keep-bias must be a finite number >= 0 (nats), got {bias}")
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
