"""Calibration: does a head's confidence match how often it is right?

Per head, each prediction has a confidence (the probability of the value it
predicts) and is right or wrong. Predictions are put into `BINS` equal-width
confidence bins over [0, 1]; a calibrated head is right in a bin as often as
its mean confidence there. The expected calibration error (ECE) is the mean
gap, weighted by how many predictions each bin holds:

    ECE = sum over bins b of  n_b / N * |accuracy_b - confidence_b|

- class heads: the confidence is the softmax's largest probability, right when
  that class is the target;
- buttons: each of the 8 buttons is one binary prediction (pressed iff
  P(pressed) > 0.5) with confidence max(p, 1 - p).

Sampling a policy's actions (`keras-lstm play --sample`) follows these
probabilities, so a badly calibrated head samples badly.
"""

from __future__ import annotations

import numpy as np

from keras_lstm.data import controller

BINS = 15


def reliability_bins(confidence, correct, bins: int = BINS) -> dict:
    """Per equal-width bin of confidence (bin i holds [i/bins, (i+1)/bins);
    a confidence of 1 goes to the last): the mean confidence, the accuracy
    and the count. Empty bins have None for the two means."""
    confidence = np.asarray(confidence, np.float64).reshape(-1)
    correct = np.asarray(correct, np.float64).reshape(-1)
    index = np.clip((confidence * bins).astype(np.int64), 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    conf_sum = np.bincount(index, weights=confidence, minlength=bins)
    right_sum = np.bincount(index, weights=correct, minlength=bins)
    return {
        "confidence": [float(s / n) if n else None for s, n in zip(conf_sum, count)],
        "accuracy": [float(s / n) if n else None for s, n in zip(right_sum, count)],
        "count": [int(n) for n in count],
    }


def expected_calibration_error(bins: dict) -> float | None:
    """ECE from `reliability_bins`' output (None when it holds no prediction)."""
    total = sum(bins["count"])
    if total == 0:
        return None
    gaps = (
        n * abs(acc - conf)
        for n, acc, conf in zip(bins["count"], bins["accuracy"], bins["confidence"])
        if n
    )
    return float(sum(gaps) / total)


def head_confidences(probabilities: dict, targets: dict) -> dict:
    """`{head: (confidence [M], correct [M])}` from per-head probabilities
    (`buttons`: `[N, 8]` P(pressed); a class head: `[N, classes]`) and the
    targets; buttons give M = 8 N predictions, a class head M = N."""
    p_on = np.asarray(probabilities["buttons"], np.float64)
    pressed = np.asarray(targets["buttons"]) > 0.5
    out = {"buttons": (np.maximum(p_on, 1 - p_on).reshape(-1), ((p_on > 0.5) == pressed).reshape(-1))}
    for head in controller.CLASS_HEADS:
        p = np.asarray(probabilities[head], np.float64)
        out[head] = (p.max(axis=-1), p.argmax(axis=-1) == np.asarray(targets[head]))
    return out


def calibration(probabilities: dict, targets: dict, bins: int = BINS) -> dict:
    """`calibration_ece {head: float}` and `calibration_bins {head:
    reliability_bins}` for every head (the evaluation summary's keys)."""
    per_head = {head: reliability_bins(conf, right, bins) for head, (conf, right) in head_confidences(probabilities, targets).items()}
    return {
        "calibration_ece": {head: expected_calibration_error(b) for head, b in per_head.items()},
        "calibration_bins": per_head,
    }
