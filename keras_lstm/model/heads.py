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
