"""`keras-lstm bench train-speed --quick` runs end to end (no timed assertions)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from keras_lstm.benchmarks.train_speed import VARIANTS, TrainSpeedConfig, peak_memory_mb
from keras_lstm.cli.main import app


@pytest.mark.slow
def test_quick_benchmark_runs(tmp_path):
    out = tmp_path / "speed.json"
    result = CliRunner().invoke(app, ["bench", "train-speed", "--quick", "--cells", "lstm", "--no-memory", "--save", str(out)])
    assert result.exit_code == 0, result.output
    assert "(b)/(a)" in result.output and "(c)/(b)" in result.output
    results = json.loads(out.read_text())
    lstm = results["cells"]["lstm"]
    assert set(lstm["variants"]) == set(VARIANTS)
    assert all(row["frames_per_s"] > 0 for row in lstm["variants"].values())
    # Same weights, same batches, dropout 0: the two training paths agree.
    # These are losses (~18 nats) after Adam steps, not weights: Adam can turn
    # rounding noise in a near-zero gradient element into a 1e-5 weight
    # difference, but the loss hardly depends on such a weight, so the curves
    # differ by 1-2 float32 ulps of 18 (~2e-6 observed, with and without
    # oneDNN): 1e-3 does not depend on the CPU. It catches a forward bug (the
    # first loss is a plain forward pass; i/f gates swapped: 3.6e-2), not
    # a subtle gradient bug over 3 small steps (swapped gate gradients:
    # 1.4e-4); tests/model/test_tbptt.py compares the gradients themselves.
    assert lstm["loss_curve_max_abs_diff"]["ours_full"] < 1e-3


@pytest.mark.slow
def test_memory_probe_runs_in_a_subprocess():
    memory = peak_memory_mb(TrainSpeedConfig.quick(cells=("gru",)), "gru", "ours_truncated")
    assert memory["peak_rss_mb"] > 0 and memory["training_mb"] >= 0


def test_bad_options_give_one_line_error():
    result = CliRunner().invoke(app, ["bench", "train-speed", "--truncate-bptt", "100", "--window-size", "60"])
    assert result.exit_code == 2
    assert "truncate-bptt" in result.output


def test_bench_segments_quick_times_every_shape():
    from typer.testing import CliRunner

    from keras_lstm.cli.main import app

    result = CliRunner().invoke(app, ["bench", "segments", "--quick", "--json"])
    assert result.exit_code == 0, result.output
    import json

    out = json.loads(result.stdout)
    assert [(r["streams"], r["segment_frames"]) for r in out["shapes"]] == [(2, 6), (4, 6)]
    assert all(r["frames_per_s"] > 0 and r["steps_timed"] == 4 for r in out["shapes"])
