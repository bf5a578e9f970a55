"""Baselines: correct maths on hand-made frames."""

import numpy as np
import pytest

from keras_lstm.data import controller
from keras_lstm.evaluation import baselines


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
