"""SavedModel export and loading under bad input: NaN/inf frames and states,
mismatched batches, two exports at once, killed exports, damaged files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from typer.testing import CliRunner

from conftest import GAMES, REPO
from keras_lstm.data import features
from keras_lstm.files.lock import FolderBusyError, FolderLock
from keras_lstm.model.policy import build_policy
from keras_lstm.serving import export, play

REPLAY = GAMES / "py-slippi_v3.14.0.slp"
F, C, L, U = features.NUMERIC_SIZE, features.CATEGORICAL_SIZE, 2, 16


def tiny_policy(cell_type="lstm"):
    keras.utils.set_random_seed(5)
    return build_policy(cell_type, embed_size=8, hidden_size=U, num_layers=L)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One exported version folder per cell type, plain and XLA-compiled
    (`<cell>-xla`: the checks must hold there too, XLA drops assertions),
    shared by the tests that only read it."""
    base = tmp_path_factory.mktemp("savedmodels")
    exports = {cell_type: export.export_policy(tiny_policy(cell_type), base, cell_type) for cell_type in ("lstm", "gru")}
    xla_base = tmp_path_factory.mktemp("savedmodels-xla")  # apart: some tests list the base folder's models
    exports["lstm-xla"] = export.export_policy(tiny_policy("lstm"), xla_base, "lstm", jit_compile=True)
    return exports


EXPORTS = ["lstm", "gru", "lstm-xla"]


def frames(n, batch=1, seed=0):
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(n, batch, F)).astype(np.float32)
    categorical = np.stack([rng.integers(0, size, size=(n, batch)) for size in features.CATEGORICAL_SIZES], axis=-1)
    return numeric, categorical.astype(np.int32)


def held_values(loaded):
    return [variable.numpy().copy() for layer in loaded.held_state for variable in layer]


# ---------------------------------------------------------------------------
# 6. NaN and inf fail the call and leave the held state as it was


@pytest.mark.parametrize("cell_type", EXPORTS)
def test_signatures_reject_non_finite_input_and_keep_the_held_state(exported, cell_type):
    loaded = tf.saved_model.load(str(exported[cell_type]))
    serve, reset, step, window = (loaded.signatures[k] for k in ("serving_default", "reset", "step", "window"))
    numeric, categorical = frames(5)
    reset()
    for t in range(5):
        reference = serve(numeric=numeric[t], categorical=categorical[t])
    reset()
    for t in range(4):
        serve(numeric=numeric[t], categorical=categorical[t])
    held = held_values(loaded)
    for value in (np.nan, np.inf, -np.inf):
        bad = numeric[4].copy()
        bad[0, 7] = value
        with pytest.raises(tf.errors.InvalidArgumentError, match="serving_default: numeric has NaN or inf"):
            serve(numeric=bad, categorical=categorical[4])
        for got, want in zip(held_values(loaded), held):
            np.testing.assert_array_equal(got, want)  # not assigned: no NaN carried into later frames
    out = serve(numeric=numeric[4], categorical=categorical[4])
    for key, value in reference.items():
        np.testing.assert_allclose(out[key].numpy(), value.numpy(), atol=1e-6, err_msg=key)

    meta = export.read_metadata(exported[cell_type])
    state = {k: tf.constant(v) for k, v in export.zeros_state(meta, batch=2).items()}
    numeric2, categorical2 = frames(1, batch=2)
    step(numeric=numeric2[0], categorical=categorical2[0], **state)  # finite: fine
    bad = numeric2[0].copy()
    bad[1, 0] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="step: numeric has NaN or inf"):
        step(numeric=bad, categorical=categorical2[0], **state)
    for name in state:
        poisoned = dict(state)
        poisoned[name] = state[name].numpy().copy()
        poisoned[name][1, 1, 3] = np.inf
        with pytest.raises(tf.errors.InvalidArgumentError, match=f"step: {name} has NaN or inf"):
            step(numeric=numeric2[0], categorical=categorical2[0], **poisoned)
    windows = np.repeat(numeric2[0][:, None], 3, axis=1)
    windows[0, 2, 5] = np.inf
    with pytest.raises(tf.errors.InvalidArgumentError, match="window: numeric has NaN or inf"):
        window(numeric=windows, categorical=np.repeat(categorical2[0][:, None], 3, axis=1))


