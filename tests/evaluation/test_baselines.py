"""Baselines: correct maths on hand-made frames, and the streamed statistics
(`BaselineAccumulator`, chunk by chunk) equal to the one-shot fit on replay frames."""

import numpy as np
import pytest

from keras_lstm.data import controller, features
from keras_lstm.data.trajectories import load_trajectories
from keras_lstm.data.windows import make_windows
from keras_lstm.evaluation import baselines

from conftest import GAMES, PREPARED_NAMES


def targets(main_x, buttons_a):
    n = len(main_x)
    out = {h: np.full(n, 8, np.int32) for h in controller.CLASS_HEADS}
    out["shoulder"] = np.zeros(n, np.int32)
    out["main_x"] = np.asarray(main_x, np.int32)
    b = np.zeros((n, 8), np.float32)
    b[:, 0] = buttons_a
    out["buttons"] = b
    return out


def test_repeat_baseline_accuracy_and_loss():
    y = targets([8, 8, 16, 16], [0, 1, 1, 0])
    prev = targets([8, 8, 8, 16], [0, 0, 1, 1])
    stats = baselines.fit_baselines(y, prev)
    assert stats.change_rate["main_x"] == 0.25
    rep = baselines.repeat_baseline(stats, y, prev)
    assert rep["per_head_accuracy"]["main_x"] == 0.75
    assert rep["per_head_accuracy"]["buttons"] == 1 - 2 / 32  # 2 of 32 button values changed
    prior = baselines.prior_baseline(stats, y)
    assert prior["per_head_accuracy"]["main_x"] == 0.5
    # a head that never changes and is always the same class costs ~nothing
    assert rep["per_head_loss"]["c_y"] < 1e-3
    # The total is the sum of the 6 per-head losses (positive float64s): any
    # summation order agrees to ~6 x 1.1e-16 relative. The smallest heads here
    # (~5e-5 nats of 1.85) are over 1e7 times rel=1e-12 of the total, so a
    # head left out fails.
    assert rep["loss"] == pytest.approx(sum(rep["per_head_loss"].values()), rel=1e-12, abs=0)
    assert np.isfinite(rep["loss"]) and np.isfinite(prior["loss"])


def test_stats_round_trip_json():
    y = targets([8, 0], [1, 0])
    stats = baselines.fit_baselines(y, y)
    assert baselines.BaselineStats.from_json(stats.to_json()) == stats


def test_baseline_accumulator_in_chunks_equals_fit_baselines(replays_dir):
    report = load_trajectories([GAMES / name for name in PREPARED_NAMES])
    windows = make_windows([features.align(t, 0) for t in report.trajectories], 5, 3)
    targets, previous = windows.predicted_targets(), windows.previous_targets()
    acc = baselines.BaselineAccumulator()
    for chunk in np.array_split(np.arange(len(windows)), 7):
        acc.add({h: v[chunk] for h, v in targets.items()}, {h: v[chunk] for h, v in previous.items()})
    assert acc.frames == len(windows) > 0
    assert acc.stats() == baselines.fit_baselines(targets, previous)


def test_no_frames_is_an_error():
    y = targets([], [])
    with pytest.raises(ValueError, match="no training frames"):
        baselines.fit_baselines(y, y)
