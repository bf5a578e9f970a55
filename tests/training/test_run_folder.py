"""A run folder holds one run: a finished one is kept whole, a run resumes
only on the options and data it started with, and run.json is checked on
reading (its keys, their types, and against model.keras)."""

import json
import shutil
from pathlib import Path

import keras
import pytest
from typer.testing import CliRunner

from keras_lstm.cli.main import app
from keras_lstm.data import prepared
from keras_lstm.serving.export import export_run
from keras_lstm.training import run_backup
from keras_lstm.training.run_folder import load_run
from keras_lstm.training.train import TrainConfig, evaluate_folder, train

from conftest import CLIPS, GAMES

TINY = dict(embed_size=16, hidden_size=16, num_layers=1, window_size=12, truncate_bptt=4, stride=6, batch_size=32)
SHORT = dict(epochs=1, steps_per_epoch=4, val_max_frames=600, backup_every_steps=2)
NAMES = ("slippi-js_test.slp", "peppi_transform.slp", "slippi-js_v2_test.slp", "libmelee_test_game_2.slp")
runner = CliRunner()


def link_replays(folder: Path, names) -> Path:
    """A replay folder of links to sample games (never copies)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).symlink_to(GAMES / name)
    return folder


def snapshot(folder: Path) -> dict:
    """Every file below `folder` (the lock file aside): its bytes and modification time."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"
    }


def cli_args(config: TrainConfig) -> list:
    flat = config.flat()
    args = ["train", "--temporal", "--replays", flat["replays"], "--output", flat["output"], "--max-frames", str(flat["max_frames"])]
    for key in (*TINY, *SHORT):
        args += [f"--{key.replace('_', '-')}", str(flat[key])]
    return args


class _Stop(keras.callbacks.Callback):
    """Stops the run after a few batches, a backup written: a killed run."""

    def on_train_batch_end(self, batch, logs=None):
        if batch == 2:
            raise RuntimeError("stopped")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """`(config, replay folder)` of a tiny run trained to the end."""
    root = tmp_path_factory.mktemp("finished")
    replays = link_replays(root / "replays", NAMES[:3])
    config = TrainConfig.from_flat(replays=str(replays), output=str(root / "run"), max_frames=3000, **TINY, **SHORT)
    train(config, verbose=0)
    return config, replays


def test_a_finished_run_is_kept_whole(finished):
    config, replays = finished
    out = Path(config.run.output)
    before = snapshot(out)
    # The same options and data: it says so and writes nothing.
    warnings = []
    summary = train(config, verbose=0, on_warning=warnings.append)
    assert summary == json.loads((out / "metrics.json").read_text())
    assert len(warnings) == 1 and "finished already" in warnings[0]
    assert snapshot(out) == before
    result = runner.invoke(app, cli_args(config))
    assert result.exit_code == 0, result.output
    assert "finished already" in result.output and "parameters:" in result.output
    # Other options, more epochs, other replays: refused, in one line.
    for other, named in ((config.replace(hidden_size=8), "hidden_size"), (config.replace(epochs=2), "epochs")):
        with pytest.raises(ValueError, match=f"{out} holds a finished run with other options \\({named}\\); use another --output"):
            train(other, verbose=0)
    (replays / NAMES[3]).symlink_to(GAMES / NAMES[3])
    try:
        with pytest.raises(ValueError, match=f"finished run on other data \\(--replays {replays} changed since it started: "
                                             f"1 file\\(s\\) added, e.g. {replays / NAMES[3]}\\)"):
            train(config, verbose=0)
    finally:
        (replays / NAMES[3]).unlink()
    result = runner.invoke(app, cli_args(config) + ["--hidden-size", "32"])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        f"error: {out} holds a finished run with other options (hidden_size); use another --output, or delete {out} to train again"
    ]
    assert snapshot(out) == before


def test_a_trained_model_without_its_run_json_or_metrics_is_not_replaced(finished, tmp_path):
    config, _ = finished
    for missing, message in (("run.json", "holds a finished run but no run.json"), ("metrics.json", "holds a run's model.keras, best.keras but no metrics.json")):
        out = tmp_path / missing
        shutil.copytree(config.run.output, out)
        (out / missing).unlink()
        before = snapshot(out)
        with pytest.raises(ValueError, match=f"{out} {message}.*use another --output"):
            train(config.replace(output=str(out)), verbose=0)
        assert snapshot(out) == before