def test_saved_model_agent_rejects_a_non_finite_frame_in_one_line(exported):
    agent = play.SavedModelAgent(exported["lstm"])
    numeric, categorical = frames(1)
    held = held_values(agent._loaded)
    bad = numeric[0].copy()
    bad[0, 2] = np.nan
    with pytest.raises(ValueError, match=r"serving_default rejected the frame \(serving_default: numeric has NaN or inf") as info:
        agent.act(bad, categorical[0])
    assert str(exported["lstm"]) in str(info.value) and "\n" not in str(info.value)
    for got, want in zip(held_values(agent._loaded), held):
        np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------------------
# 7. `step` refuses h/c of another batch size instead of broadcasting them


@pytest.mark.parametrize("cell_type", EXPORTS)
def test_step_signature_rejects_mismatched_batches(exported, cell_type):
    loaded = tf.saved_model.load(str(exported[cell_type]))
    step = loaded.signatures["step"]
    meta = export.read_metadata(exported[cell_type])
    numeric, categorical = frames(1, batch=3)
    names = "h, c and categorical" if cell_type.startswith("lstm") else "h and categorical"
    one = export.zeros_state(meta, batch=1)
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"step: {names} must have the batch size"):
        step(numeric=numeric[0], categorical=categorical[0], **one)  # would broadcast one game's state over three
    three = export.zeros_state(meta, batch=3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="must have the batch size"):
        step(numeric=numeric[0], categorical=categorical[0][:2], **three)
    if cell_type.startswith("lstm"):
        mixed = {"h": three["h"], "c": one["c"]}
        with pytest.raises(tf.errors.InvalidArgumentError, match="must have the batch size"):
            step(numeric=numeric[0], categorical=categorical[0], **mixed)
    out = step(numeric=numeric[0], categorical=categorical[0], **three)
    assert out["h"].shape == (3, L, U)


# ---------------------------------------------------------------------------
# 9. Two exports at once on one model folder


def export_during_save(monkeypatch, policy, base, version=None):
    """Make the next export run a second, complete export at a controlled
    point: after its SavedModel is written, before it is given a version.
    Returns the list the second export's path (or error) is put in."""
    real_save = tf.saved_model.save
    second = []

    def save_then_export_again(obj, path, *args, **kwargs):
        real_save(obj, path, *args, **kwargs)
        if not second:
            second.append("running")  # the second export saves too: no third
            second[0] = export.export_policy(policy, base, "bot", version=version)

    monkeypatch.setattr(export.tf.saved_model, "save", save_then_export_again)
    return second


def test_two_exports_at_once_get_the_next_two_versions(tmp_path, monkeypatch):
    policy = tiny_policy()
    base = tmp_path / "sm"
    second = export_during_save(monkeypatch, policy, base)
    first = export.export_policy(policy, base, "bot")
    assert second == [base / "bot" / "1"] and first == base / "bot" / "2"
    for path in (first, second[0]):
        assert (path / "saved_model.pb").is_file() and export.read_metadata(path)["hidden_size"] == U
    assert sorted(p.name for p in (base / "bot").iterdir()) == [".lock", "1", "2"]

    # The same explicit --version twice at once: the later one is told so, in one line.
    second = export_during_save(monkeypatch, policy, base, version=5)
    with pytest.raises(ValueError, match="5 already exists"):
        export.export_policy(policy, base, "bot", version=5)
    assert second == [base / "bot" / "5"]
    assert sorted(p.name for p in (base / "bot").iterdir()) == [".lock", "1", "2", "5"]


CONCURRENT_EXPORT = textwrap.dedent(
    """
    import os, sys, time
    import keras
    import tensorflow as tf
    from keras_lstm.model.policy import build_policy
    from keras_lstm.serving import export

    base, handshake = sys.argv[1], sys.argv[2]
    if handshake != "-":  # stop once the SavedModel is written, before it is published, until told to go on
        real_save = tf.saved_model.save

        def save_and_wait(obj, path, *args, **kwargs):
            real_save(obj, path, *args, **kwargs)
            open(os.path.join(handshake, "saved"), "w").close()
            deadline = time.monotonic() + 240
            while not os.path.exists(os.path.join(handshake, "go")):
                if time.monotonic() > deadline:
                    sys.exit("never told to go on")
                time.sleep(0.02)

        tf.saved_model.save = save_and_wait
    keras.utils.set_random_seed(5)
    print(export.export_policy(build_policy("lstm", embed_size=8, hidden_size=16, num_layers=2), base, "bot"))
    """
)


