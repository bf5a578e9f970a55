"""The compression measurement behind `tfds_dataset.ZLIB_LEVEL`."""

import pytest

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


@pytest.mark.slow
def test_scaling_on_linked_copies_measures_prepare_and_both_trainings(replays_dir, tmp_path, monkeypatch):
    import tempfile

    from keras_lstm.benchmarks import scale

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # its temporary folders go here

    tiny = dict(embed_size=8, hidden_size=8, num_layers=1, window_size=10, batch_size=8, val_max_frames=2000)
    result = scale.run(replays_dir / "games", [9], steps=2, train_options=tiny, added=2)
    (row,) = result["rows"]
    assert row["files"] == 9 and row["replay_bytes"] > 0
    for prepare in (row["prepare"], row["prepare_one_process"]):
        assert prepare["wall_s"] > 0 and 0 < prepare["cpu_per_wall"] < 4 and prepare["size_bytes"] > 0
        assert prepare["files_parsed"] == 9 and prepare["peak_pss_mb"] > 100
    assert row["prepare_one_process"]["workers"] == 1
    # The update parsed the added files only.
    assert row["update"]["files_parsed"] == row["update"]["added"] == 2 and 0 < row["update"]["cpu_share"] < 1
    for run in (row["train_data_dir"], row["train_replays"]):
        assert 0 < run["first_step_s"] < 600 and run["peak_rss_mb"] > 100
    table = scale.format_table(result).splitlines()
    assert [line.startswith("| 9 |") for line in table].count(True) == 2
    assert list(tmp_path.iterdir()) == []  # everything it made was temporary


def test_linked_copies_cycle_through_the_folder_and_copy_nothing(replays_dir, tmp_path):
    from keras_lstm.benchmarks import scale

    games = sorted(p for p in (replays_dir / "games").glob("*.slp"))
    total = scale.link_copies(replays_dir / "games", tmp_path, len(games) + 3)
    links = sorted(tmp_path.rglob("*.slp"))
    assert len(links) == len(games) + 3 and all(p.is_symlink() for p in links)
    assert total == sum(p.stat().st_size for p in games) + sum(p.stat().st_size for p in games[:3])
