"""The prepared TFDS dataset: splits by game, exact round trip of the
trajectories, deterministic keys and bytes, skipped files in the metadata,
no-op rebuilds, reading the parts with plain TFDS, `keras-lstm prepare`, and
kills. (Updates in place: test_prepared_updates.py.)"""

from __future__ import annotations

import hashlib
import zlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from typer.testing import CliRunner

from keras_lstm.cli.main import app
from keras_lstm.data import features, prepared, tfds_dataset
from keras_lstm.data.replays import ReplayError, find_replays
from keras_lstm.data.split import split_by_game
from keras_lstm.files.lock import FolderBusyError, FolderLock

from conftest import BAD, CLIPS, GAMES, assert_prepared_reads_as_parsed, kill_when_paused

tfds.disable_progress_bar()

# Short games: two human 1v1s on odd ports, one vs a CPU, a teams game; two
# unreadable files in a subfolder. Symlinks only: the replays are never copied.
SMALL = {
    "peppi_transform.slp": GAMES,
    "slippi-js_v2_test.slp": GAMES,
    "slippi-js_test.slp": GAMES,
    "libmelee_test_game_2.slp": GAMES,
    "slippi-js_teams_time.slp": GAMES,
    "bad/libmelee_corrupt_game_1.slp": BAD.parent,
    "bad/peppi_corrupt.slp": BAD.parent,
}
VAL_FRACTION = 0.25  # puts peppi_transform.slp and the teams game in validation


def _link_folder(folder: Path, names=SMALL) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, base in names.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).symlink_to(base / name)
    return folder


@pytest.fixture(scope="module")
def small(tmp_path_factory, replays_dir):
    folder = _link_folder(tmp_path_factory.mktemp("replays"))
    data_dir = tmp_path_factory.mktemp("data")
    summary = prepared.prepare(folder, data_dir, val_fraction=VAL_FRACTION)
    return folder, data_dir, summary


def _file_digests(path: Path) -> dict:
    return {p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*.tfrecord*"))}


def test_splits_are_by_game_and_match_split_by_game(small):
    folder, data_dir, summary = small
    builder = prepared.load_builder(data_dir, VAL_FRACTION)
    meta = builder.info.metadata
    paths = [str(p) for p in find_replays(folder)]
    train, val = split_by_game(paths, VAL_FRACTION, 0)
    assert meta["train_files"] == [Path(p).relative_to(folder).as_posix() for p in train]
    assert meta["val_files"] == [Path(p).relative_to(folder).as_posix() for p in val]
    assert set(meta["train_files"]).isdisjoint(meta["val_files"])
    # Every example's game is on its split's side.
    for split, files in ((prepared.TRAIN, meta["train_files"]), (prepared.VALIDATION, meta["val_files"])):
        sources = {ex["source"].decode() for ex in tfds.as_numpy(builder.as_dataset(split=split))}
        assert sources <= set(files)
    assert summary["status"] == "prepared"
    assert builder.prepared_path.name == f"{tfds_dataset.features.FEATURE_VERSION}.0.0"


def test_trajectories_round_trip_exactly_in_load_order(small):
    folder, data_dir, _ = small
    meta = assert_prepared_reads_as_parsed(data_dir, VAL_FRACTION)
    assert meta["replays_dir"] == str(folder.resolve())


def test_arrays_are_stored_at_the_chosen_zlib_level(small, tmp_path, monkeypatch):
    folder, data_dir, summary = small
    monkeypatch.setattr(tfds_dataset, "ZLIB_LEVEL", 0)  # zlib's "stored": no compression at all
    stored = prepared.prepare(folder, tmp_path, val_fraction=VAL_FRACTION)
    assert stored["size_bytes"] > 3 * summary["size_bytes"]  # so the level reached the encoder
    a, b = (prepared.read_trajectories(prepared.load_builder(d, VAL_FRACTION), prepared.TRAIN) for d in (data_dir, tmp_path))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.state_numeric, y.state_numeric)
    from tensorflow_datasets.core.features import tensor_feature

    assert tensor_feature.zlib is zlib  # TFDS' own module again after preparing


def test_skipped_files_are_named_and_counted_in_the_metadata(small):
    _, data_dir, summary = small
    meta = prepared.load_builder(data_dir, VAL_FRACTION).info.metadata
    skipped = dict(meta["skipped"])
    assert set(skipped) == {"bad/libmelee_corrupt_game_1.slp", "bad/peppi_corrupt.slp", "slippi-js_teams_time.slp"}
    assert skipped["slippi-js_teams_time.slp"].startswith("not a 1v1 game")
    assert all("unreadable" in skipped[n] for n in skipped if n.startswith("bad/"))
    counts = meta["counts"]
    assert summary["replays_skipped"] == 3 and summary["replays_unreadable"] == 2 and summary["replays_not_1v1"] == 1
    assert summary["replays_used"] == 4 and summary["cpu_players_not_imitated"] == 1
    assert summary["trajectories"] == 7 == sum(summary["examples"].values())
    assert counts["train"]["trajectories"] == summary["examples"]["train"]


