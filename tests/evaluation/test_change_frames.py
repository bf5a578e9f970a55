"""Accuracy on change frames (the input differs from the previous frame's):
hand-built cases for the policy and the class prior, and evaluate_policy's
keys on frames whose answer is known."""

import numpy as np
import pytest

from keras_lstm.data import controller, features
from keras_lstm.data.windows import make_windows
from keras_lstm.evaluation import baselines
from keras_lstm.evaluation.change_frames import ChangeFrameCounter, change_frame_accuracy
from keras_lstm.evaluation.evaluate import evaluate_policy


def frames(main_x, buttons=None, shoulder=None):
    """Targets (or predictions) over frames: main_x as given, the other sticks
    centred, shoulder 0, buttons `[N, 8]` (none pressed unless given)."""
    n = len(main_x)
    out = {h: np.full(n, 8, np.int32) for h in controller.STICK_HEADS}
    out["main_x"] = np.asarray(main_x, np.int32)
    out["shoulder"] = np.zeros(n, np.int32) if shoulder is None else np.asarray(shoulder, np.int32)
    out["buttons"] = np.zeros((n, 8), np.float32) if buttons is None else np.asarray(buttons, np.float32)
    return out


def buttons(a, b):
    out = np.zeros((len(a), 8), np.float32)
    out[:, 0], out[:, 1] = a, b
    return out


def hand_built() -> ChangeFrameCounter:
    """Five frames: main_x and buttons A, B changing, the policy right on some."""
    previous = frames([8, 8, 8, 16, 16], buttons([0, 0, 1, 1, 0], [0, 0, 0, 0, 0]))
    target = frames([8, 8, 16, 16, 0], buttons([0, 1, 1, 0, 0], [0, 0, 0, 1, 1]))
    predicted = frames([3, 8, 16, 3, 5], buttons([1, 1, 1, 1, 0], [0, 0, 0, 1, 0]))
    return change_frame_accuracy(predicted, target, previous)


def test_change_frame_accuracy_by_hand():
    counter = hand_built()
    # main_x changed on frames 2 (to 16: predicted) and 4 (to 0: predicted 5): 1 of 2;
    # the wrong predictions on frames 0 and 3 are not change frames.
    assert counter.counts()["main_x"] == 2 and counter.rates()["main_x"] == 0.5
    # heads that never change have no change frames: None, not 0 or 1
    assert counter.counts()["c_x"] == 0 and counter.rates()["c_x"] is None
    # A changed on frames 1 (to 1: right) and 3 (to 0: predicted 1, wrong);
    # B on frames 3 (to 1: right) and 4 (to 1 from a previous 0: predicted 0, wrong).
    assert counter.button_counts()["A"] == 2 and counter.button_rates()["A"] == 0.5
    assert counter.button_counts()["B"] == 2 and counter.button_rates()["B"] == 0.5
    assert counter.button_rates()["X"] is None
    # buttons: hits over change events of every button (2 of 4), i.e. weighted by events
    assert counter.counts()["buttons"] == 4 and counter.rates()["buttons"] == 0.5


def test_precision_of_the_policys_own_changes_by_hand():
    counter = hand_built()
    # main_x predicted != previous on frames 0 (3), 2 (16, right), 3 (3), 4 (5): 1 of 4
    assert counter.predicted_counts()["main_x"] == 4 and counter.precisions()["main_x"] == 0.25
    assert counter.predicted_counts()["c_x"] == 0 and counter.precisions()["c_x"] is None
    # A predicted changes on frames 0 (press: wrong) and 1 (press: right); B on frame 3 (press: right)
    assert counter.button_precisions()["A"] == 0.5 and counter.button_precisions()["B"] == 1.0
    assert counter.predicted_counts()["buttons"] == 3 and counter.precisions()["buttons"] == 2 / 3


def test_buttons_are_weighted_by_change_events():
    # A changes 3 times (all predicted), B once (missed): (3 + 0) / 4, not the mean of 1.0 and 0.0
    previous = {"buttons": buttons([0, 1, 0, 0], [0, 0, 0, 0])}
    target = {"buttons": buttons([1, 0, 1, 0], [0, 0, 0, 1])}
    predicted = {"buttons": buttons([1, 0, 1, 0], [0, 0, 0, 0])}
    for d in (previous, target, predicted):
        d.update({h: np.zeros(4, np.int32) for h in controller.CLASS_HEADS})
    assert change_frame_accuracy(predicted, target, previous).rates()["buttons"] == 0.75