@pytest.mark.parametrize("source", ["replays", "data_dir"])
def test_a_run_resumes_only_on_the_data_it_started_on(tmp_path, source):
    replays = link_replays(tmp_path / "replays", NAMES[:3])
    if source == "replays":
        options = dict(replays=str(replays), max_frames=3000)
    else:
        prepared.prepare(replays, tmp_path / "data")
        options = dict(data_dir=str(tmp_path / "data"))
    config = TrainConfig.from_flat(output=str(tmp_path / "run"), **options, **TINY, **SHORT)
    with pytest.raises(RuntimeError, match="stopped"):
        train(config, callbacks=[_Stop()], verbose=0)
    assert run_backup.exists(tmp_path / "run" / "backup")
    run_info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run_info["data_source"]["files"] == 3
    # The data changes under the unfinished run: one file added, one removed.
    (replays / NAMES[3]).symlink_to(GAMES / NAMES[3])
    (replays / NAMES[0]).unlink()
    if source == "data_dir":
        assert prepared.prepare(replays, tmp_path / "data")["status"] == "updated"
    before = snapshot(tmp_path / "run")
    where = "--replays " + str(replays) + " changed" if source == "replays" else f"--data-dir {tmp_path / 'data'} prepared again"
    with pytest.raises(ValueError) as refused:
        train(config, verbose=0)
    assert str(refused.value) == (
        f"{tmp_path / 'run'} holds an unfinished run on other data ({where} since it started: 1 file(s) added, "
        f"e.g. {replays / NAMES[3]}; 1 file(s) removed, e.g. {replays / NAMES[0]}); another --output, "
        f"or delete {tmp_path / 'run' / 'backup'} to start again on this data"
    )
    assert snapshot(tmp_path / "run") == before


# -- run.json, read back ----------------------------------------------------------


def edited_run(finished, folder: Path, edit) -> Path:
    """A copy of the finished run (model.keras, run.json) with `edit(run_info)` applied to its run.json."""
    config, _ = finished
    folder.mkdir()
    shutil.copy(Path(config.run.output) / "model.keras", folder / "model.keras")
    run_info = json.loads((Path(config.run.output) / "run.json").read_text())
    edit(run_info)
    (folder / "run.json").write_text(json.dumps(run_info))
    return folder


def test_a_run_json_that_contradicts_the_model_is_refused(finished, tmp_path):
    # One key at a time, as a run.json copied from another run would differ.
    for key, value in (("hidden_size", 32), ("embed_size", 8), ("num_layers", 2), ("backbone", "gru"), ("window_size", 24),
                       ("relative_features", True), ("truncate_bptt", 6)):
        run = edited_run(finished, tmp_path / key, lambda r: r["config"].update({key: value}))
        with pytest.raises(ValueError, match=f"{run / 'run.json'} and {run / 'model.keras'}: disagree on {key}:"):
            evaluate_folder(run, CLIPS)
    result = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "window_size"), "--replays", str(CLIPS)])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"error: {tmp_path / 'window_size' / 'run.json'} and {tmp_path / 'window_size' / 'model.keras'}: "
                           "disagree on window_size: run.json's window_size 24 puts the loss on the last 18 frames")


def _delete(*keys):
    def edit(run_info):
        target = run_info
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]
    return edit


def _set(value, *keys):
    def edit(run_info):
        target = run_info
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    return edit


@pytest.mark.parametrize(
    "edit, message",
    [
        (_delete("config", "delay"), "config.delay is missing"),
        (_delete("config", "stride"), "config.stride is missing"),
        (_set("16", "config", "hidden_size"), "config.hidden_size must be an integer, got '16'"),
        (_set(12.5, "config", "window_size"), "config.window_size must be an integer, got 12.5"),
        (_set(None, "config", "window_size"), "config.window_size is missing"),  # null would be today's default, not the run's
        (_set(None, "config", "dropout"), "config.dropout must be a number, got None"),
        (_set(0, "config", "hidden_size"), "config: hidden-size must be positive, got 0"),
        (_set([1], "config"), "config must be an object of options"),
        (_delete("baseline_stats"), "baseline_stats is missing"),
        (_set({"button_prior": []}, "baseline_stats"), "baseline_stats must hold button_prior, class_prior and change_rate"),
        (_set([0.5], "baseline_stats", "class_prior", "main_x"), "baseline_stats.class_prior.main_x must be a list of 17 numbers"),
        (_delete("baseline_stats", "change_rate", "shoulder"), "baseline_stats.change_rate must have the heads"),
        (_set("a.slp", "train_files"), "train_files must be a list of file names"),
        (_set("x", "data_source"), "data_source must hold"),
    ],
)
def test_a_hand_edited_run_json_is_named_with_its_key(finished, tmp_path, edit, message):
    run = edited_run(finished, tmp_path / "run", edit)
    with pytest.raises(ValueError) as refused:
        evaluate_folder(run, CLIPS)
    assert str(refused.value).startswith(f"{run / 'run.json'}: {message}"), refused.value


def test_export_and_the_cli_name_the_key_in_one_line(finished, tmp_path):
    run = edited_run(finished, tmp_path / "run", _set("lstm", "config", "delay"))
    with pytest.raises(ValueError, match="run.json: config.delay must be an integer, got 'lstm'"):
        export_run(run, base_dir=tmp_path / "models")
    with pytest.raises(ValueError, match="config.delay must be an integer"):
        load_run(run)
    result = runner.invoke(app, ["evaluate", "--model", str(run), "--replays", str(CLIPS)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"error: {run / 'run.json'}: config.delay must be an integer, got 'lstm'"]
    assert not (tmp_path / "models").exists()
