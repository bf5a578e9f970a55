"""Training end to end on real replays (tiny model), evaluation, resume, CLI."""

import json

import keras
import pytest
from typer.testing import CliRunner

from keras_lstm.cli.main import app
from keras_lstm.training import run_backup
from keras_lstm.training.train import TrainConfig, evaluate_folder, train

from conftest import BAD, CLIPS, GAMES

TINY = dict(embed_size=16, hidden_size=16, num_layers=1, window_size=12, truncate_bptt=4, stride=6, batch_size=32)
REQUIRED_KEYS = {
    "val_loss",
    "per_head_accuracy",
    "baseline_repeat_loss",
    "baseline_repeat_accuracy",
    "baseline_prior_loss",
    "frames",
    "replays_used",
    "replays_skipped",
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    config = TrainConfig.from_flat(replays=str(GAMES), output=str(out), epochs=1, max_frames=12000, lr_schedule="cosine", **TINY)
    summary = train(config, verbose=0)
    return out, summary


def test_cosine_schedule_decays_to_zero_by_the_last_step():
    from keras_lstm.training.train import learning_rate

    config = TrainConfig.from_flat(learning_rate=0.01, epochs=3, lr_schedule="cosine")
    schedule = learning_rate(config, steps_per_epoch=10)
    assert float(schedule(0)) == pytest.approx(0.01) and float(schedule(15)) == pytest.approx(0.005, rel=1e-4)
    assert float(schedule(30)) == pytest.approx(0.0, abs=1e-9)
    assert learning_rate(TrainConfig.from_flat(learning_rate=0.01), 10) == 0.01


def test_train_writes_a_complete_run_folder(tiny_run):
    out, summary = tiny_run
    for name in ("model.keras", "best.keras", "run.json", "metrics.json", "history.json"):
        assert (out / name).is_file(), name
    assert (out / "logs").is_dir()
    assert not (out / "backup").exists()  # removed once the run completes
    assert REQUIRED_KEYS <= set(summary)
    assert json.loads((out / "metrics.json").read_text())["val_loss"] == pytest.approx(summary["val_loss"])
    assert summary["frames"] == summary["val_windows"] > 0
    assert summary["train_frames_per_s"] > 0
    policy = keras.models.load_model(out / "model.keras")
    assert policy.count_params() == summary["parameters"]


def test_evaluate_on_unseen_replays(tiny_run):
    out, _ = tiny_run
    summary = evaluate_folder(out, CLIPS)
    assert REQUIRED_KEYS <= set(summary)
    assert summary["replays_used"] == 10 and summary["frames"] > 0
    for head, acc in summary["per_head_accuracy"].items():
        assert 0.0 <= acc <= 1.0, head


def test_model_from_other_features_is_refused(tiny_run, tmp_path):
    out, _ = tiny_run
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / "model.keras").write_bytes((out / "model.keras").read_bytes())
    run = json.loads((out / "run.json").read_text())
    (stale / "run.json").write_text(json.dumps({**run, "feature_version": 0}))
    with pytest.raises(ValueError, match="features version 0"):
        evaluate_folder(stale, CLIPS)


class _Crash(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        # die a few steps into the second epoch, after a backup was written
        if self.model.optimizer.iterations.numpy() >= self.params["steps"] + 3:
            raise RuntimeError("simulated kill")


@pytest.mark.slow
def test_resuming_with_other_options_is_refused(tmp_path):
    config = TrainConfig.from_flat(replays=str(GAMES), output=str(tmp_path), epochs=3, max_frames=6000, backup_every_steps=2, **TINY)
    with pytest.raises(RuntimeError, match="simulated kill"):
        train(config, callbacks=[_Crash()], verbose=0)
    assert run_backup.exists(tmp_path / "backup")
    other = config.replace(hidden_size=8)
    with pytest.raises(ValueError, match="unfinished run with other options \\(hidden_size\\)"):
        train(other, verbose=0)
    train(config, verbose=0)
    history = json.loads((tmp_path / "history.json").read_text())
    assert len(history["loss"]) == 3  # every epoch once
    assert not (tmp_path / "backup").exists()


runner = CliRunner()


def test_cli_errors_are_one_line(tmp_path):
    cases = [
        (["train", "--replays", str(tmp_path / "nope")], "no such folder"),
        (["train", "--replays", str(tmp_path)], "no .slp replays"),
        (["train", "--replays", str(BAD)], "no usable replay"),
        (["train", "--replays", str(GAMES), "--hidden-size", "0"], "hidden-size must be positive"),
        (["train", "--replays", str(GAMES), "--window-size", "10", "--truncate-bptt", "20"], "must not exceed window-size"),
        (["train", "--replays", str(GAMES), "--matmul-dtype", "int8"], "matmul-dtype must be float32 or bfloat16"),
        (["evaluate", "--model", str(tmp_path), "--replays", str(CLIPS)], "no trained model"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output


@pytest.mark.slow
def test_cli_train_then_evaluate_json(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--temporal", "--backbone", "gru", "--replays", str(GAMES), "--output", str(out), "--epochs", "1", "--max-frames", "6000", "--max-replays", "8"]
    for key, value in TINY.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    result = runner.invoke(app, args + ["--json"])
    assert result.exit_code == 0, result.output
    trained = json.loads(result.stdout)  # only the JSON object on stdout: Keras' epoch lines go to stderr
    assert trained["epochs_run"] == 1 and "val_loss" in result.stderr
    result = runner.invoke(app, ["evaluate", "--model", str(out), "--replays", str(GAMES.parent / "clips"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert REQUIRED_KEYS <= set(summary)
