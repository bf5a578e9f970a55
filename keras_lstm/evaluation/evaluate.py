"""Evaluation: the policy's loss and per-head accuracy beside both baselines,
always on the same predicted frames; on the same frames, the accuracy on
change frames (`keras_lstm.evaluation.change_frames`) and the calibration
(`keras_lstm.evaluation.calibration`)."""

from __future__ import annotations

import numpy as np

from keras_lstm.data import controller
from keras_lstm.data.windows import Windows
from keras_lstm.evaluation import baselines
from keras_lstm.evaluation.baselines import BaselineStats
from keras_lstm.evaluation.calibration import calibration
from keras_lstm.evaluation.change_frames import change_frame_accuracy
from keras_lstm.evaluation.f1 import f1_summary
from keras_lstm.evaluation.keep_bias import KEEP_BIASES, keep_biased_logits


def _log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def _log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def log_probabilities(logits: dict) -> dict:
    """Per head, float64: `buttons` log P(pressed) and log P(released)
    `[2, N, 8]`, a class head its log-softmax `[N, classes]` (computed once
    for the losses and the probabilities)."""
    z = np.asarray(logits["buttons"], np.float64)
    out = {"buttons": np.stack([_log_sigmoid(z), _log_sigmoid(-z)])}
    for head in controller.CLASS_HEADS:
        out[head] = _log_softmax(np.asarray(logits[head], np.float64))
    return out


def frame_losses(logits: dict, targets: dict, logp: dict | None = None) -> dict:
    """Per head, `[N]` nats per frame (numpy, the same maths as `policy_loss`);
    `logp`: `log_probabilities(logits)`, if already computed."""
    logp = log_probabilities(logits) if logp is None else logp
    b = np.asarray(targets["buttons"], np.float64)
    pressed, released = logp["buttons"]
    out = {"buttons": -(b * pressed + (1 - b) * released).sum(1)}
    for head in controller.CLASS_HEADS:
        out[head] = -logp[head][np.arange(len(logp[head])), np.asarray(targets[head])]
    return out


def probabilities(logits: dict, logp: dict | None = None) -> dict:
    """Per head: `buttons` P(pressed) `[N, 8]`, a class head its softmax `[N, classes]`."""
    logp = log_probabilities(logits) if logp is None else logp
    return {"buttons": np.exp(logp["buttons"][0]), **{h: np.exp(logp[h]) for h in controller.CLASS_HEADS}}


def predictions(logits: dict) -> dict:
    """What the policy predicts: each button pressed iff its logit > 0, each
    class head its most likely class (the accuracy's rule)."""
    return {"buttons": logits["buttons"] > 0, **{h: logits[h].argmax(-1) for h in controller.CLASS_HEADS}}


def head_accuracy(predicted: dict, targets: dict) -> dict:
    """Per head, the share of frames predicted right (buttons: the mean over
    the 8 buttons)."""
    return {
        "buttons": float(np.mean(predicted["buttons"] == (np.asarray(targets["buttons"]) > 0.5))),
        **{h: float(np.mean(predicted[h] == targets[h])) for h in controller.CLASS_HEADS},
    }


def predict_logits(policy, windows: Windows, batch_size: int = 256) -> dict:
    """Logits for every window's last frame, in window order."""
    chunks = {h: [] for h in controller.HEADS}
    for start in range(0, len(windows), batch_size):
        x, _ = windows.gather(windows.ends[start : start + batch_size])
        for head, value in policy.predict_on_batch(x).items():
            chunks[head].append(np.asarray(value))
    return {h: np.concatenate(v) if v else np.zeros((0,)) for h, v in chunks.items()}


def evaluate_policy(policy, windows: Windows, stats: BaselineStats, batch_size: int = 256) -> dict:
    """The summary reported by `train` and `evaluate` on windows (each
    prediction from the zero state `window_size` frames before it)."""
    if len(windows) == 0:
        raise ValueError("no frames to evaluate (every trajectory is shorter than one window)")
    logits = predict_logits(policy, windows, batch_size)
    return {"evaluation": "windows", **summarize(logits, windows.predicted_targets(), windows.previous_targets(), stats)}


def summarize(logits: dict, targets: dict, previous: dict, stats: BaselineStats) -> dict:
    """The summary of a policy's `logits` on some frames (`targets`, and
    `previous`, the controller one frame before each), beside both baselines
    on the same frames; however the logits were computed."""
    logp = log_probabilities(logits)
    losses = frame_losses(logits, targets, logp)
    predicted = predictions(logits)
    buttons_right = predicted["buttons"] == (targets["buttons"] > 0.5)
    accuracy = head_accuracy(predicted, targets)
    per_button = {name: float(np.mean(buttons_right[:, i])) for i, name in enumerate(controller.BUTTONS)}
    repeat = baselines.repeat_baseline(stats, targets, previous)
    prior = baselines.prior_baseline(stats, targets)
    changes = change_frame_accuracy(predicted, targets, previous)
    change_frames = changes.counts()
    return {
        "val_loss": float(sum(v.mean() for v in losses.values())),
        "per_head_loss": {h: float(v.mean()) for h, v in losses.items()},
        "per_head_accuracy": accuracy,
        "per_button_accuracy": per_button,
        "baseline_repeat_loss": repeat["loss"],
        "baseline_repeat_accuracy": repeat["per_head_accuracy"],
        "baseline_repeat_per_head_loss": repeat["per_head_loss"],
        "baseline_prior_loss": prior["loss"],
        "baseline_prior_accuracy": prior["per_head_accuracy"],
        "baseline_prior_per_head_loss": prior["per_head_loss"],
        "frames": int(len(losses["buttons"])),
        # frames whose target differs from the previous frame's controller
        # (buttons: change events, summed over the 8 buttons; the head's
        # accuracy is weighted by them)
        "change_frames": change_frames,
        "change_frames_per_button": changes.button_counts(),
        "change_frame_accuracy": changes.rates(),
        "change_frame_accuracy_per_button": changes.button_rates(),
        # the policy's own changes (prediction != previous input) and how often they are right
        "predicted_changes": changes.predicted_counts(),
        "predicted_change_precision": changes.precisions(),
        "predicted_change_precision_per_button": changes.button_precisions(),
        "baseline_repeat_change_frame_accuracy": baselines.repeat_change_frame_accuracy(change_frames),
        "baseline_prior_change_frame_accuracy": baselines.prior_change_frame_accuracy(stats, targets, previous),
        # the accuracy when each head keeps the previous input unless a change is e^bias times as likely
        "keep_bias_accuracy": {
            str(bias): head_accuracy(predictions(keep_biased_logits(logits, previous, bias)), targets) for bias in KEEP_BIASES
        },
        **calibration(probabilities(logits, logp), targets),
        **f1_summary(predicted, targets, previous, stats),
    }
