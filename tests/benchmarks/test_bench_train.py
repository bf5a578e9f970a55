"""`keras-lstm bench train`: the protocol (`keras_lstm.benchmarks.protocol`),
the tables and plots (`keras_lstm.benchmarks.report`), and (slow) the quick run
end to end (`keras_lstm.benchmarks.train_protocol` and its workers). Nothing
here asserts on timings."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from keras_lstm.benchmarks.protocol import carried_decision, full_protocol
from keras_lstm.benchmarks.report import format_markdown, write_plots
from keras_lstm.cli.main import app
from keras_lstm.data.controller import HEADS

from conftest import GAMES

HEAD_VALUES = {h: 0.5 for h in HEADS}


def _run(name, backbone="lstm", k=None, mode="windows", step_ms=100.0, val_loss=4.0, gap=1.0):
    return {
        "name": name,
        "backbone": backbone,
        "truncate_bptt": k,
        "mode": mode,
        "parameters": 1_000_000,
        "backbone_parameters": 919_552 if backbone == "lstm" else 691_200,
        "backbone_parameters_arithmetic": 919_552 if backbone == "lstm" else 691_200,
        "step_ms_median": step_ms,
        "steady_frames_per_s": 64 * 60 / (step_ms / 1000),
        "fit_frames_per_s": 1000.0,
        "peak_rss_fit_mb": 900.0,
        "peak_extra_fit_mb": 150.0,
        "val_loss": val_loss,
        "per_head_accuracy": HEAD_VALUES,
        "baseline_repeat_loss": 3.0,
        "baseline_repeat_accuracy": HEAD_VALUES,
        "train_windows": 5000,
        "val_frames": 2000,
        "deploy": {
            "windowed": {"loss": val_loss},
            "deployed_same_frames": {"loss": val_loss * gap},
            "deployed_all_frames": {"loss": val_loss * gap},
            "gap_ratio": gap,
            "baseline_repeat_same_frames": 3.0,
            "deployed_loss_by_position": [{"from_frame": 0, "to_frame": 60, "frames": 10, "loss": 4.0}],
            "gap_by_position": [
                {"from_frame": 0, "to_frame": 60, "frames": 10, "windowed_loss": 4.0, "deployed_loss": 4.0, "ratio": 1.0},
                {"from_frame": 60, "to_frame": None, "frames": 10, "windowed_loss": 4.0, "deployed_loss": 4.4, "ratio": 1.1},
            ],
        },
        "latency": {"tf_function_step_ms": 0.5, "tf_function_step_what": "tf.function"},
    }


def _results(runs):
    protocol = full_protocol("/somewhere")
    return {"protocol": protocol.to_json(), "machine": {"cpu": "test CPU", "cores": 2}, "runs": runs}


def test_protocol_runs_and_validation():
    protocol = full_protocol(str(GAMES))
    protocol.validate()
    assert [r["name"] for r in protocol.runs()] == ["lstm_full", "gru_full", "lstm_k20", "lstm_k15", "lstm_k10"]
    assert protocol.carried_run()["mode"] == "carried"
    config = protocol.train_config(protocol.runs()[2], "/tmp/x")
    assert config["truncate_bptt"] == 20 and config["window_size"] == 60 and config["hidden_size"] == 256
    with pytest.raises(ValueError, match="truncation 90"):
        full_protocol(str(GAMES), truncations=(None, 90)).validate()
    with pytest.raises(ValueError, match="None"):
        full_protocol(str(GAMES), truncations=(20,)).validate()
    with pytest.raises(ValueError, match="carried-state"):
        full_protocol(str(GAMES), carried_state="sometimes").validate()


def test_carried_decision_follows_the_gap():
    assert carried_decision("auto", _run("lstm_full", gap=1.2))["run"]
    assert not carried_decision("auto", _run("lstm_full", gap=1.01))["run"]
    assert not carried_decision("auto", {"name": "lstm_full", "error": "exit 1"})["run"]
    assert carried_decision("always", None)["run"]
    assert not carried_decision("never", _run("lstm_full", gap=2.0))["run"]


def test_tables_compare_with_full_bptt():
    results = _results(
        [
            _run("lstm_full", step_ms=200.0, val_loss=4.0),
            _run("gru_full", backbone="gru", step_ms=150.0),
            _run("lstm_k20", k=20, step_ms=100.0, val_loss=4.4),
            {"name": "lstm_k10", "backbone": "lstm", "truncate_bptt": 10, "mode": "windows", "error": "exit 1: boom", "log": "x.log"},
        ]
    )
    text = format_markdown(results)
    for title in ("## Backbones", "## Truncated BPTT (LSTM)", "## Train/deploy gap"):
        assert title in text
    assert "| 919,552 |" in text and "| 691,200 |" in text
    k20 = next(line for line in text.splitlines() if line.startswith("| 20 |"))
    assert "2.00x" in k20 and "+10.0 %" in k20
    assert "failed: exit 1: boom" in text
    header_cells = None
    for line in text.splitlines():  # every table row has as many cells as its header
        if not line.startswith("|"):
            header_cells = None
        elif header_cells is None:
            header_cells = line.count("|")
        elif "failed" not in line:
            assert line.count("|") == header_cells, line


def test_plots_are_written(tmp_path):
    results = _results([_run("lstm_full"), _run("gru_full", backbone="gru"), _run("lstm_k20", k=20)])
    written = write_plots(results, tmp_path)
    assert {p.rsplit("/", 1)[-1] for p in written} == {"backbones.png", "truncation.png", "deploy_gap.png"}
    assert all((tmp_path / name).stat().st_size > 1000 for name in ("backbones.png", "truncation.png", "deploy_gap.png"))


def test_bad_replays_folder_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(app, ["bench", "train", "--quick", "--replays", str(tmp_path / "nope"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "not a folder of replays" in result.output


@pytest.mark.slow
def test_quick_protocol_runs_end_to_end(tmp_path):
    out = tmp_path / "bench"
    result = CliRunner().invoke(app, ["bench", "train", "--quick", "--replays", str(GAMES), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "## Backbones" in result.output and "## Train/deploy gap" in result.output
    results = json.loads((out / "results.json").read_text())
    names = [r["name"] for r in results["runs"]]
    assert names == ["lstm_full", "lstm_k10", "lstm_carried"]
    for run in results["runs"]:
        assert "error" not in run, run
        assert run["backbone_parameters"] == run["backbone_parameters_arithmetic"]
        assert run["deploy"]["frames_same"] > 0 and run["peak_rss_fit_mb"] > 0
        assert run["latency"]["tf_function_step_ms"] > 0
    for name in ("report.md", "backbones.png", "truncation.png", "deploy_gap.png"):
        assert (out / name).is_file(), name
