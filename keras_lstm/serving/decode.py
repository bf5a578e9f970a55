"""Head logits -> probabilities and the controller to press, in numpy (the
frame loop's) and in TF (the SavedModel's). `tests/serving/test_decode.py`
holds the two equal. Only `decode_controller_tf` needs TensorFlow (imported
when called), so a UMI bundle carries this module as it is.

Two ways to act on the probabilities: `decode_controller` presses the most
likely value of each head (argmax; the default), `sample_controller` draws it
from the predicted distributions at a temperature (`keras-lstm play
--sample`): each button from Bernoulli(sigmoid(logit / T)), each stick and
shoulder head from categorical(softmax(logits / T)). T = 1 samples the
policy's own distributions, T -> 0 approaches argmax, T > 1 flattens them.
"""

from __future__ import annotations

import numpy as np

from keras_lstm.data import controller
from keras_lstm.model.numpy_policy import sigmoid as np_sigmoid


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
        out[f"{head}_prob"] = _softmax(logits[head]).astype(np.float32)
        out[head] = _class_value(head, np.argmax(logits[head], axis=-1))
    return out


def argmax_pad(logits: dict) -> dict:
    """`decode_controller`'s pad alone, without the probabilities (what a bot
    sends): each button pressed where its logit is above 0 (probability above
    0.5), each stick and shoulder head the value of its most likely class."""
    out = {"buttons": (np.asarray(logits["buttons"]) > 0).astype(np.float32)}
    for head in controller.CLASS_HEADS:
        out[head] = _class_value(head, np.argmax(logits[head], axis=-1))
    return out


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _class_value(head: str, cls):
    """A head's class -> the pad value (stick in [-1, 1], shoulder in [0, 1])."""
    return controller.class_to_shoulder(cls) if head == "shoulder" else controller.class_to_stick(cls)


# ---------------------------------------------------------------------------
# Sampling


def check_temperature(temperature: float) -> float:
    """The sampling temperature, or ValueError: it must be a finite number > 0
    (T = 0 would be argmax: act without --sample for that)."""
    if not np.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"--temperature must be > 0, got {temperature} (for the most likely action, play without --sample)")
    f32 = np.finfo(np.float32)
    if not f32.tiny <= temperature <= f32.max:  # then logits / T stays finite for any float32 logits
        raise ValueError(f"--temperature must be between {f32.tiny:.3g} and {f32.max:.3g} (float32), got {temperature}")
    return float(temperature)


def sample_pad(logits: dict, rng: np.random.Generator, temperature: float = 1.0) -> dict:
    """The pad drawn from the heads' distributions at `temperature`:
    `buttons [B, 8]` 1.0 where Bernoulli(sigmoid(logit / T)) drew pressed, and
    each stick and shoulder head's value `[B]` for the class drawn from
    categorical(softmax(logits / T)). Each frame takes 13 uniform draws from
    `rng` (8 buttons, 4 stick axes, the shoulder), so one seed gives one
    sequence of pads."""
    temperature = check_temperature(temperature)
    n_buttons, n_sticks = len(controller.BUTTONS), len(controller.STICK_HEADS)
    z = np.asarray(logits["buttons"], np.float64) / temperature
    u = rng.random((z.shape[0], n_buttons + n_sticks + 1))
    out = {"buttons": (u[:, :n_buttons] < np_sigmoid(z)).astype(np.float32)}
    # the four sticks at once, [B, 4, 17] (fewer numpy calls per frame)
    sticks = np.stack([np.asarray(logits[h], np.float64) for h in controller.STICK_HEADS], axis=1) / temperature
    stick_classes = _draw_classes(sticks, u[:, n_buttons : n_buttons + n_sticks])
    for i, head in enumerate(controller.STICK_HEADS):
        out[head] = controller.class_to_stick(stick_classes[:, i])
    shoulder = np.asarray(logits["shoulder"], np.float64) / temperature
    out["shoulder"] = controller.class_to_shoulder(_draw_classes(shoulder, u[:, -1]))
    return out


def _draw_classes(z, u):
    """Classes drawn from softmax(z) over the last axis, by inverting the
    cdf at the uniform draws `u` (z's shape without the last axis)."""
    cdf = np.cumsum(_softmax(z), axis=-1)
    u = u[..., None] * cdf[..., -1:]  # scaled: rounding leaves the cdf's end a hair off 1
    return np.minimum((cdf < u).sum(axis=-1), z.shape[-1] - 1)  # the first class whose cdf reaches u


def sample_controller(logits: dict, rng: np.random.Generator, temperature: float = 1.0) -> dict:
    """`decode_controller`'s output (the probabilities are the policy's, at
    T = 1) with the pad sampled by `sample_pad` instead of argmax."""
    out = decode_controller(logits)
    out.update(sample_pad(logits, rng, temperature))
    return out


def logits_from_probabilities(decoded: dict) -> dict:
    """Head logits back from a decoded controller's probabilities (what a
    SavedModel returns): `log p - log(1 - p)` per button, `log p` per class
    (softmax is unchanged by a constant per row). A probability that float32
    rounded to 0 or 1 gives an infinite logit: that value is then never (or
    always) drawn, whatever the temperature."""
    with np.errstate(divide="ignore"):
        p_on = np.asarray(decoded["buttons_prob"], np.float64)
        out = {"buttons": np.log(p_on) - np.log1p(-p_on)}
        for head in controller.CLASS_HEADS:
            out[head] = np.log(np.asarray(decoded[f"{head}_prob"], np.float64))
    return out


class ControllerSampler:
    """Acts by sampling, reproducibly: `sampler(logits)` is
    `sample_controller` with this sampler's own random generator (seeded with
    `seed`) and `temperature`; `sampler.pad(logits)` only the sampled pad."""

    def __init__(self, temperature: float = 1.0, seed: int = 0):
        self.temperature = check_temperature(temperature)
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)

    def __call__(self, logits: dict) -> dict:
        return sample_controller(logits, self.rng, self.temperature)

    def pad(self, logits: dict) -> dict:
        return sample_pad(logits, self.rng, self.temperature)

    def describe(self) -> dict:
        return {"mode": "sample", "temperature": self.temperature, "seed": self.seed}


def decode_controller_tf(logits: dict) -> dict:
    """`decode_controller` in TF ops (for the SavedModel): probabilities and
    the decoded controller. The four
    stick heads go through one softmax and one argmax (fewer ops per call)."""
    import tensorflow as tf  # here: the numpy half of this module runs without TensorFlow (a UMI bundle)

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
