"""A run killed anywhere resumes where it stopped and ends as if never killed;
every file it writes is whole or absent; one process per run folder."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from typer.testing import CliRunner

from keras_lstm.cli.main import app
from keras_lstm.files.lock import FolderBusyError, FolderLock
from keras_lstm.model.policy import build_policy
from keras_lstm.training import run_backup
from keras_lstm.training.inputs import load_split
from keras_lstm.training.train import TrainConfig, TrainingDiverged, train

from conftest import CLIPS, GAMES, REPO

TINY = dict(embed_size=16, hidden_size=16, num_layers=1, window_size=12, truncate_bptt=4, stride=6, batch_size=32)
CONFIG = dict(replays=str(GAMES), epochs=3, max_frames=6000, backup_every_steps=3, **TINY)
RUN_FILES = ("model.keras", "best.keras", "run.json", "metrics.json", "history.json")
runner = CliRunner()


def steps_per_epoch() -> int:
    return len(load_split(TrainConfig.from_flat(**CONFIG)).train) // CONFIG["batch_size"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    summary = train(TrainConfig.from_flat(output=str(out), **CONFIG), verbose=0)
    return out, summary


def run_until_killed(out: Path, point: str, config: dict = CONFIG) -> None:
    config = json.dumps({**config, "output": str(out)})
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests")}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("killable_train.py")), config, point], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == -9, (proc.returncode, proc.stderr[-2000:])


def assert_same_as_uninterrupted(out: Path, summary: dict, uninterrupted) -> None:
    whole_out, whole = uninterrupted
    assert summary["val_loss"] == pytest.approx(whole["val_loss"], rel=1e-3)
    history = json.loads((out / "history.json").read_text())
    whole_history = json.loads((whole_out / "history.json").read_text())
    assert set(history) == set(whole_history)
    for key, values in history.items():
        assert len(values) == CONFIG["epochs"], key  # every epoch once
        np.testing.assert_allclose(values, whole_history[key], rtol=1e-3, err_msg=key)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_run"] == CONFIG["epochs"]
    for name in RUN_FILES:
        assert (out / name).is_file(), name
    assert not (out / "backup").exists()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.slow
def test_killed_mid_epoch_then_in_the_final_save_ends_as_if_never_killed(tmp_path, uninterrupted):
    steps = steps_per_epoch()
    # In epoch 2, two batches after a backup: those two are trained again,
    # in the same order, from the same state.
    kill_at = steps + 2 * CONFIG["backup_every_steps"] + 2
    run_until_killed(tmp_path, f"batch:{kill_at}")
    backups = run_backup.complete_backups(tmp_path / "backup")
    assert [int(p.name) for p in backups] == [steps + 2 * CONFIG["backup_every_steps"]]
    assert not (tmp_path / "model.keras").exists()
    # The resumed run is killed again, halfway through writing model.keras.
    run_until_killed(tmp_path, "final-save")
    assert not (tmp_path / "model.keras").exists()  # whole or absent, never half
    assert run_backup.exists(tmp_path / "backup")  # kept until everything is in place
    summary = train(TrainConfig.from_flat(output=str(tmp_path), **CONFIG), verbose=0)
    assert_same_as_uninterrupted(tmp_path, summary, uninterrupted)
    keras.models.load_model(tmp_path / "model.keras")


@pytest.mark.slow
def test_killed_while_writing_a_backup_resumes_from_the_previous_one(tmp_path, uninterrupted):
    run_until_killed(tmp_path, "backup:4")
    backup = tmp_path / "backup"
    assert [int(p.name) for p in run_backup.complete_backups(backup)] == [3 * CONFIG["backup_every_steps"]]
    assert [p.name for p in backup.iterdir() if p.name.startswith(".tmp-")]  # the half-written one
    summary = train(TrainConfig.from_flat(output=str(tmp_path), **CONFIG), verbose=0)
    assert_same_as_uninterrupted(tmp_path, summary, uninterrupted)


@pytest.mark.slow
def test_carried_state_training_resumes_like_windowed_training(tmp_path):
    carried = {**CONFIG, "carried_state": True, "carried_streams": 4, "carried_piece_frames": 240, "truncate_bptt": None}
    whole = train(TrainConfig.from_flat(output=str(tmp_path / "whole"), **carried), verbose=0)
    out = tmp_path / "killed"
    run_until_killed(out, "batch:8", carried)  # two batches after the backup at step 6, state carried across it
    resumed = train(TrainConfig.from_flat(output=str(out), **carried), verbose=0)
    assert resumed["val_loss"] == pytest.approx(whole["val_loss"], rel=1e-3)
    assert resumed["epochs_run"] == carried["epochs"]
    assert type(keras.models.load_model(out / "model.keras")).__name__ == "BehaviorCloningPolicy"


# -- backups ---------------------------------------------------------------


def tiny_policy():
    policy = build_policy("lstm", 8, 8, 1, 0.1, None, None)
    policy.compile(optimizer=keras.optimizers.Adam(1e-3))
    policy.optimizer.build(policy.trainable_variables)
    return policy


def test_backup_restores_every_variable(tmp_path):
    policy = tiny_policy()
    for v in policy.variables + policy.optimizer.variables:
        v.assign(np.random.default_rng(0).normal(size=v.shape).astype(v.dtype))
    run_backup.save(tmp_path, policy, run_backup.Progress(epoch=1, step=5, history={"loss": [2.0]}, best=1.5), steps_per_epoch=10)
    other = tiny_policy()
    progress = run_backup.load_latest(tmp_path, other)
    assert (progress.epoch, progress.step, progress.history, progress.best) == (1, 5, {"loss": [2.0]}, 1.5)
    for a, b in zip(policy.variables + policy.optimizer.variables, other.variables + other.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_damaged_newest_backup_falls_back_then_says_what_to_do(tmp_path):
    policy = tiny_policy()
    older = run_backup.save(tmp_path, policy, run_backup.Progress(epoch=0, step=3), steps_per_epoch=10)
    # a second backup that lands damaged (say, a disk error), the older kept beside it
    newer = tmp_path / f"{7:012d}"
    newer.mkdir()
    (newer / run_backup.VARIABLES_FILE).write_bytes(b"not an npz")
    (newer / run_backup.PROGRESS_FILE).write_text(json.dumps(dataclasses.asdict(run_backup.Progress(step=7))))
    warnings = []
    progress = run_backup.load_latest(tmp_path, tiny_policy(), on_warning=warnings.append)
    assert progress.step == 3 and len(warnings) == 1 and "damaged" in warnings[0]
    for path in (older,):
        (path / run_backup.VARIABLES_FILE).write_bytes(b"")
    with pytest.raises(run_backup.BackupError, match="every backup is damaged.*delete"):
        run_backup.load_latest(tmp_path, tiny_policy())


def test_cli_says_in_one_line_that_the_backup_is_damaged(tmp_path):
    out = tmp_path / "run"
    config = TrainConfig.from_flat(output=str(out), **{**CONFIG, "epochs": 1, "max_frames": 3000})
    with pytest.raises(RuntimeError):
        train(config, callbacks=[_Raise(after=4)], verbose=0)
    for path in run_backup.complete_backups(out / "backup"):
        (path / run_backup.VARIABLES_FILE).write_bytes(b"garbage")
    result = runner.invoke(app, cli_args(config))
    assert result.exit_code == 2, result.output
    assert "every backup is damaged" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


class _Raise(keras.callbacks.Callback):
    def __init__(self, after):
        super().__init__()
        self.after, self.seen = after, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.after:
            raise RuntimeError("stop here")


def cli_args(config: TrainConfig) -> list:
    flat = config.flat()
    args = ["train", "--temporal", "--replays", flat["replays"], "--output", flat["output"], "--epochs", str(config.epochs)]
    for key in (*TINY, "max_frames", "backup_every_steps"):
        args += [f"--{key.replace('_', '-')}", str(flat[key])]
    return args


# -- diverging, locks, bad options -------------------------------------------


def test_nan_learning_rate_is_refused():
    for value in ("nan", "inf"):
        result = runner.invoke(app, ["train", "--replays", str(GAMES), "--learning-rate", value])
        assert result.exit_code == 2
        assert "learning-rate must be a finite" in result.output  # the check every command's numbers get first


def test_a_run_that_diverges_exits_non_zero_in_one_line(tmp_path):
    config = TrainConfig.from_flat(output=str(tmp_path / "run"), learning_rate=1e30, **{**CONFIG, "epochs": 1, "max_frames": 3000})
    assert issubclass(TrainingDiverged, ValueError)  # a user error: one line, exit 2
    result = runner.invoke(app, cli_args(config) + ["--learning-rate", "1e30"])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "loss became NaN" in errors[0] and "Traceback" not in result.output
    assert not (tmp_path / "run" / "model.keras").exists()


def test_second_process_on_a_run_folder_is_refused(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from keras_lstm.files.lock import FolderLock; "
         "l = FolderLock(sys.argv[1], 'run folder').acquire(); print('locked', flush=True); time.sleep(600)", str(out)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(FolderBusyError, match=f"in use by process {holder.pid}"):
            train(TrainConfig.from_flat(output=str(out), **CONFIG), verbose=0)
        result = runner.invoke(app, cli_args(TrainConfig.from_flat(output=str(out), **CONFIG)))
        assert result.exit_code == 2 and f"process {holder.pid}" in result.output
    finally:
        holder.kill()
        holder.wait()
    # the kernel dropped the dead holder's lock: the folder is free again
    FolderLock(out, "run folder").acquire().release()


def test_run_folder_errors_name_the_file(tmp_path, uninterrupted):
    whole_out, _ = uninterrupted
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "run.json").write_text((whole_out / "run.json").read_text())
    (broken / "model.keras").write_bytes((whole_out / "model.keras").read_bytes()[:1318])
    bad_json = tmp_path / "bad-json"
    bad_json.mkdir()
    (bad_json / "model.keras").write_bytes((whole_out / "model.keras").read_bytes())
    (bad_json / "run.json").write_text("{\n")
    cases = [
        (["train", "--replays", str(GAMES), "--output", str(a_file)], f"{a_file}: is a file"),
        (["train", "--replays", str(GAMES), "--seed", "-1"], "--seed must be between 0 and 4294967295, got -1"),
        (["evaluate", "--model", str(broken), "--replays", str(CLIPS)], f"{broken / 'model.keras'}: damaged"),
        (["evaluate", "--model", str(bad_json), "--replays", str(CLIPS)], f"{bad_json / 'run.json'}: not a valid run.json"),
        (["evaluate", "--model", str(whole_out), "--replays", str(CLIPS), "--batch-size", "0"], "batch-size must be positive, got 0"),
        (["evaluate", "--model", str(whole_out), "--replays", str(CLIPS), "--batch-size", "-1"], "batch-size must be positive, got -1"),
        (["evaluate", "--model", str(whole_out), "--replays", str(CLIPS), "--stride", "0"], "stride must be positive"),
        (["train", "--replays", str(GAMES), "--backup-every-steps", "0"], "backup-every-steps must be positive"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in " ".join(result.output.split()), (args, result.output)
        assert "Traceback" not in result.output
