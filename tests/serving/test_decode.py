"""The numpy and TF controller decoders agree, on probabilities and on the
pad; the sampling decoder repeats with a seed, tends to argmax as the
temperature falls, and draws with the predicted frequencies."""

import numpy as np
import pytest
import tensorflow as tf

from keras_lstm.data import controller
from keras_lstm.serving.decode import (
    ControllerSampler,
    decode_controller,
    decode_controller_tf,
    logits_from_probabilities,
    sample_controller,
    sample_pad,
)


def test_numpy_and_tf_decoders_agree():
    rng = np.random.default_rng(0)
    logits = {"buttons": rng.normal(0, 3, size=(64, len(controller.BUTTONS))).astype(np.float32)}
    for head in controller.CLASS_HEADS:
        logits[head] = rng.normal(0, 3, size=(64, controller.HEAD_CLASSES[head])).astype(np.float32)
    got = decode_controller_tf({k: tf.constant(v) for k, v in logits.items()})
    want = decode_controller(logits)
    assert set(got) == set(want)
    for key in want:
        np.testing.assert_allclose(got[key].numpy(), want[key], atol=1e-6, err_msg=key)
    assert set(np.unique(want["main_x"])) <= set(np.linspace(-1, 1, controller.STICK_CLASSES).astype(np.float32))


# ---------------------------------------------------------------------------
# Sampling (`keras-lstm play --sample`)


def random_logits(batch, seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    logits = {"buttons": rng.normal(0, scale, size=(batch, len(controller.BUTTONS))).astype(np.float32)}
    for head in controller.CLASS_HEADS:
        logits[head] = rng.normal(0, scale, size=(batch, controller.HEAD_CLASSES[head])).astype(np.float32)
    return logits


def pad_classes(pad):
    out = {"buttons": pad["buttons"]}
    for head in controller.STICK_HEADS:
        out[head] = controller.stick_to_class(pad[head])
    out["shoulder"] = controller.shoulder_to_class(pad["shoulder"])
    return out


def test_sampling_with_a_seed_repeats():
    logits = random_logits(16)
    runs = []
    for _ in range(2):
        sampler = ControllerSampler(temperature=1.0, seed=7)
        runs.append([sampler(logits) for _ in range(5)])
    for first, second in zip(*runs):
        for key in first:
            np.testing.assert_array_equal(first[key], second[key], err_msg=key)
    other = ControllerSampler(temperature=1.0, seed=8)(logits)
    assert any(not np.array_equal(other[h], runs[0][0][h]) for h in controller.HEADS)
    # the probabilities stay the policy's; only the pad is drawn
    np.testing.assert_array_equal(runs[0][0]["main_x_prob"], decode_controller(logits)["main_x_prob"])


def test_sampling_at_a_small_temperature_is_argmax():
    logits = random_logits(256, seed=1)
    sampled = sample_controller(logits, np.random.default_rng(0), temperature=1e-6)
    argmax = decode_controller(logits)
    for head in controller.HEADS:
        np.testing.assert_array_equal(sampled[head], argmax[head], err_msg=head)


@pytest.mark.parametrize("temperature", [1.0, 2.5, 0.5])
def test_sampling_frequencies_match_the_tempered_probabilities(temperature):
    draws = 20_000
    one = random_logits(1, seed=2, scale=1.5)
    tiled = {h: np.repeat(v, draws, axis=0) for h, v in one.items()}
    got = pad_classes(sample_pad(tiled, np.random.default_rng(3), temperature))
    # buttons: Bernoulli(sigmoid(logit / T)); each 4 standard deviations of a
    # binomial frequency: a false alarm about 1 in 16,000 per value checked
    p_on = 1 / (1 + np.exp(-one["buttons"][0].astype(np.float64) / temperature))
    freq = got["buttons"].mean(0)
    np.testing.assert_array_less(np.abs(freq - p_on), 4 * np.sqrt(p_on * (1 - p_on) / draws) + 1e-12)
    for head in controller.CLASS_HEADS:
        z = one[head][0].astype(np.float64) / temperature
        p = np.exp(z - z.max())
        p /= p.sum()
        freq = np.bincount(got[head], minlength=len(p)) / draws
        np.testing.assert_array_less(np.abs(freq - p), 4 * np.sqrt(p * (1 - p) / draws) + 1e-12, err_msg=head)


def test_sampling_from_probabilities_equals_sampling_from_logits():
    """A SavedModel returns probabilities, not logits: the logits recovered
    from them give the same distributions, so the same draws."""
    logits = random_logits(500, seed=4)
    recovered = logits_from_probabilities(decode_controller(logits))
    for temperature in (1.0, 0.7):
        direct = sample_pad(logits, np.random.default_rng(5), temperature)
        via_probs = sample_pad(recovered, np.random.default_rng(5), temperature)
        for head in controller.HEADS:
            np.testing.assert_array_equal(direct[head], via_probs[head], err_msg=head)
    # a probability float32 rounded to 1 (or 0): always (never) drawn
    saturated = logits_from_probabilities(decode_controller({**logits, "buttons": np.full((500, 8), 40.0, np.float32)}))
    assert np.isposinf(saturated["buttons"]).all()
    assert sample_pad(saturated, np.random.default_rng(0), 3.0)["buttons"].all()


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf")])
def test_temperature_must_be_positive_and_finite(temperature):
    with pytest.raises(ValueError, match="--temperature must be > 0"):
        ControllerSampler(temperature=temperature)


def test_argmax_pad_is_decode_controllers_pad():
    from keras_lstm.serving.decode import argmax_pad

    rng = np.random.default_rng(1)
    logits = {"buttons": rng.normal(size=(50, 8)) * 4}
    logits.update({h: rng.normal(size=(50, controller.HEAD_CLASSES[h])) * 4 for h in controller.CLASS_HEADS})
    full, pad = decode_controller(logits), argmax_pad(logits)
    assert set(pad) == {"buttons", *controller.CLASS_HEADS}
    for key, value in pad.items():
        np.testing.assert_array_equal(value, full[key], err_msg=key)
