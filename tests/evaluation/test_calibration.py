"""Calibration: the expected calibration error on hand-computed cases, the
per-head confidences, and the reliability plot's file."""

import numpy as np
import pytest

from keras_lstm.data import controller
from keras_lstm.evaluation import calibration
from keras_lstm.evaluation.reliability_plot import check_plot_destination, write_reliability_plot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def ece(confidence, correct, bins=calibration.BINS):
    return calibration.expected_calibration_error(calibration.reliability_bins(confidence, correct, bins))


def test_perfectly_calibrated_predictions_have_zero_error():
    # 10 predictions at 0.8, 8 right; 10 at 0.6, 6 right: each bin right as often as confident
    confidence = [0.8] * 10 + [0.6] * 10
    correct = [1] * 8 + [0] * 2 + [1] * 6 + [0] * 4
    assert ece(confidence, correct) == pytest.approx(0.0, abs=1e-12)


def test_always_confident_and_wrong():
    assert ece([0.99] * 7, [0] * 7) == pytest.approx(0.99)
    assert ece([1.0] * 3, [0] * 3) == pytest.approx(1.0)  # a confidence of 1 lands in the last bin


def test_error_is_the_count_weighted_gap():
    # bin of 0.9 (2 predictions, 1 right): gap 0.4; bin of 0.6 (2, both right): gap 0.4;
    # bin of 0.5 (4, 2 right): gap 0  ->  (2 * 0.4 + 2 * 0.4 + 4 * 0) / 8 = 0.2
    confidence = [0.9, 0.9, 0.6, 0.6, 0.5, 0.5, 0.5, 0.5]
    correct = [1, 0, 1, 1, 1, 0, 1, 0]
    assert ece(confidence, correct) == pytest.approx(0.2)


def test_bins_are_equal_width_with_means_and_counts():
    bins = calibration.reliability_bins([0.05, 0.07, 0.95, 1.0], [1, 0, 1, 1], bins=10)
    assert bins["count"] == [2, 0, 0, 0, 0, 0, 0, 0, 0, 2]
    assert bins["confidence"][0] == pytest.approx(0.06) and bins["accuracy"][0] == 0.5
    assert bins["confidence"][1] is None and bins["accuracy"][1] is None  # empty
    assert bins["confidence"][9] == pytest.approx(0.975) and bins["accuracy"][9] == 1.0
    assert calibration.expected_calibration_error(calibration.reliability_bins([], [])) is None


def test_head_confidences():
    probs = {"buttons": np.array([[0.2, 0.7, 0.5, 0.9, 0.1, 0.1, 0.1, 0.1]])}
    targets = {"buttons": np.array([[0, 0, 0, 1, 0, 0, 0, 1]], np.float32)}
    for head in controller.CLASS_HEADS:
        k = controller.HEAD_CLASSES[head]
        p = np.full((1, k), 0.3 / (k - 1))
        p[0, 2] = 0.7
        probs[head], targets[head] = p, np.array([2 if head == "main_x" else 0])
    got = calibration.head_confidences(probs, targets)
    # buttons: one binary prediction each, confidence max(p, 1 - p), pressed iff p > 0.5
    np.testing.assert_allclose(got["buttons"][0], [0.8, 0.7, 0.5, 0.9, 0.9, 0.9, 0.9, 0.9])
    assert got["buttons"][1].tolist() == [True, False, True, True, True, True, True, False]
    assert got["main_x"][0] == pytest.approx([0.7]) and got["main_x"][1].tolist() == [True]
    assert got["shoulder"][1].tolist() == [False]
    summary = calibration.calibration(probs, targets)
    assert set(summary["calibration_ece"]) == set(summary["calibration_bins"]) == set(controller.HEADS)
    assert summary["calibration_ece"]["main_x"] == pytest.approx(0.3)  # confident 0.7, right
    assert summary["calibration_ece"]["shoulder"] == pytest.approx(0.7)  # confident 0.7, wrong
    assert len(summary["calibration_bins"]["buttons"]["count"]) == calibration.BINS == 15
    assert sum(summary["calibration_bins"]["buttons"]["count"]) == 8


def fake_summary():
    rng = np.random.default_rng(0)
    probs = {"buttons": rng.random((200, 8))}
    targets = {"buttons": (rng.random((200, 8)) < probs["buttons"]).astype(np.float32)}
    for head in controller.CLASS_HEADS:
        k = controller.HEAD_CLASSES[head]
        probs[head] = rng.dirichlet(np.ones(k), size=200)
        targets[head] = rng.integers(0, k, 200)
    return {"frames": 200, **calibration.calibration(probs, targets)}


def test_reliability_plot_writes_a_png_atomically(tmp_path):
    path = tmp_path / "reliability.png"
    assert write_reliability_plot(fake_summary(), path) == path
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in tmp_path.iterdir()] == ["reliability.png"]  # no temporary left


def test_reliability_plot_refuses_a_bad_destination(tmp_path):
    missing = tmp_path / "nope" / "plot.png"
    with pytest.raises(FileNotFoundError, match=f"{missing}: .*folder {missing.parent} does not exist"):
        check_plot_destination(missing)
    with pytest.raises(ValueError, match="ending in .png"):
        check_plot_destination(tmp_path / "plot.pdf")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        check_plot_destination(tmp_path / "dir.png")
    with pytest.raises(FileNotFoundError):
        write_reliability_plot(fake_summary(), missing)
