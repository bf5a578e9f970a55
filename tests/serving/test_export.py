"""SavedModel export: TF Serving layout, signatures, and a fresh-process load
that steps a real replay to the same outputs as the in-process model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import GAMES
from keras_lstm.data import controller, features
from keras_lstm.data.replays import read_game
from keras_lstm.model.policy import build_policy
from keras_lstm.serving import export, inference

REPLAY = GAMES / "py-slippi_v3.14.0.slp"
FRAMES = 40


def make_run(folder, cell_type="lstm", delay=0):
    """A tiny run folder as `keras-lstm train` leaves it (model.keras + run.json)."""
    keras.utils.set_random_seed(3)
    policy = build_policy(cell_type, embed_size=8, hidden_size=16, num_layers=2)
    folder.mkdir(parents=True, exist_ok=True)
    policy.save(folder / "model.keras")
    run_info = {"config": {"delay": delay, "window_size": 10, "backbone": cell_type}, "feature_version": features.FEATURE_VERSION}
    (folder / "run.json").write_text(json.dumps(run_info))
    return policy


def replay_inputs(n=FRAMES):
    trajectories, _ = features.game_to_trajectories(read_game(REPLAY), REPLAY)
    arrays = features.align(trajectories[0], 0)
    return arrays.numeric[:n], arrays.categorical[:n]


def test_layout_versions_and_no_leftovers(tmp_path):
    policy = make_run(tmp_path / "run")
    base = tmp_path / "savedmodels"
    first = export.export_run(tmp_path / "run", base_dir=base)
    assert first == base / "run" / "1"
    assert (first / "saved_model.pb").is_file() and (first / "variables").is_dir()
    meta = export.read_metadata(first)
    assert meta["hidden_size"] == 16 and meta["num_layers"] == 2 and meta["delay"] == 0
    second = export.export_policy(policy, base, "run")
    assert second.name == "2"
    assert export.export_policy(policy, base, "run", version=7).name == "7"
    assert export.next_version(base / "run") == 8
    with pytest.raises(ValueError, match="already exists"):
        export.export_policy(policy, base, "run", version=2)
    with pytest.raises(ValueError, match="--name"):
        export.export_policy(policy, base, "../escape")
    # Only version folders and the model folder's lock file: no temporary folder left behind.
    assert sorted(p.name for p in (base / "run").iterdir()) == [".lock", "1", "2", "7"]


def test_failed_export_leaves_nothing(tmp_path, monkeypatch):
    policy = make_run(tmp_path / "run")

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export.tf.saved_model, "save", crash)
    with pytest.raises(RuntimeError):
        export.export_policy(policy, tmp_path / "sm", "x")
    assert list((tmp_path / "sm" / "x").iterdir()) == []


FRESH_PROCESS = textwrap.dedent(
    """
    import sys
    import numpy as np
    import tensorflow as tf

    def serve_one(path, inputs, outputs):
        data = np.load(inputs)
        numeric, categorical = data["numeric"], data["categorical"]
        model = tf.saved_model.load(path)
        serve, reset, step, window = (model.signatures[k] for k in ("serving_default", "reset", "step", "window"))
        results = {}
        for game in range(2):  # the second game checks that reset() clears the held state
            reset()
            for t in range(len(numeric)):
                out = serve(numeric=tf.constant(numeric[t : t + 1]), categorical=tf.constant(categorical[t : t + 1]))
            results.update({f"held{game}_{k}": v.numpy() for k, v in out.items()})
        state = {k: tf.zeros([1, data["layers"], data["hidden"]]) for k in data["state_keys"]}
        for t in range(len(numeric)):
            out = step(numeric=tf.constant(numeric[t : t + 1]), categorical=tf.constant(categorical[t : t + 1]), **state)
            state = {k: out[k] for k in state}
        results.update({f"step_{k}": v.numpy() for k, v in out.items()})
        out = window(numeric=tf.constant(numeric[None]), categorical=tf.constant(categorical[None]))
        results.update({f"window_{k}": v.numpy() for k, v in out.items()})
        assert not any(name.startswith("keras_lstm") for name in sys.modules), "project code was imported"
        np.savez(outputs, **results)

    args = sys.argv[1:]
    for i in range(0, len(args), 3):  # one process for every export: TensorFlow starts once
        serve_one(*args[i : i + 3])
    """
)


VARIANTS = [("lstm", False), ("gru", False), ("lstm", True)]  # (cell_type, xla)


@pytest.mark.slow  # a second TensorFlow process for all three exports: ~10 s, more on a busy machine
def test_fresh_process_load_steps_replay_like_in_process(tmp_path):
    numeric, categorical = replay_inputs()
    policies, args = [], []
    for n, (cell_type, xla) in enumerate(VARIANTS):
        policies.append(make_run(tmp_path / f"run{n}", cell_type))
        path = export.export_run(tmp_path / f"run{n}", base_dir=tmp_path / "savedmodels", name=f"bot{n}", jit_compile=xla)
        assert export.read_metadata(path)["xla"] == xla
        state_keys = ["h", "c"] if cell_type == "lstm" else ["h"]
        np.savez(tmp_path / f"in{n}.npz", numeric=numeric, categorical=categorical, layers=2, hidden=16, state_keys=state_keys)
        args += [str(path), str(tmp_path / f"in{n}.npz"), str(tmp_path / f"out{n}.npz")]
    script = tmp_path / "serve.py"
    script.write_text(FRESH_PROCESS)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, str(script), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for n, ((cell_type, xla), policy) in enumerate(zip(VARIANTS, policies)):
        _assert_serves_like(policy, cell_type, dict(np.load(tmp_path / f"out{n}.npz")), numeric, categorical, variant=(cell_type, xla))


def _assert_serves_like(policy, cell_type, got, numeric, categorical, variant):
    stepper = inference.PolicyStepper(policy)
    for t in range(len(numeric)):
        expected = stepper.act(numeric[t : t + 1], categorical[t : t + 1])
    window = inference.decode_controller(
        {k: v.numpy() for k, v in policy({"numeric": numeric[None], "categorical": categorical[None]}, training=False).items()}
    )
    keys = ["buttons_prob", "buttons", *[f"{h}_prob" for h in controller.CLASS_HEADS], *controller.CLASS_HEADS]
    for key in keys:
        for prefix in ("held0", "held1", "step", "window"):
            reference = window[key] if prefix == "window" else expected[key]
            assert got[f"{prefix}_{key}"].shape == np.shape(reference), (variant, prefix, key)
            np.testing.assert_allclose(got[f"{prefix}_{key}"], reference, atol=1e-5, err_msg=f"{variant}: {prefix}_{key}")
    # The explicit state it returns is the stepper's state.
    for i, layer in enumerate(stepper.hidden):
        np.testing.assert_allclose(got["step_h"][:, i], layer[0], atol=1e-5, err_msg=str(variant))
        if cell_type == "lstm":
            np.testing.assert_allclose(got["step_c"][:, i], layer[1], atol=1e-5, err_msg=str(variant))
    assert ("step_c" in got) == (cell_type == "lstm"), variant


def test_cli_export(tmp_path):
    from keras_lstm.cli.main import app

    make_run(tmp_path / "run")
    runner = CliRunner()
    result = runner.invoke(app, ["export", "--model", str(tmp_path / "run"), "--name", "bot", "--base-dir", str(tmp_path / "sm")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "sm" / "bot" / "1" / "saved_model.pb").is_file()
    assert "serving_default" in result.output
    result = runner.invoke(app, ["export", "--model", str(tmp_path / "run"), "--name", "bot", "--base-dir", str(tmp_path / "sm"), "--version", "1"])
    assert result.exit_code == 2 and "already exists" in result.output
    result = runner.invoke(app, ["export", "--model", str(tmp_path / "nothing"), "--base-dir", str(tmp_path / "sm")])
    assert result.exit_code == 2 and "no trained model" in result.output
    assert "Traceback" not in result.output
    (tmp_path / "file").write_text("")
    result = runner.invoke(app, ["export", "--model", str(tmp_path / "run"), "--base-dir", str(tmp_path / "file")])
    assert result.exit_code == 2 and f"{tmp_path / 'file'}: is a file, not a folder (--base-dir" in result.output


def test_export_holds_weights_once_without_optimizer_slots(tmp_path):
    policy = build_policy("lstm", embed_size=8, hidden_size=16, num_layers=2)
    policy.compile(optimizer=keras.optimizers.Adam())
    policy.optimizer.build(policy.trainable_variables)  # Adam's slots: two more copies of every weight
    path = export.export_policy(policy, tmp_path, "bot")
    weight_bytes = 4 * policy.count_params()
    on_disk = sum(f.stat().st_size for f in (path / "variables").iterdir())
    assert weight_bytes <= on_disk < 1.5 * weight_bytes