def test_keys_and_bytes_are_deterministic(small, tmp_path):
    folder, data_dir, _ = small
    again = prepared.prepare(folder, tmp_path, val_fraction=VAL_FRACTION)
    first = prepared.load_builder(data_dir, VAL_FRACTION)
    second = prepared.load_builder(tmp_path, VAL_FRACTION)
    assert _file_digests(first.prepared_path) == _file_digests(second.prepared_path) != {}
    assert again["examples"] == small[2]["examples"]
    ids = [ex["tfds_id"] for ex in tfds.as_numpy(first.as_dataset(split="train", read_config=tfds.ReadConfig(add_tfds_id=True)))]
    assert len(set(ids)) == len(ids)


def test_rebuilding_an_unchanged_folder_is_a_no_op_and_a_changed_one_rebuilds(small, tmp_path):
    folder = _link_folder(tmp_path / "replays", {k: v for k, v in SMALL.items() if not k.startswith("bad/")})
    data_dir = tmp_path / "data"
    first = prepared.prepare(folder, data_dir, val_fraction=VAL_FRACTION)
    version = prepared.load_builder(data_dir, VAL_FRACTION).prepared_path
    stamps = {p: p.stat().st_mtime_ns for p in version.rglob("*")}
    calls = []
    again = prepared.prepare(folder, data_dir, val_fraction=VAL_FRACTION, on_file=lambda *a: calls.append(a))
    assert again["status"] == "up to date" and calls == [] and again["files_parsed"] == 0
    assert {p: p.stat().st_mtime_ns for p in version.rglob("*")} == stamps
    assert again["examples"] == first["examples"]
    # Other options (a filter): prepared afresh.
    from keras_lstm.data.filters import ReplayFilter

    changed = prepared.prepare(folder, data_dir, val_fraction=VAL_FRACTION, replay_filter=ReplayFilter(min_frames=1))
    assert changed["status"] == "prepared" and changed["files_parsed"] == first["files"]
    assert changed["examples"] == first["examples"]


def test_plain_tfds_reads_the_parts_the_manifest_lists(tmp_path, replays_dir):
    folder = _link_folder(tmp_path / "replays",
                          {n: GAMES for n in ("peppi_transform.slp", "slippi-js_v2_test.slp", "libmelee_test_game_2.slp")})
    prepared.prepare(folder, tmp_path / "data")
    version = prepared.version_path(tmp_path / "data")
    manifest = json.loads((version / "manifest.json").read_text())
    builder = tfds.builder_from_directories([str(version / "parts" / part["name"]) for part in manifest["parts"]])
    ex = next(iter(tfds.as_numpy(builder.as_dataset(split="train"))))
    assert ex["state_numeric"].shape[1] == tfds_dataset.features.STATE_NUMERIC_SIZE
    assert ex["targets"]["buttons"].shape[1] == 8
    ours = prepared.load_builder(tmp_path / "data")
    assert builder.info.splits["train"].num_examples == ours.info.splits["train"].num_examples > 0


def test_all_held_out_games_unusable_gives_no_validation_split(tmp_path, replays_dir):
    # With the default split the held-out file here is the teams game.
    names = {n: GAMES for n in ("peppi_transform.slp", "slippi-js_v2_test.slp", "slippi-js_test.slp", "slippi-js_teams_time.slp")}
    assert split_by_game(list(names), 0.15, 0)[1] == ["slippi-js_teams_time.slp"]
    folder = _link_folder(tmp_path / "replays", names)
    summary = prepared.prepare(folder, tmp_path / "data")
    assert set(summary["examples"]) == {"train"}
    assert dict(summary["skipped"]) == {"slippi-js_teams_time.slp": "not a 1v1 game (teams)"}
    builder = prepared.load_builder(tmp_path / "data")
    assert prepared.read_trajectories(builder, prepared.VALIDATION) == []


