"""`keras-lstm bench serve`: each export timed in a process without project
code, rates consistent with the timings, the best batch among the rows."""

import numpy as np
import pytest

from keras_lstm.benchmarks.serve import ServeBenchConfig, format_table, run
from keras_lstm.cli.bench_serve import parse_batches
from keras_lstm.config import TrainConfig
from keras_lstm.model.policy import build_policy


@pytest.mark.slow  # two exports, two TensorFlow processes: ~20 s
def test_serve_bench_times_both_exports_and_the_numpy_stepper():
    tiny = TrainConfig.from_flat(embed_size=8, hidden_size=16, num_layers=1)
    result = run(ServeBenchConfig(training=tiny, batches=(1, 3), budget_s=0.02, min_calls=5, default_calls=20,
                                  intra_op_threads=1, inter_op_threads=1))
    for variant in ("plain", "xla", "numpy_stepper"):
        rows = result[variant]["step"]
        assert [r["batch"] for r in rows] == [1, 3]
        for r in rows:
            assert 0 < r["median_ms"] <= r["p99_ms"] and r["calls"] >= 5
            assert r["game_frames_per_s"] == pytest.approx(r["batch"] / r["median_ms"] * 1e3)
            assert r["games_at_60fps"] == pytest.approx(r["game_frames_per_s"] / 60)
        best = max(rows, key=lambda r: r["game_frames_per_s"])
        assert result[variant]["best"] == {"batch": best["batch"], "games_at_60fps": best["games_at_60fps"]}
    for variant in ("plain", "xla"):
        assert result[variant]["serving_default"]["median_ms"] > 0
        assert result[variant]["weights_signature"]["median_ms"] > 0 and result[variant]["numpy_weights"]["median_ms"] > 0
        assert result[variant]["threads"] == [1, 1]  # the timing process ran with the pools asked for
    # The weights floor reads exactly the matrices a frame multiplies by: not
    # the embedding tables (indexed) nor the held state.
    policy = build_policy("lstm", embed_size=8, hidden_size=16, num_layers=1)
    kernels = [w for w in policy.weights if w.path.rsplit("/", 1)[-1] in ("kernel", "recurrent_kernel")]
    assert result["plain"]["weight_bytes"] == 4 * sum(int(np.prod(w.shape)) for w in kernels)
    assert not result["judged"]  # targets are for a 2x256 LSTM
    table = format_table(result)
    assert "| 3 |" in table and "not judged" in table and "intra-op 1, inter-op 1" in table


def test_batches_option():
    assert parse_batches("1,8,64") == (1, 8, 64)
    for bad in ("", "0,1", "a"):
        with pytest.raises(ValueError, match="--batches must be positive"):
            parse_batches(bad)
