"""A damaged prepared dataset: a listed part deleted, a record file cut
short or gone, a manifest missing a key or with a malformed entry. Readers
(`load_builder`, so `train --data-dir`) name the file in one line and say to
run prepare again, before anything is read; `prepare` finds each, says so,
and repairs it (a part made again, a manifest it cannot read prepared
afresh)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import tensorflow_datasets as tfds
from typer.testing import CliRunner

from keras_lstm.cli.main import app
from keras_lstm.data import prepared

from conftest import GAMES, assert_prepared_reads_as_parsed

tfds.disable_progress_bar()

FILES = ("peppi_transform.slp", "slippi-js_v2_test.slp", "slippi-js_test.slp", "libmelee_test_game_2.slp")
TINY = ["--hidden-size", "8", "--embed-size", "8", "--num-layers", "1", "--window-size", "10", "--stride", "40", "--epochs", "1"]


@pytest.fixture
def dataset(tmp_path, replays_dir, monkeypatch):
    """`(replay folder, data dir, first summary)`: FILES in two parts, no validation split."""
    monkeypatch.setattr(prepared, "PART_FILES", 2)
    folder = tmp_path / "replays"
    folder.mkdir()
    for name in FILES:
        (folder / name).symlink_to(GAMES / name)
    data_dir = tmp_path / "data"
    return folder, data_dir, prepared.prepare(folder, data_dir, val_fraction=0.0, workers=1)


def _record_file(version: Path, part: dict) -> Path:
    return version / prepared.PARTS / part["name"] / next(n for n in part["data_files"] if ".tfrecord-" in n)


def _delete_part(version: Path, manifest: dict) -> Path:
    folder = version / prepared.PARTS / manifest["parts"][1]["name"]
    shutil.rmtree(folder)
    return folder


def _truncate_record_file(version: Path, manifest: dict) -> Path:
    path = _record_file(version, manifest["parts"][0])
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)
    return path


def _delete_record_file(version: Path, manifest: dict) -> Path:
    path = _record_file(version, manifest["parts"][1])
    path.unlink()
    return path


def _reader_line(data_dir: Path, tmp_path: Path) -> str:
    """What `train --data-dir` says: one line, exit 2."""
    result = CliRunner().invoke(app, ["train", "--data-dir", str(data_dir), "--val-fraction", "0", "--output", str(tmp_path / "run"), *TINY])
    assert result.exit_code == 2, result.output
    assert result.output.strip().count("\n") == 0 and result.output.startswith("error: ")
    return result.output


@pytest.mark.parametrize("damage", [_delete_part, _truncate_record_file, _delete_record_file])
def test_a_damaged_part_is_named_by_readers_and_made_again_by_prepare(dataset, tmp_path, damage):
    folder, data_dir, first = dataset
    version = prepared.version_path(data_dir, 0.0)
    manifest = prepared.read_manifest(version)
    damaged = damage(version, manifest)
    with pytest.raises(prepared.DamagedDatasetError, match="run prepare again") as err:
        prepared.load_builder(data_dir, 0.0)
    assert str(err.value).startswith(f"{damaged}: ") and f"--replays {folder.resolve()}" in str(err.value)
    assert str(damaged) in _reader_line(data_dir, tmp_path)

    said = []
    again = prepared.prepare(folder, data_dir, val_fraction=0.0, workers=1, on_repair=said.append)
    part = next(p["name"] for p in manifest["parts"] if str(damaged).startswith(str(version / prepared.PARTS / p["name"])))
    assert said == [f"{part} damaged ({err.value.args[0].split(' (a damaged')[0]}): made again"]
    assert again["status"] == "updated" and again["parts_repaired"] == 1 and again["repaired"] == said
    assert again["files_parsed"] == 2 and again["examples"] == first["examples"]
    meta = assert_prepared_reads_as_parsed(data_dir, 0.0)
    assert meta["files"] == len(FILES)
    assert prepared.prepare(folder, data_dir, val_fraction=0.0, workers=1)["status"] == "up to date"


def test_prepare_says_what_it_repaired(dataset):
    folder, data_dir, _ = dataset
    version = prepared.version_path(data_dir, 0.0)
    gone = _delete_part(version, prepared.read_manifest(version))
    result = CliRunner().invoke(app, ["prepare", "--replays", str(folder), "--data-dir", str(data_dir), "--val-fraction", "0",
                                      "--workers", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert f"warning: {gone.name} damaged ({gone}: missing): made again" in result.output
    assert "repaired: 1 damaged parts made again" in result.output and "up to date" not in result.output


@pytest.mark.parametrize("edit,problem", [
    (lambda m: m["parts"][0].pop("counts"), "parts[0]: no 'counts'"),
    (lambda m: m.pop("next_part"), "no 'next_part'"),
    (lambda m: m["parts"][1]["files"][0].pop(), "parts[1]: 'files'[0] is not [name, split, size, time]"),
    (lambda m: m["parts"][0].__setitem__("name", "../../elsewhere"), "parts[0]: 'name' '../../elsewhere' is not a part's name"),
    (lambda m: m["parts"][0]["data_files"].__setitem__("dataset_info.json", "822"), "parts[0]: 'data_files' is not a size per file name"),
])
def test_a_malformed_manifest_is_named_by_readers_and_prepared_afresh(dataset, tmp_path, edit, problem):
    folder, data_dir, first = dataset
    path = prepared.version_path(data_dir, 0.0) / prepared.MANIFEST
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))
    expected = f"{path}: not a valid prepared dataset manifest ({problem})"
    with pytest.raises(prepared.DamagedDatasetError) as err:
        prepared.load_builder(data_dir, 0.0)
    assert str(err.value).startswith(expected + "; run prepare again")
    assert expected in _reader_line(data_dir, tmp_path)

    said = []
    again = prepared.prepare(folder, data_dir, val_fraction=0.0, workers=1, on_repair=said.append)
    assert said == [f"{expected}: prepared afresh"] and again["repaired"] == said
    assert again["status"] == "prepared" and again["files_parsed"] == len(FILES) and again["examples"] == first["examples"]
    assert_prepared_reads_as_parsed(data_dir, 0.0)


def test_a_manifest_from_before_sizes_were_kept_is_checked_and_gets_them(dataset):
    """Parts listed without their files' sizes (an older keras-lstm): their
    record files are walked instead; prepare adds the sizes."""
    folder, data_dir, _ = dataset
    version = prepared.version_path(data_dir, 0.0)
    path = version / prepared.MANIFEST
    manifest = json.loads(path.read_text())
    sizes = [p.pop("data_files") for p in manifest["parts"]]
    path.write_text(json.dumps(manifest))
    prepared.load_builder(data_dir, 0.0)  # readable as it is
    assert prepared.prepare(folder, data_dir, val_fraction=0.0, workers=1)["status"] == "up to date"
    assert [p["data_files"] for p in prepared.read_manifest(version)["parts"]] == sizes

    for part in manifest["parts"]:
        part.pop("data_files", None)
    path.write_text(json.dumps(manifest))
    record = _record_file(version, {**manifest["parts"][0], "data_files": sizes[0]})
    with open(record, "r+b") as f:
        f.truncate(record.stat().st_size - 100)
    with pytest.raises(prepared.DamagedDatasetError, match=f"{record}: truncated"):
        prepared.load_builder(data_dir, 0.0)
    again = prepared.prepare(folder, data_dir, val_fraction=0.0, workers=1)
    assert again["status"] == "updated" and again["parts_repaired"] == 1
    assert_prepared_reads_as_parsed(data_dir, 0.0)


def test_damage_that_keeps_the_size_is_one_line_naming_the_dataset_when_read(dataset):
    _, data_dir, _ = dataset
    version = prepared.version_path(data_dir, 0.0)
    record = _record_file(version, prepared.read_manifest(version)["parts"][0])
    data = bytearray(record.read_bytes())
    data[20:40] = bytes(20)  # inside the first record: its CRC no longer matches
    record.write_bytes(bytes(data))
    builder = prepared.load_builder(data_dir, 0.0)  # sizes as listed
    with pytest.raises(prepared.DamagedDatasetError, match=f"^{version}: a record file of the prepared dataset is damaged .*run prepare again"):
        prepared.read_trajectories(builder, prepared.TRAIN)
