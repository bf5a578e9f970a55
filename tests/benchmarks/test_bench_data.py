"""The compression measurement behind `tfds_dataset.ZLIB_LEVEL`."""

from conftest import CLIPS
from keras_lstm.benchmarks.data import ZLIB_LEVELS, bench_compression
from keras_lstm.data import tfds_dataset
from keras_lstm.data.trajectories import load_trajectories


def test_every_level_is_measured_on_the_arrays_prepare_stores(replays_dir):
    report = load_trajectories(sorted(CLIPS.glob("*.slp"))[:3])
    result = bench_compression(report, repeats=1)
    per_frame = sum(t.state_numeric.shape[1] * 4 + t.state_categorical.shape[1] * 4 + 8 + 5 * 4 for t in report.trajectories[:1])
    assert result["compression_raw_bytes"] == report.frames * per_frame
    levels = result["compression_levels"]
    assert list(levels) == [str(level) for level in ZLIB_LEVELS]
    assert all(0 < v["bytes"] < result["compression_raw_bytes"] and v["compress_s"] > 0 for v in levels.values())
    assert levels["9"]["bytes"] <= levels["1"]["bytes"]
    assert result["compression_level_used"] == tfds_dataset.ZLIB_LEVEL
