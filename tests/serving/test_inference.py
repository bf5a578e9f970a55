"""Stateful inference: stepping frame by frame equals the windowed model."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_lstm.data import controller, features
from keras_lstm.model.backbone import build_backbone
from keras_lstm.model.policy import build_policy
from keras_lstm.serving import inference

E, U, L, T, B = 8, 16, 2, 12, 3


@pytest.fixture(params=["lstm", "gru"])
def cell_type(request):
    return request.param


def _frames(seed=0, batch=B, steps=T, width=E):
    return np.random.default_rng(seed).normal(size=(batch, steps, width)).astype(np.float32)


def test_initial_hidden_layout():
    lstm = inference.initial_hidden(2, hidden_size=U, num_layers=3, cell_type="lstm")
    gru = inference.initial_hidden(2, hidden_size=U, num_layers=3, cell_type="gru")
    assert len(lstm) == 3 and all(len(layer) == 2 for layer in lstm)
    assert len(gru) == 3 and all(len(layer) == 1 for layer in gru)
    assert all(s.shape == (2, U) and s.dtype == np.float32 and not s.any() for layer in lstm for s in layer)
    with pytest.raises(ValueError, match="cell_type"):
        inference.initial_hidden(1, cell_type="rnn")
    with pytest.raises(ValueError, match="batch"):
        inference.initial_hidden(0)


def test_step_equals_windowed_backbone(cell_type):
    keras.utils.set_random_seed(0)
    backbone = build_backbone(cell_type, E, U, L)
    x = _frames()
    hidden = inference.initial_hidden(B, U, L, cell_type)
    for t in range(T):
        out, hidden = inference.step(backbone, x[:, t], hidden)
        # Every prefix, not only the full window: the output at t is the
        # windowed backbone on frames 0..t.
        if t in (0, T // 2, T - 1):
            window = backbone(x[:, : t + 1], training=False).numpy()
            assert np.abs(out - window).max() < 1e-5
    assert out.shape == (B, U) and out.dtype == np.float32
    assert not np.allclose(out, backbone(x[:, -3:], training=False).numpy(), atol=1e-3)  # the state matters


def test_step_rejects_wrong_frames(cell_type):
    backbone = build_backbone(cell_type, E, U, L)
    hidden = inference.initial_hidden(1, U, L, cell_type)
    with pytest.raises(ValueError, match=r"shape \[batch, 8\]"):
        inference.step(backbone, np.zeros((1, E + 1), np.float32), hidden)
    with pytest.raises(ValueError, match=r"shape \[batch, 8\]"):
        inference.step(backbone, np.zeros((1, 1, E), np.float32), hidden)
    with pytest.raises(ValueError, match="dtype"):
        inference.step(backbone, np.zeros((1, E), np.int32), hidden)
    with pytest.raises(ValueError, match="initial_hidden"):
        inference.step(backbone, np.zeros((2, E), np.float32), hidden)  # state for batch 1
    with pytest.raises(ValueError, match="RecurrentBackbone"):
        inference.step(object(), np.zeros((1, E), np.float32), hidden)


def test_step_rejects_non_finite_frames_and_states(cell_type):
    keras.utils.set_random_seed(0)
    backbone = build_backbone(cell_type, E, U, L)
    x = _frames(batch=2)
    hidden = inference.initial_hidden(2, U, L, cell_type)
    for t in range(3):
        _, hidden = inference.step(backbone, x[:, t], hidden)
    kept = [s.copy() for layer in hidden for s in layer]
    for value in (np.nan, np.inf, -np.inf):
        bad = x[:, 3].copy()
        bad[1, 4] = value
        with pytest.raises(ValueError, match=r"frame has 1 non-finite value\(s\) \(NaN or inf; first: .* at \[1, 4\]\)"):
            inference.step(backbone, bad, hidden)
        with pytest.raises(ValueError, match="frame has 1 non-finite"):
            inference.NumpyBackbone(backbone).step(bad, hidden)
    for layer, part in ((0, 0), (1, len(hidden[1]) - 1)):
        poisoned = [list(states) for states in hidden]
        poisoned[layer][part] = hidden[layer][part].copy()
        poisoned[layer][part][0, 2] = np.nan
        name = f"hidden layer {layer} {'hc'[part]}"
        with pytest.raises(ValueError, match=f"{name} has 1 non-finite"):
            inference.step(backbone, x[:, 3], poisoned)
    for got, want in zip((s for layer in hidden for s in layer), kept):
        np.testing.assert_array_equal(got, want)
    out, _ = inference.step(backbone, x[:, 3], hidden)
    np.testing.assert_allclose(out, backbone(x[:, :4], training=False).numpy(), atol=1e-5)


def test_policy_stepper_rejects_non_finite_frames_and_keeps_its_state(cell_type):
    keras.utils.set_random_seed(1)
    policy = build_policy(cell_type, embed_size=E, hidden_size=U, num_layers=L)
    rng = np.random.default_rng(4)
    numeric = rng.normal(size=(4, 1, features.NUMERIC_SIZE)).astype(np.float32)
    categorical = np.zeros((4, 1, features.CATEGORICAL_SIZE), np.int32)
    reference, stepper = inference.PolicyStepper(policy), inference.PolicyStepper(policy)
    for t in range(3):
        expected = reference.act(numeric[t], categorical[t])
        stepper.act(numeric[t], categorical[t])
    before = stepper.hidden
    for value in (np.nan, np.inf):
        bad = numeric[3].copy()
        bad[0, 10] = value
        with pytest.raises(ValueError, match=r"numeric has 1 non-finite value\(s\).*state is unchanged"):
            stepper.act(bad, categorical[3])
        with pytest.raises(ValueError, match="numeric has 1 non-finite"):
            stepper.logits(bad, categorical[3])
        assert stepper.hidden is before
    expected = reference.act(numeric[3], categorical[3])
    got = stepper.act(numeric[3], categorical[3])  # as if the bad frames never came
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], atol=1e-6, err_msg=key)
    assert all(np.isfinite(s).all() for layer in stepper.hidden for s in layer)


def test_unchecked_finite_is_only_for_the_benchmark():
    assert inference._CHECK_FINITE
    with inference.unchecked_finite():
        assert not inference._CHECK_FINITE
        inference.check_frame(np.full((1, E), np.nan, np.float32), E)  # no check: what the benchmark compares with
    assert inference._CHECK_FINITE


def test_step_snapshot_and_refresh():
    backbone = build_backbone("lstm", E, U, L)
    x = _frames(batch=1)[:, 0]
    before, _ = inference.step(backbone, x, inference.initial_hidden(1, U, L))
    backbone.set_weights([w * 0.5 for w in backbone.get_weights()])
    stale, _ = inference.step(backbone, x, inference.initial_hidden(1, U, L))
    np.testing.assert_array_equal(stale, before)
    inference.refresh(backbone)
    fresh, _ = inference.step(backbone, x, inference.initial_hidden(1, U, L))
    expected = backbone(x[:, None], training=False).numpy()
    assert np.abs(fresh - expected).max() < 1e-5 and not np.allclose(fresh, before)


def test_stateful_twin_matches_and_resets(cell_type):
    backbone = build_backbone(cell_type, E, U, L)
    x = _frames(batch=1)
    twin = inference.stateful_twin(backbone)
    assert len(twin.get_weights()) == len(backbone.get_weights())
    window = backbone(x, training=False).numpy()

    def run():
        for t in range(T):
            out = twin(x[:, t : t + 1], training=False)
        return np.asarray(out)

    first = run()
    assert np.abs(first - window).max() < 1e-5
    continued = run()  # state carried on: a different answer
    assert np.abs(continued - window).max() > 1e-4
    inference.reset_twin(twin)
    assert np.abs(run() - window).max() < 1e-5


def test_policy_stepper_equals_windowed_policy(cell_type):
    keras.utils.set_random_seed(1)
    policy = build_policy(cell_type, embed_size=E, hidden_size=U, num_layers=L)
    rng = np.random.default_rng(2)
    numeric = rng.normal(size=(2, T, features.NUMERIC_SIZE)).astype(np.float32)
    categorical = np.stack(
        [rng.integers(0, size, size=(2, T)) for size in features.CATEGORICAL_SIZES], axis=-1
    ).astype(np.int32)
    expected = policy({"numeric": numeric, "categorical": categorical}, training=False)
    stepper = inference.PolicyStepper(policy, batch=2)
    for _ in range(2):  # the second pass checks reset()
        for t in range(T):
            logits = stepper.logits(numeric[:, t], categorical[:, t])
        for head in controller.HEADS:
            assert np.abs(logits[head] - expected[head].numpy()).max() < 1e-5, head
        stepper.reset()
    decoded = inference.decode_controller(logits)
    np.testing.assert_array_equal(decoded["main_x"], controller.class_to_stick(np.argmax(logits["main_x"], -1)))
    np.testing.assert_array_equal(decoded["shoulder"], controller.class_to_shoulder(np.argmax(logits["shoulder"], -1)))
    np.testing.assert_array_equal(decoded["buttons"], (logits["buttons"] > 0).astype(np.float32))
    np.testing.assert_allclose(decoded["c_y_prob"].sum(-1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match=r"numeric of shape \[batch, 43\]"):
        stepper.act(numeric[:, 0, :10], categorical[:, 0])
    with pytest.raises(ValueError, match="holds 2 game"):
        stepper.act(numeric[:1, 0], categorical[:1, 0])


def test_blas_threads_restores():
    from threadpoolctl import threadpool_info

    def blas_threads_now():
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    before = blas_threads_now()
    if not before:
        pytest.skip("no BLAS that threadpoolctl knows")
    with inference.blas_threads(1):
        assert blas_threads_now() == [1] * len(before)
    assert blas_threads_now() == before


def test_bench_inference_cli_runs_every_path():
    from typer.testing import CliRunner

    from keras_lstm.cli.main import app
    from conftest import GAMES

    args = ["bench", "inference", "--hidden-size", "8", "--embed-size", "8", "--iterations", "5", "--window-iterations", "2",
            "--window-size", "6", "--replay", str(GAMES / "py-slippi_v3.14.0.slp")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for name in ("step (numpy)", "stateful twin", "SavedModel serving_default", "SavedModel step", "SavedModel window",
                 "whole policy per frame", "window re-run", "window re-run / step"):
        assert name in result.output, name
    # The NaN/inf checks' cost, checked vs unchecked side by side, for each checked path.
    assert "NaN/inf input checks" in result.output
    table = result.output[result.output.index("NaN/inf input checks"):]
    for name in ("step (numpy)", "PolicyStepper.act", "SavedModel serving_default", "SavedModel step"):
        assert f"| {name}" in table, name
    bad = CliRunner().invoke(app, ["bench", "inference", "--backbone", "rnn"])
    assert bad.exit_code == 2 and "backbone must be one of" in bad.output


def test_a_batched_stepper_runs_games_that_start_at_different_frames(cell_type):
    """Three games in one stepper, game 1 starting anew mid-way: each game's
    logits equal a stepper of its own that played only that game."""
    keras.utils.set_random_seed(4)
    policy = build_policy(cell_type, embed_size=E, hidden_size=U, num_layers=L)
    rng = np.random.default_rng(5)
    numeric = rng.normal(size=(3, T, features.NUMERIC_SIZE)).astype(np.float32)
    categorical = np.stack([rng.integers(0, size, size=(3, T)) for size in features.CATEGORICAL_SIZES], axis=-1).astype(np.int32)
    restart = 5  # game 1 ends after frame 4; frames 5.. are a new game
    many = inference.PolicyStepper(policy, batch=3)
    alone = [inference.PolicyStepper(policy) for _ in range(3)]
    for t in range(T):
        if t == restart:
            many.reset(games=[1])
            alone[1].reset()
        got = many.logits(numeric[:, t], categorical[:, t])
        for g in range(3):
            want = alone[g].logits(numeric[g : g + 1, t], categorical[g : g + 1, t])
            for head in controller.HEADS:
                np.testing.assert_allclose(got[head][g : g + 1], want[head], rtol=1e-5, atol=1e-5, err_msg=f"game {g}, frame {t}, {head}")
    with pytest.raises(ValueError, match="indices of the 3 game"):
        many.reset(games=[3])