@pytest.mark.slow  # two more TensorFlow processes: ~20 s
def test_two_export_processes_at_once_get_the_next_two_versions(tmp_path):
    script = tmp_path / "export.py"
    script.write_text(CONCURRENT_EXPORT)
    handshake = tmp_path / "handshake"
    handshake.mkdir()
    base = tmp_path / "sm"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = [sys.executable, str(script), str(base)]
    first = subprocess.Popen([*run, str(handshake)], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (handshake / "saved").exists():  # the first export is between its save and its publish
            assert first.poll() is None, first.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the first export never got to its save"
            time.sleep(0.05)
        second = subprocess.run([*run, "-"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        (handshake / "go").touch()
        out, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert second.returncode == 0, second.stderr[-3000:]
    assert first.returncode == 0, err[-3000:]  # was: OSError: [Errno 39] Directory not empty
    assert second.stdout.strip() == str(base / "bot" / "1") and out.strip() == str(base / "bot" / "2")
    assert sorted(p.name for p in (base / "bot").iterdir()) == [".lock", "1", "2"]


def test_export_waits_for_the_model_folder_lock(tmp_path, monkeypatch):
    policy = tiny_policy()
    model_dir = tmp_path / "sm" / "bot"
    holder = FolderLock(model_dir, "model folder").acquire()  # as another export would hold it
    try:
        monkeypatch.setattr(export, "LOCK_WAIT_S", 0.0)
        with pytest.raises(FolderBusyError, match="model folder is in use by process"):
            export.export_policy(policy, tmp_path / "sm", "bot")
        assert sorted(p.name for p in model_dir.iterdir()) == [".lock"]  # its temporary folder is gone

        waits = []

        def other_export_finishes(seconds):  # called while waiting: the holder lets go
            waits.append(seconds)
            holder.release()

        monkeypatch.setattr(export, "LOCK_WAIT_S", 60.0)
        monkeypatch.setattr(export, "_sleep", other_export_finishes)
        assert export.export_policy(policy, tmp_path / "sm", "bot") == model_dir / "1"
        assert len(waits) == 1
    finally:
        holder.release()


# ---------------------------------------------------------------------------
# 11. Temporary folders of killed exports are removed


def test_export_removes_temporaries_of_dead_exports_only(tmp_path, monkeypatch):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        model_dir = tmp_path / "sm" / "bot"
        leftovers = [f".tmp-{dead.pid}-export-0a1b2c3d", f".tmp-7-{dead.pid}"]  # killed export; one of the old `.tmp-<version>-<pid>` scheme
        in_progress = f".tmp-{alive.pid}-export-4e5f6a7b"
        for name in [*leftovers, in_progress]:
            (model_dir / name / "variables").mkdir(parents=True)
            (model_dir / name / "saved_model.pb").write_bytes(b"half")
        used = []
        real_save = tf.saved_model.save

        def save(obj, path, *args, **kwargs):
            used.append(os.path.basename(path))
            return real_save(obj, path, *args, **kwargs)

        monkeypatch.setattr(export.tf.saved_model, "save", save)
        assert export.export_policy(tiny_policy(), tmp_path / "sm", "bot") == model_dir / "1"
        assert used[0].startswith(f".tmp-{os.getpid()}-")  # files.atomic's naming: the writer's pid first
        assert sorted(p.name for p in model_dir.iterdir()) == sorted([".lock", "1", in_progress])
    finally:
        alive.kill()
        alive.wait()


KILLED_EXPORT = textwrap.dedent(
    """
    import os, signal, sys
    import keras
    from keras_lstm.model.policy import build_policy
    from keras_lstm.serving import export

    def die(tmp):  # the SavedModel is written, the version not yet chosen
        os.kill(os.getpid(), signal.SIGKILL)

    export._before_publish = die
    keras.utils.set_random_seed(5)
    export.export_policy(build_policy("lstm", embed_size=8, hidden_size=16, num_layers=2), sys.argv[1], "bot")
    """
)


@pytest.mark.slow  # a second TensorFlow process: ~10 s
def test_killed_export_leaves_no_version_and_its_folder_is_cleaned_up(tmp_path):
    script = tmp_path / "killed.py"
    script.write_text(KILLED_EXPORT)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    child = subprocess.Popen([sys.executable, str(script), str(tmp_path / "sm")], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    _, stderr = child.communicate(timeout=300)
    assert child.returncode == -signal.SIGKILL, stderr[-3000:]
    model_dir = tmp_path / "sm" / "bot"
    (left,) = [p for p in model_dir.iterdir() if p.name != ".lock"]
    assert left.name.startswith(f".tmp-{child.pid}-export-")
    assert (left / "saved_model.pb").is_file() and (left / export.METADATA_FILE).is_file()
    assert export.next_version(model_dir) == 1  # nothing a server would load
    assert export.export_policy(tiny_policy(), tmp_path / "sm", "bot") == model_dir / "1"
    assert sorted(p.name for p in model_dir.iterdir()) == [".lock", "1"]


# ---------------------------------------------------------------------------
# 11. A damaged SavedModel gives one line naming the file


def damaged_copies(source, root):
    """Version folders broken in the ways a disk or a copy breaks them."""
    cases = {}

    def copy(name):
        target = root / name
        shutil.copytree(source, target)
        return target

    truncated = copy("truncated_pb")
    pb = truncated / "saved_model.pb"
    pb.write_bytes(pb.read_bytes()[: pb.stat().st_size // 2])
    cases[truncated] = (ValueError, r"saved_model\.pb: damaged or not a SavedModel")
    variables = copy("truncated_variables")
    for data in (variables / "variables").glob("variables.data*"):
        data.write_bytes(data.read_bytes()[:100])
    cases[variables] = (ValueError, "truncated_variables: damaged or not a SavedModel")
    no_meta = copy("no_metadata")
    (no_meta / export.METADATA_FILE).unlink()
    cases[no_meta] = (FileNotFoundError, r"keras_lstm\.json: missing")
    bad_meta = copy("bad_metadata")
    (bad_meta / export.METADATA_FILE).write_text('{"cell_type": "lstm", ')
    cases[bad_meta] = (ValueError, r"keras_lstm\.json: not a valid")
    old = copy("old_features")
    meta = json.loads((old / export.METADATA_FILE).read_text())
    (old / export.METADATA_FILE).write_text(json.dumps({**meta, "feature_version": meta["feature_version"] - 1, "numeric_size": F - 2}))
    cases[old] = (ValueError, r"keras_lstm\.json: exported for features version")
    name_folder = root / "empty_versions"
    (name_folder / "3").mkdir(parents=True)
    cases[name_folder] = (FileNotFoundError, r"empty_versions: no SavedModel in its version folders \[3\]")
    return cases


def test_damaged_saved_models_give_one_line_naming_the_file(exported, tmp_path):
    from keras_lstm.cli.main import app

    runner = CliRunner()
    for path, (error, message) in damaged_copies(exported["lstm"], tmp_path).items():
        with pytest.raises(error, match=message):
            play.load_agent(path)
        result = runner.invoke(app, ["play", "--model", str(path), "--replay", str(REPLAY), "--port", "1"])
        assert result.exit_code == 2, (path.name, result.output)
        assert "Traceback" not in result.output and str(path) in result.output, (path.name, result.output)
        error_lines = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(error_lines) == 1, (path.name, result.output)
    with pytest.raises(ValueError, match="saved_model.pb: damaged"):
        export.load_saved_model(tmp_path / "truncated_pb")


def test_play_and_export_name_a_wrong_model_path(exported, tmp_path):
    from keras_lstm.cli.main import app

    base = exported["lstm"].parents[1]
    (tmp_path / "notes.txt").write_text("not a model")
    cases = [
        (["play", "--model", str(base), "--replay", str(REPLAY), "--port", "1"],
         f"{base}: a SavedModel base folder (models: gru, lstm); give --model {base / 'gru'}"),
        (["play", "--model", str(tmp_path / "notes.txt"), "--replay", str(REPLAY), "--port", "1"], f"{tmp_path / 'notes.txt'}: not a model"),
        (["play", "--model", str(base / "lstm"), "--replay", str(REPLAY), "--port", "1", "--max-frames", "0"], "--max-frames must be a positive integer"),
        (["export", "--model", str(exported["lstm"]), "--base-dir", str(tmp_path / "sm")], f"{exported['lstm']}: already a SavedModel"),
    ]
    runner = CliRunner()
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, (args, result.output)
    # A SavedModel's own files name its folder too.
    agent = play.load_agent(exported["gru"] / "saved_model.pb")
    assert isinstance(agent, play.SavedModelAgent) and agent.source == str(exported["gru"])
