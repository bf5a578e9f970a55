"""The corpus recipe end to end (tiny model): `train`'s default is segments
with the state carried, split and validated by player, evaluated in one pass;
`--temporal` keeps the seed's windows."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from keras_lstm.cli.main import app
from keras_lstm.data.players import read_player_keys

from conftest import GAMES

runner = CliRunner()
TINY = ["--embed-size", "8", "--hidden-size", "8", "--num-layers", "1", "--window-size", "30", "--carried-streams", "4", "--epochs", "1", "--max-replays", "12"]


def test_train_defaults_to_segments_and_temporal_keeps_windows(tmp_path):
    result = runner.invoke(app, ["train", "--replays", str(GAMES), "--truncate-bptt", "15", "--output", str(tmp_path / "a")])
    assert result.exit_code == 2 and "--carried-state" in result.output and "add --temporal" in result.output, result.output
    # --temporal goes past that check to the windows' own (a validation cap shorter than one window).
    result = runner.invoke(app, ["train", "--temporal", "--replays", str(GAMES), "--truncate-bptt", "15", "--val-max-frames", "5", "--output", str(tmp_path / "b")])
    assert result.exit_code == 2 and "val-max-frames (5) must hold one window" in result.output, result.output


def _train(tmp_path, name, *options):
    out = tmp_path / name
    result = runner.invoke(app, ["train", "--replays", str(GAMES), "--split-by", "player", "--val-fraction", "0.3", *TINY, *options, "--output", str(out), "--json"])
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("corpus"), "run")


def test_no_validation_player_trained_and_the_report_counts_them(corpus_run):
    out, summary = corpus_run
    run = json.loads((out / "run.json").read_text())
    assert summary["split"]["split_by"] == "player" and summary["split"]["val_games"] == len(run["val_files"])
    train_players = set(run["train_players"])
    assert train_players == {k for f in run["train_files"] for k in read_player_keys(f)}
    named_in_val = {k for f in run["val_files"] for k in read_player_keys(f)}
    assert summary["split"]["val_players"] >= 1 and named_in_val - train_players  # someone the policy never saw
    assert summary["evaluation"] == "one pass, state carried"
    assert sum(g["frames"] for g in summary["by_player"].values()) == summary["frames"]
    assert {"f1", "baseline_repeat_f1", "baseline_prior_f1", "by_character", "change_frame_accuracy"} <= set(summary)


def test_evaluate_on_the_held_out_games_gives_the_trained_summary(corpus_run):
    out, summary = corpus_run
    result = runner.invoke(app, ["evaluate", "--model", str(out), "--held-out", "--json"])
    assert result.exit_code == 0, result.output
    again = json.loads(result.stdout)
    assert again["evaluation"] == summary["evaluation"] and again["frames"] == summary["frames"]
    assert again["val_loss"] == pytest.approx(summary["val_loss"], rel=1e-5)
    assert again["by_player"].keys() == summary["by_player"].keys()
    windows = json.loads(runner.invoke(app, ["evaluate", "--model", str(out), "--held-out", "--windows", "--json"]).stdout)
    assert windows["evaluation"] == "windows"


@pytest.mark.slow
def test_the_blind_ablation_and_a_smaller_training_sample(tmp_path, corpus_run):
    full_out, full = corpus_run
    # All in one run: the blind policy, trained on a sample of 3 games, each piece of a game augmented.
    out, blind = _train(tmp_path, "blind", "--hide-game-state", "--train-games", "3", "--augment", "mirror,swap-buttons")
    assert blind["frames"] == full["frames"]  # the same validation frames
    run = json.loads((out / "run.json").read_text())
    all_train_files = json.loads((full_out / "run.json").read_text())["train_files"]
    assert len(run["train_files"]) == 3 and set(run["train_files"]) < set(all_train_files)
    assert run["config"]["augment"] == "mirror,swap-buttons"
    again = json.loads(runner.invoke(app, ["evaluate", "--model", str(out), "--held-out", "--json"]).stdout)
    assert again["val_loss"] == pytest.approx(blind["val_loss"], rel=1e-5)  # evaluate hides the state too
    refused = runner.invoke(app, ["export", "--model", str(out), "--name", "blind", "--base-dir", str(tmp_path / "savedmodels")])
    assert refused.exit_code == 2 and "--hide-game-state" in refused.output and "Traceback" not in refused.output, refused.output


def test_bench_evaluate_times_both_forms_on_the_same_games(corpus_run):
    out, summary = corpus_run
    result = runner.invoke(app, ["bench", "evaluate", "--model", str(out), "--windows-max-frames", "3000", "--json"])
    assert result.exit_code == 0, result.output
    bench = json.loads(result.stdout)
    assert bench["one_pass"]["frames"] == summary["frames"]
    assert bench["one_pass"]["val_loss"] == pytest.approx(summary["val_loss"], rel=1e-5)
    assert 0 < bench["windows"]["frames"] <= 3000 and bench["one_pass_speedup"] > 0
    assert "cpu_features" in bench["machine"]


def test_other_backends_train_windows_on_one_device_and_refuse_the_rest(monkeypatch):
    import keras

    from keras_lstm.config import TrainConfig
    from keras_lstm.training.train import check_backend

    check_backend(TrainConfig.from_flat(carried_state=True))  # TensorFlow runs everything
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    check_backend(TrainConfig.from_flat())  # windows, one device
    with pytest.raises(ValueError, match="state carried across segments.*add --temporal"):
        check_backend(TrainConfig.from_flat(carried_state=True))
    with pytest.raises(ValueError, match="--strategy mirrored is TensorFlow's"):
        check_backend(TrainConfig.from_flat(strategy="mirrored"))
