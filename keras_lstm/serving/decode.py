"""Head logits -> probabilities and the controller to press, in numpy (the
frame loop's) and in TF (the SavedModel's). `tests/serving/test_decode.py`
holds the two equal."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_lstm.data import controller
from keras_lstm.model.recurrent import np_sigmoid


def decode_controller(logits: dict) -> dict:
    """Head logits `[B, ...]` -> probabilities and the controller to press.

    Returns `buttons_prob [B, 8]`, `<head>_prob [B, classes]` for the stick
    and shoulder heads, and the decoded pad: `buttons [B, 8]` (1.0 where the
    probability exceeds 0.5), `main_x`, `main_y`, `c_x`, `c_y` in [-1, 1] and
    `shoulder` in [0, 1] (`[B]` each, the most likely class's value).
    """
    out = {"buttons_prob": np_sigmoid(logits["buttons"]).astype(np.float32)}
    out["buttons"] = (out["buttons_prob"] > 0.5).astype(np.float32)
    for head in controller.CLASS_HEADS:
        z = logits[head] - logits[head].max(axis=-1, keepdims=True)
        e = np.exp(z)
        out[f"{head}_prob"] = (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)
        cls = np.argmax(logits[head], axis=-1)
        out[head] = controller.class_to_shoulder(cls) if head == "shoulder" else controller.class_to_stick(cls)
    return out


def decode_controller_tf(logits: dict) -> dict:
    """`decode_controller` in TF ops (for the SavedModel): probabilities and
    the decoded controller. The four
    stick heads go through one softmax and one argmax (fewer ops per call)."""
    out = {"buttons_prob": tf.sigmoid(logits["buttons"])}
    out["buttons"] = tf.cast(out["buttons_prob"] > 0.5, tf.float32)
    sticks_BxSxK = tf.stack([logits[h] for h in controller.STICK_HEADS], axis=1)
    stick_probs = tf.unstack(tf.nn.softmax(sticks_BxSxK, axis=-1), axis=1)
    stick_values_BxS = tf.cast(tf.argmax(sticks_BxSxK, axis=-1), tf.float32) * (2.0 / (controller.STICK_CLASSES - 1)) - 1.0
    for head, probs, value in zip(controller.STICK_HEADS, stick_probs, tf.unstack(stick_values_BxS, axis=1)):
        out[f"{head}_prob"] = probs
        out[head] = value
    out["shoulder_prob"] = tf.nn.softmax(logits["shoulder"], axis=-1)
    out["shoulder"] = tf.cast(tf.argmax(logits["shoulder"], axis=-1), tf.float32) * (1.0 / (controller.SHOULDER_CLASSES - 1))
    return out