def test_streaming_equals_all_at_once():
    rng = np.random.default_rng(0)
    n = 200
    arrays = [frames(rng.integers(6, 10, n), (rng.random((n, 8)) < 0.3), rng.integers(0, 2, n)) for _ in range(3)]
    whole = change_frame_accuracy(*arrays)
    streamed = ChangeFrameCounter()
    for i in range(n):
        streamed.add(*({h: v[i : i + 1] for h, v in a.items()} for a in arrays))
    assert streamed.rates() == whole.rates() and streamed.counts() == whole.counts()
    assert streamed.button_rates() == whole.button_rates()
    assert streamed.precisions() == whole.precisions() and streamed.predicted_counts() == whole.predicted_counts()


def test_prior_and_repeat_on_change_frames():
    previous = frames([8, 8, 8, 16, 16], buttons([0, 0, 1, 1, 0], [0, 0, 0, 0, 0]))
    target = frames([8, 8, 16, 16, 8], buttons([0, 1, 1, 0, 0], [0, 0, 0, 1, 1]))
    stats = baselines.fit_baselines(target, previous)  # main_x mode 8; A pressed 2/5 -> P = 3/7 (not pressed)
    assert int(np.argmax(stats.class_prior["main_x"])) == 8
    prior = baselines.prior_change_frame_accuracy(stats, target, previous)
    # main_x changed on frames 2 (to 16) and 4 (to 8, the prior's mode): 1 of 2
    assert prior["main_x"] == 0.5
    # buttons, never pressed by the prior: right on the events to "released" (A at frame 3) only: 1 of 4
    assert prior["buttons"] == 0.25
    assert prior["c_y"] is None
    counts = change_frame_accuracy(target, target, previous).counts()
    repeat = baselines.repeat_change_frame_accuracy(counts)
    assert repeat["main_x"] == 0.0 and repeat["buttons"] == 0.0 and repeat["c_y"] is None


class FixedLogits:
    """A stand-in policy: returns given logits, batch after batch, in window order."""

    def __init__(self, logits):
        self.logits, self.at = logits, 0

    def predict_on_batch(self, x):
        n = len(x["numeric"])
        out = {h: v[self.at : self.at + n] for h, v in self.logits.items()}
        self.at += n
        return out


def one_hot_logits(classes, width, scale=20.0):
    out = np.zeros((len(classes), width), np.float32)
    out[np.arange(len(classes)), classes] = scale
    return out


def test_evaluate_policy_reports_change_frames_and_calibration():
    rng = np.random.default_rng(1)
    n = 400
    held = rng.random(n) < 0.8  # inputs persist most frames
    main_x = np.empty(n, np.int32)
    main_x[0] = 8
    for t in range(1, n):
        main_x[t] = main_x[t - 1] if held[t] else rng.integers(0, 17)
    arrays = features.PolicyArrays(
        numeric=np.zeros((n, features.NUMERIC_SIZE), np.float32),
        categorical=np.zeros((n, features.CATEGORICAL_SIZE), np.int32),
        targets=frames(main_x, (rng.random((n, 8)) < 0.2)),
    )
    windows = make_windows([arrays], window_size=3, stride=1)
    targets, previous = windows.predicted_targets(), windows.previous_targets()
    stats = baselines.fit_baselines(targets, previous)
    # a policy that always predicts the right value, confidently
    logits = {"buttons": np.where(targets["buttons"] > 0.5, 20.0, -20.0).astype(np.float32)}
    for head in controller.CLASS_HEADS:
        logits[head] = one_hot_logits(targets[head], controller.HEAD_CLASSES[head])
    summary = evaluate_policy(FixedLogits(logits), windows, stats, batch_size=64)
    changed = int((targets["main_x"] != previous["main_x"]).sum())
    assert summary["change_frames"]["main_x"] == changed > 0
    assert summary["change_frames"]["c_x"] == 0 and summary["change_frame_accuracy"]["c_x"] is None
    assert summary["change_frame_accuracy"]["main_x"] == 1.0 and summary["change_frame_accuracy"]["buttons"] == 1.0
    assert summary["baseline_repeat_change_frame_accuracy"]["main_x"] == 0.0
    assert summary["baseline_prior_change_frame_accuracy"]["main_x"] == pytest.approx(
        np.mean(targets["main_x"][targets["main_x"] != previous["main_x"]] == np.argmax(stats.class_prior["main_x"]))
    )
    assert sum(summary["change_frames_per_button"].values()) == summary["change_frames"]["buttons"]
    assert set(summary["change_frame_accuracy_per_button"]) == set(controller.BUTTONS)
    # it changes exactly where the player does, and is right there
    assert summary["predicted_changes"]["main_x"] == changed and summary["predicted_change_precision"]["main_x"] == 1.0
    assert summary["predicted_change_precision"]["c_x"] is None
    # right and all but certain: calibrated to within e^-20
    assert all(v == pytest.approx(0.0, abs=1e-6) for v in summary["calibration_ece"].values())
    assert sum(summary["calibration_bins"]["main_x"]["count"]) == len(windows)
    assert summary["calibration_bins"]["buttons"]["count"][-1] == 8 * len(windows)