def test_bad_input_is_a_clear_error(tmp_path):
    with pytest.raises(ReplayError, match="no such folder"):
        prepared.prepare(tmp_path / "missing", tmp_path / "data")
    with pytest.raises(ReplayError, match="holds no .slp"):
        prepared.prepare(tmp_path, tmp_path / "data")
    with pytest.raises(FileNotFoundError, match="keras-lstm prepare"):
        prepared.load_builder(tmp_path / "nothing")
    only_bad = _link_folder(tmp_path / "bad",
                            {"peppi_corrupt.slp": BAD, "libmelee_corrupt_game_1.slp": BAD})
    with pytest.raises(ValueError, match="no usable replay for training"):
        prepared.prepare(only_bad, tmp_path / "data2")


def test_prepare_command(tmp_path, replays_dir):
    folder = _link_folder(tmp_path / "replays",
                          {n: GAMES for n in ("peppi_transform.slp", "slippi-js_v2_test.slp", "slippi-js_teams_time.slp")})
    runner = CliRunner()
    args = ["prepare", "--replays", str(folder), "--data-dir", str(tmp_path / "data"), "--val-fraction", "0.4", "--no-progress"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"slippi_replays/val0.4-seed0:{features.FEATURE_VERSION}.0.0" in result.output and "skipped slippi-js_teams_time.slp" in result.output
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and "up to date" in result.output
    result = runner.invoke(app, ["prepare", "--replays", str(tmp_path / "nope"), "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "no such folder" in result.output


def test_seed_outside_32_bits_is_refused(tmp_path):
    for seed in (-1, 2**32):
        with pytest.raises(ValueError, match=f"--seed must be between 0 and 4294967295, got {seed}"):
            tfds_dataset.SlippiReplaysConfig.make(seed=seed)
    assert tfds_dataset.SlippiReplaysConfig.make(seed=2**32 - 1).seed == 2**32 - 1
    folder = _link_folder(tmp_path / "replays", {"peppi_buttons_abxy.slp": CLIPS})
    with pytest.raises(ValueError, match="--seed must be between"):
        prepared.prepare(folder, tmp_path / "data", seed=-1)
    result = CliRunner().invoke(app, ["prepare", "--replays", str(folder), "--data-dir", str(tmp_path / "data"), "--seed", "-1"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: --seed must be between 0 and 4294967295, got -1"
    assert not (tmp_path / "data").exists()


def test_a_data_dir_in_use_is_refused(tmp_path):
    folder = _link_folder(tmp_path / "replays", {"peppi_buttons_abxy.slp": CLIPS})
    data_dir = tmp_path / "data"
    with FolderLock(data_dir, "data dir"):
        with pytest.raises(FolderBusyError, match=f"data dir is in use by process {os.getpid()}"):
            prepared.prepare(folder, data_dir)
        result = CliRunner().invoke(app, ["prepare", "--replays", str(folder), "--data-dir", str(data_dir)])
        assert result.exit_code == 2 and result.output.strip().count("\n") == 0
        assert "data dir is in use by process" in result.output
    assert not list((data_dir).glob("slippi_replays"))


def test_unusable_entries_are_in_the_prepared_metadata(tmp_path):
    folder = _link_folder(tmp_path / "replays", {"peppi_buttons_abxy.slp": CLIPS, "peppi_dpad_udlr.slp": CLIPS})
    (folder / "archive.slpp").write_bytes(b"not a slippi replay")
    (folder / "gone.slp").symlink_to(folder / "deleted.slp")
    (folder / "loop.slp").symlink_to(folder / "loop.slp")
    summary = prepared.prepare(folder, tmp_path / "data", val_fraction=0.0)
    skipped = dict(summary["skipped"])
    assert set(skipped) == {"archive.slpp", "gone.slp", "loop.slp"}
    assert skipped["gone.slp"] == "dangling symbolic link" and skipped["loop.slp"] == "symbolic link loop"
    assert summary["files"] == 5 and summary["replays_used"] == 2
    assert summary["replays_skipped"] == summary["replays_unreadable"] == 3
    meta = prepared.load_builder(tmp_path / "data", 0.0).info.metadata
    assert meta["skipped"] == summary["skipped"]
    # The command names each as it reads it, progress bar on (stderr), and
    # keeps stdout for the summary.
    args = ["prepare", "--replays", str(folder), "--data-dir", str(tmp_path / "cli"), "--val-fraction", "0", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "skipped archive.slpp: peppi .slpp archive" in result.stderr
    assert "skipped loop.slp: symbolic link loop" in result.stderr
    assert json.loads(result.stdout)["skipped"] == summary["skipped"]
    # Only unusable entries: the one-line "no usable replay" error.
    for name in ("peppi_buttons_abxy.slp", "peppi_dpad_udlr.slp"):
        (folder / name).unlink()
    with pytest.raises(ValueError, match=r"no usable replay for training \(3 of 3 files skipped\)"):
        prepared.prepare(folder, tmp_path / "data2", val_fraction=0.0)


def _leftovers(data_dir: Path) -> list[Path]:
    return [p for p in data_dir.rglob("*") if p.name.startswith((".tmp-", "incomplete."))]


def _prepare_until_paused(folder: Path, data_dir: Path, stage: str, tmp_path: Path, exchange: bool = True, min_frames: int = 0) -> None:
    """Run prepare in a subprocess that stops at `stage` (the test hook), then
    kill it there with SIGKILL. `exchange=False`: as on a file system without
    an atomic exchange of two folders. `min_frames` > 0: other options than
    the dataset's, so it is prepared afresh (in place, as an update, when its
    manifest can be read; else built beside and swapped in)."""
    code = "from keras_lstm.data import dataset_swap, prepared\nfrom keras_lstm.data.filters import ReplayFilter\n"
    if not exchange:
        code += "dataset_swap.exchange = lambda a, b: False\n"
    code += f"prepared.prepare({str(folder)!r}, {str(data_dir)!r}, val_fraction=0.0, replay_filter=ReplayFilter({min_frames}))\n"
    kill_when_paused(code, stage, tmp_path)


def _read_all(data_dir: Path) -> tuple[dict, int]:
    builder = prepared.load_builder(data_dir, 0.0)
    trajectories = prepared.read_trajectories(builder, prepared.TRAIN)
    builder.leases.release()  # done reading: the next prepare may remove what it replaces
    return builder.info.metadata, len(trajectories)


@pytest.mark.slow  # a second TensorFlow process: ~5 s each, more on a busy machine
@pytest.mark.parametrize("stage,exchange,fresh", [
    ("generate", True, False),  # adding a file: while its part is generated
    ("manifest", True, False),  # adding a file: its part made, the manifest not yet written
    ("manifest", True, True),  # other options: prepared afresh in place, its manifest not yet written
    # A manifest that cannot be read, no atomic exchange: between setting the
    # old folder aside and moving the new one in.
    ("set-aside", False, "damaged"),
])
def test_a_kill_while_preparing_a_changed_folder_keeps_the_old_dataset(tmp_path, replays_dir, stage, exchange, fresh):
    folder = _link_folder(tmp_path / "replays", {"peppi_buttons_abxy.slp": CLIPS, "peppi_dpad_udlr.slp": CLIPS})
    data_dir = tmp_path / "data"
    first = prepared.prepare(folder, data_dir, val_fraction=0.0)
    (folder / "peppi_cstick_udlr.slp").symlink_to(CLIPS / "peppi_cstick_udlr.slp")
    manifest = prepared.version_path(data_dir, 0.0) / prepared.MANIFEST
    if fresh == "damaged":
        manifest.write_text(manifest.read_text().replace('"format": 1', '"format": 0'))
    old_manifest = manifest.read_bytes()
    _prepare_until_paused(folder, data_dir, stage, tmp_path, exchange, min_frames=1 if fresh is True else 0)
    # The old dataset, whole (put back by `load_builder` if it was set aside).
    if fresh == "damaged":
        with pytest.raises(prepared.DamagedDatasetError, match="written by another keras-lstm"):
            prepared.load_builder(data_dir, 0.0)
        assert manifest.read_bytes() == old_manifest
    else:
        meta, n = _read_all(data_dir)
        assert meta["files"] == first["files"] == 2 and n == first["trajectories"] == 2
        assert manifest.read_bytes() == old_manifest
    # A leftover of TFDS's own in-place generation (older versions) is stale too.
    config_dir = manifest.parent.parent
    (config_dir / "incomplete.ABC123_1.0.0").mkdir()
    assert _leftovers(data_dir)
    from keras_lstm.data.filters import ReplayFilter

    again = prepared.prepare(folder, data_dir, val_fraction=0.0, replay_filter=ReplayFilter(min_frames=1 if fresh is True else 0))
    assert again["status"] == ("prepared" if fresh else "updated") and again["files"] == 3
    assert again["files_parsed"] == (3 if fresh else 1)
    parts = {p.name for p in (manifest.parent / "parts").iterdir()}
    assert parts == {part["name"] for part in json.loads(manifest.read_text())["parts"]}
    meta, n = _read_all(data_dir)
    assert meta["files"] == 3 and n == 3
    assert _leftovers(data_dir) == []


def test_preparing_leaves_no_temporary_folder_behind(tmp_path, monkeypatch, replays_dir):
    import tempfile

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    folder = _link_folder(tmp_path / "replays", {"slippi-js_test.slp": GAMES, "libmelee_test_game_2.slp": GAMES})
    prepared.prepare(folder, tmp_path / "data", val_fraction=0.5)
    assert list(scratch.iterdir()) == []
