"""Replays whose file name is not valid UTF-8 (bytes names from Windows-made
archives): read like any other, and every name printed, stored or hashed
survives them."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import tensorflow_datasets as tfds
from typer.testing import CliRunner

from keras_lstm.cli.main import app
from keras_lstm.data import prepared, tfds_dataset
from keras_lstm.data.replays import ReplayError, display_name, find_replays, read_game
from keras_lstm.data.trajectories import load_trajectories
from keras_lstm.data.split import split_by_game

from conftest import BAD, CLIPS

tfds.disable_progress_bar()

GOOD = CLIPS / "peppi_buttons_abxy.slp"
OTHER = CLIPS / "peppi_dpad_udlr.slp"


def _copy_to_bytes_name(source: Path, folder: Path, name: bytes) -> Path:
    """Copy a sample to `folder/name` (a bytes name); skip where the file
    system refuses names that are not UTF-8 (macOS)."""
    target = os.path.join(os.fsencode(folder), name)
    try:
        shutil.copyfile(source, target)
    except OSError as err:
        pytest.skip(f"this file system refuses non-UTF-8 names ({err})")
    return Path(os.fsdecode(target))


@pytest.fixture
def folder(tmp_path, replays_dir) -> Path:
    folder = tmp_path / "replays"
    folder.mkdir()
    _copy_to_bytes_name(GOOD, folder, b"g\xff.slp")
    (folder / "other.slp").symlink_to(OTHER)
    return folder


def test_display_name_is_printable_and_plain_names_are_unchanged():
    odd = os.fsdecode(b"/r/g\xff\xfe.slp")
    assert display_name(odd) == "/r/g\\xff\\xfe.slp"
    display_name(odd).encode("utf-8")  # representable
    assert display_name("/r/jeu-\u00e9t\u00e9.slp") == "/r/jeu-\u00e9t\u00e9.slp"
    assert display_name(Path("a/b.slp")) == "a/b.slp"
    assert tfds_dataset.name_from_display(display_name(odd)) == odd
    assert tfds_dataset.name_from_display("plain.slp") == "plain.slp"


def test_a_non_utf8_name_is_read_like_any_other(folder):
    odd = Path(os.fsdecode(os.path.join(os.fsencode(folder), b"g\xff.slp")))
    paths = find_replays(folder)
    assert odd in paths and len(paths) == 2
    report = load_trajectories(paths)
    assert report.replays_used == 2 and report.skipped == []
    alone = load_trajectories([GOOD])
    assert len(read_game(odd).frames.id) == len(read_game(GOOD).frames.id)
    assert sum(len(t) for t in report.trajectories if t.source == str(odd)) == alone.frames
    train, val = split_by_game([str(p) for p in paths], 0.5, 0)
    assert sorted(train + val) == sorted(str(p) for p in paths) and len(val) == 1
    json.dumps({"files": train + val})  # stored names survive (ensure_ascii)
    # A bad file under such a name: skipped with a printable reason, nothing else lost.
    bad = _copy_to_bytes_name(BAD / "peppi_corrupt.slp", folder, b"bad\xfe.slp")
    with pytest.raises(ReplayError) as err:
        read_game(bad)
    str(err.value).encode("utf-8")
    assert "bad\\xfe.slp" in str(err.value)
    report = load_trajectories(find_replays(folder))
    assert report.replays_used == 2 and [p for p, _ in report.skipped] == [str(bad)]


def test_prepare_stores_and_finds_a_non_utf8_name_again(folder, tmp_path):
    odd = os.fsdecode(b"g\xff.slp")
    _copy_to_bytes_name(BAD / "peppi_corrupt.slp", folder, b"bad\xfe.slp")
    data_dir = tmp_path / "data"
    summary = prepared.prepare(folder, data_dir, val_fraction=0.0)
    assert summary["replays_used"] == 2 and summary["files"] == 3
    assert summary["skipped"][0][0] == os.fsdecode(b"bad\xfe.slp")
    builder = prepared.load_builder(data_dir, 0.0)
    assert odd in builder.info.metadata["train_files"]
    sources = {ex["source"].decode() for ex in tfds.as_numpy(builder.as_dataset(split="train"))}
    assert sources == {"g\\xff.slp", "other.slp"}
    # The full paths of the trajectories find the files again.
    trajectories = prepared.read_trajectories(builder, prepared.TRAIN)
    assert {Path(t.source) for t in trajectories} == {folder.resolve() / odd, folder.resolve() / "other.slp"}
    assert all(os.path.exists(t.source) for t in trajectories)
    # The command prints the names, prepared and up to date, without failing.
    runner = CliRunner()
    args = ["prepare", "--replays", str(folder), "--data-dir", str(tmp_path / "cli"), "--no-progress", "--val-fraction", "0"]
    for _ in range(2):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "bad\\xfe.slp" in result.output
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["skipped"][0][0] == os.fsdecode(b"bad\xfe.slp")
