"""`keras-lstm evaluate` on a tiny untrained run: the change-frame and
calibration rows and keys, and `--reliability-plot`."""

import json

import keras
import pytest
from typer.testing import CliRunner

from conftest import CLIPS
from keras_lstm.cli.main import app
from keras_lstm.data import controller, features
from keras_lstm.data.trajectories import load_trajectories
from keras_lstm.data.windows import make_windows
from keras_lstm.evaluation import baselines
from keras_lstm.model.policy import build_policy

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NEW_KEYS = {
    "change_frames",
    "change_frames_per_button",
    "change_frame_accuracy",
    "change_frame_accuracy_per_button",
    "baseline_repeat_change_frame_accuracy",
    "baseline_prior_change_frame_accuracy",
    "calibration_ece",
    "calibration_bins",
    "predicted_changes",
    "predicted_change_precision",
    "predicted_change_precision_per_button",
}
runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, replays_dir):
    """A run folder as `keras-lstm train` leaves it, with an untrained tiny
    policy and baselines fitted on the clips (no training: seconds)."""
    folder = tmp_path_factory.mktemp("run")
    keras.utils.set_random_seed(5)
    build_policy("lstm", embed_size=8, hidden_size=8, num_layers=1).save(folder / "model.keras")
    report = load_trajectories(sorted(CLIPS.glob("*.slp")))
    windows = make_windows([features.align(t, 0) for t in report.trajectories], 10, 1)
    stats = baselines.fit_baselines(windows.predicted_targets(), windows.previous_targets())
    run = {
        "config": {"delay": 0, "window_size": 10, "stride": 25, "backbone": "lstm"},
        "feature_version": features.FEATURE_VERSION,
        "baseline_stats": stats.to_json(),
    }
    (folder / "run.json").write_text(json.dumps(run))
    return folder


def test_evaluate_text_json_and_reliability_plot(tiny_run, tmp_path):
    plot = tmp_path / "reliability.png"
    result = runner.invoke(app, ["evaluate", "--model", str(tiny_run), "--replays", str(CLIPS), "--reliability-plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert "on change frames" in result.output and "calibration error (ECE)" in result.output
    assert "repeat-prev" in result.output and f"reliability plot: {plot}" in result.output
    assert plot.read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in tmp_path.iterdir()] == ["reliability.png"]  # no temporary left

    plot.unlink()
    result = runner.invoke(app, ["evaluate", "--model", str(tiny_run), "--replays", str(CLIPS), "--json", "--reliability-plot", str(plot)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)  # stdout is the JSON object alone
    assert NEW_KEYS <= set(summary)
    assert plot.read_bytes()[:8] == PNG_MAGIC
    for key in NEW_KEYS - {"change_frames_per_button", "change_frame_accuracy_per_button", "predicted_change_precision_per_button"}:
        assert set(summary[key]) == set(controller.HEADS), key
    assert summary["change_frames"]["main_x"] > 0  # the clips move the sticks
    assert all(v == 0.0 for h, v in summary["baseline_repeat_change_frame_accuracy"].items() if summary["change_frames"][h])
    for head, bins in summary["calibration_bins"].items():
        assert len(bins["count"]) == len(bins["confidence"]) == len(bins["accuracy"]) == 15
        assert sum(bins["count"]) == summary["frames"] * (8 if head == "buttons" else 1)
        assert 0.0 <= summary["calibration_ece"][head] <= 1.0


def test_reliability_plot_in_a_missing_folder_is_refused_in_one_line(tiny_run, tmp_path):
    missing = tmp_path / "no" / "such" / "plot.png"
    result = runner.invoke(app, ["evaluate", "--model", str(tiny_run), "--replays", str(CLIPS), "--reliability-plot", str(missing)])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [f"error: {missing}: cannot write the reliability plot, the folder {missing.parent} does not exist"]
    not_png = tmp_path / "plot.svg"
    result = runner.invoke(app, ["evaluate", "--model", str(tiny_run), "--replays", str(CLIPS), "--reliability-plot", str(not_png)])
    assert result.exit_code == 2 and result.output.strip().splitlines() == [
        f"error: {not_png}: the reliability plot is a PNG image; give a path ending in .png"
    ]


def test_held_out_evaluates_the_runs_own_validation_games(tiny_run, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    run = json.loads((run_dir / "run.json").read_text())
    clips = sorted(str(p) for p in CLIPS.glob("*.slp"))
    run["val_files"], run["train_files"] = clips[:2], clips[2:]
    (run_dir / "run.json").write_text(json.dumps(run))
    held_out = json.loads(runner.invoke(app, ["evaluate", "--model", str(run_dir), "--held-out", "--json"]).stdout)
    trained_on = json.loads(runner.invoke(app, ["evaluate", "--model", str(run_dir), "--training-games", "--json"]).stdout)
    assert trained_on["replays_used"] == len(clips) - 2 and held_out["replays_used"] == 2
    folder = tmp_path / "two"
    folder.mkdir()
    for path in clips[:2]:
        (folder / path.rsplit("/", 1)[-1]).symlink_to(path)
    direct = json.loads(runner.invoke(app, ["evaluate", "--model", str(run_dir), "--replays", str(folder), "--json"]).stdout)
    assert held_out["frames"] == direct["frames"] > 0 and held_out["val_loss"] == pytest.approx(direct["val_loss"], rel=1e-6)
    both = runner.invoke(app, ["evaluate", "--model", str(run_dir), "--held-out", "--replays", str(folder)])
    assert both.exit_code == 2 and "one of --replays, --held-out and --training-games" in both.output
