"""Evaluating as deployed: whole trajectories with the state carried equal the
windowed model where they must, and do not depend on chunking or batching."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_lstm.data import controller, features
from keras_lstm.data.features import PolicyArrays
from keras_lstm.data.windows import make_windows
from keras_lstm.evaluation.deploy_eval import deployed_logits, evaluate_deployed
from keras_lstm.evaluation.evaluate import evaluate_policy, predict_logits
from keras_lstm.model.policy import build_policy

W = 12
TOL = 1e-5


def _arrays(length: int, seed: int) -> PolicyArrays:
    rng = np.random.default_rng(seed)
    categorical = np.stack(
        [rng.integers(0, n, length) for n in features.CATEGORICAL_SIZES], axis=1
    ).astype(np.int32)
    targets = {"buttons": (rng.random((length, len(controller.BUTTONS))) < 0.2).astype(np.float32)}
    for head in controller.CLASS_HEADS:
        targets[head] = rng.integers(0, controller.HEAD_CLASSES[head], length).astype(np.int32)
    return PolicyArrays(rng.normal(size=(length, features.NUMERIC_SIZE)).astype(np.float32), categorical, targets)


def _policy(cell_type="lstm"):
    keras.utils.set_random_seed(0)
    return build_policy(cell_type, embed_size=8, hidden_size=8, num_layers=2, dropout=0.1)


@pytest.mark.parametrize("cell_type", ["lstm", "gru"])
def test_first_window_deployed_equals_windowed(cell_type):
    # Both start from the zero state at frame 0: the window ending at frame
    # W-1 must give the same logits deployed and windowed.
    policy = _policy(cell_type)
    a = _arrays(50, seed=1)
    windows = make_windows([a], W, stride=1)
    windowed = predict_logits(policy, windows)
    deployed = deployed_logits(policy, [a], chunk_frames=16)[0]
    for head in controller.HEADS:
        np.testing.assert_allclose(deployed[head][W - 1], windowed[head][0], atol=TOL)


def test_a_model_with_long_memory_shows_a_gap():
    # Forget gates held open: what happened before the window still matters
    # when deployed, so the two evaluations must differ (the evaluation can
    # see a gap, it does not equal the windowed one by construction).
    policy = _policy()
    for layer in policy.backbone.recurrent_layers:
        bias = layer.cell.bias.numpy()
        units = bias.shape[0] // 4
        bias[units : 2 * units] = 10.0  # Keras gate order: i, f, c, o
        layer.cell.bias.assign(bias)
    a = _arrays(60, seed=8)
    windows = make_windows([a], W, stride=1)
    windowed = predict_logits(policy, windows)
    deployed = deployed_logits(policy, [a])[0]
    assert np.abs(deployed["main_x"][W - 1 :] - windowed["main_x"]).max() > 1e-3
    np.testing.assert_allclose(deployed["main_x"][W - 1], windowed["main_x"][0], atol=TOL)


def test_chunk_size_batching_and_the_recurrence_do_not_change_outputs():
    policy = _policy()
    a, b = _arrays(37, seed=2), _arrays(90, seed=3)
    alone = deployed_logits(policy, [a], chunk_frames=64)[0]
    together = deployed_logits(policy, [b, a], chunk_frames=7)
    one_at_a_time = deployed_logits(policy, [b, a], chunk_frames=7, max_batch=1, impl="fused")
    assert together[0]["buttons"].shape == (90, len(controller.BUTTONS))
    assert together[1]["main_x"].shape == (37, controller.STICK_CLASSES)
    for head in controller.HEADS:
        np.testing.assert_allclose(together[1][head], alone[head], atol=TOL)
        np.testing.assert_allclose(one_at_a_time[0][head], together[0][head], atol=TOL)
        np.testing.assert_allclose(one_at_a_time[1][head], together[1][head], atol=TOL)


def test_deployed_equals_stepping_frame_by_frame():
    inference = pytest.importorskip("keras_lstm.serving.inference")
    if not hasattr(inference, "PolicyStepper"):
        pytest.skip("keras_lstm.serving.inference has no PolicyStepper")
    policy = _policy()
    a = _arrays(40, seed=4)
    stepper = inference.PolicyStepper(policy)
    stepped = [stepper.logits(a.numeric[t : t + 1], a.categorical[t : t + 1]) for t in range(len(a))]
    deployed = deployed_logits(policy, [a], chunk_frames=16)[0]
    for head in controller.HEADS:
        np.testing.assert_allclose(np.concatenate([s[head] for s in stepped]), deployed[head], atol=1e-4)


def test_evaluate_deployed_compares_the_same_frames():
    from keras_lstm.evaluation import baselines

    policy = _policy()
    arrays = [_arrays(80, seed=5), _arrays(45, seed=6)]
    windows = make_windows(arrays, W, stride=5)
    stats = baselines.fit_baselines(windows.predicted_targets(), windows.previous_targets())
    result = evaluate_deployed(policy, arrays, W, 5, stats)

    # The windowed side is exactly what `keras-lstm train` reports.
    assert result["windowed"]["loss"] == pytest.approx(evaluate_policy(policy, windows, stats)["val_loss"], rel=1e-6)
    assert result["frames_same"] == len(windows)
    assert result["frames_all"] == 125
    assert result["gap_ratio"] == pytest.approx(result["deployed_same_frames"]["loss"] / result["windowed"]["loss"])
    assert set(result["deployed_all_frames"]["per_head_accuracy"]) == set(controller.HEADS)
    assert sum(b["frames"] for b in result["deployed_loss_by_position"]) == 125
    assert "baseline_repeat_same_frames" in result


def test_no_window_long_enough_is_a_clear_error():
    with pytest.raises(ValueError, match="no validation window"):
        evaluate_deployed(_policy(), [_arrays(5, seed=7)], W, 1)
