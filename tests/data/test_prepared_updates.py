"""A prepared dataset kept up to date: added files parsed alone into new
parts, a changed or removed file's part made again, every file's split kept;
the part plan; and parts built by Apache Beam's workers equal to parts built
in this process."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from keras_lstm.data import parts, prepared
from keras_lstm.data.filters import ReplayFilter
from keras_lstm.data.split import held_out_alone, split_by_game

from conftest import BAD, GAMES, assert_prepared_reads_as_parsed, kill_when_paused

tfds.disable_progress_bar()

FIRST = ("peppi_transform.slp", "slippi-js_v2_test.slp", "slippi-js_test.slp", "libmelee_test_game_2.slp")
LATER = ("slippi-js_id_2_to_21.slp", "py-slippi_v3.14.0.slp")


def _link(folder: Path, names, base: Path = GAMES) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).symlink_to(base / name)


def _stamps(version: Path, part: str) -> dict:
    return {p: p.stat().st_mtime_ns for p in (version / "parts" / part).rglob("*")}


def test_added_files_are_parsed_alone_into_a_new_part_and_old_splits_stay(tmp_path, replays_dir):
    folder, data_dir = tmp_path / "replays", tmp_path / "data"
    _link(folder, FIRST)
    first = prepared.prepare(folder, data_dir, val_fraction=0.5, workers=1)
    version = prepared.version_path(data_dir, 0.5)
    before = assert_prepared_reads_as_parsed(data_dir, 0.5)
    # The first prepare splits as `train --replays` does.
    train, val = split_by_game([str(folder / n) for n in FIRST], 0.5, 0)
    assert before["val_files"] == [Path(p).name for p in val] and before["train_files"] == [Path(p).name for p in train]
    stamps = _stamps(version, "part-00000")

    _link(folder, LATER)
    seen = []
    update = prepared.prepare(folder, data_dir, val_fraction=0.5, workers=1, on_file=lambda name, reason: seen.append(name))
    assert update["status"] == "updated" and update["files_parsed"] == update["files_added"] == len(LATER)
    assert sorted(seen) == sorted(LATER)  # nothing else was read
    assert update["parts"] == 2 and _stamps(version, "part-00000") == stamps  # the old part untouched
    after = assert_prepared_reads_as_parsed(data_dir, 0.5)
    for name in FIRST:  # no file moved
        assert (name in after["val_files"]) == (name in before["val_files"])
    for name in LATER:  # a new file goes by its own hash
        assert (name in after["val_files"]) == held_out_alone(name, 0.5, 0)
    assert sum(update["examples"].values()) == sum(first["examples"].values()) + 4
    assert prepared.prepare(folder, data_dir, val_fraction=0.5, workers=1)["status"] == "up to date"


def test_a_changed_or_removed_file_remakes_only_its_part(tmp_path, replays_dir, monkeypatch):
    monkeypatch.setattr(prepared, "PART_FILES", 2)  # four files: two parts
    folder, data_dir = tmp_path / "replays", tmp_path / "data"
    _link(folder, FIRST)
    prepared.prepare(folder, data_dir, val_fraction=0.0, workers=1)
    version = prepared.version_path(data_dir, 0.0)
    manifest = prepared.read_manifest(version)
    assert [len(p["files"]) for p in manifest["parts"]] == [2, 2]
    first_part, second_part = (p["name"] for p in manifest["parts"])
    kept = _stamps(version, second_part)
    changed = manifest["parts"][0]["files"][0][0]

    # Changed: the link now points at another game (another size and time).
    (folder / changed).unlink()
    (folder / changed).symlink_to(GAMES / LATER[0])
    seen = []
    update = prepared.prepare(folder, data_dir, val_fraction=0.0, workers=1, on_file=lambda name, reason: seen.append(name))
    assert update["status"] == "updated" and update["files_changed"] == 1 and update["files_parsed"] == 2
    assert sorted(seen) == sorted(f[0] for f in manifest["parts"][0]["files"])
    names = [p["name"] for p in prepared.read_manifest(version)["parts"]]
    assert names[1] == second_part and names[0] != first_part  # remade in its place, the other kept
    assert not (version / "parts" / first_part).exists() and _stamps(version, second_part) == kept
    assert_prepared_reads_as_parsed(data_dir, 0.0)

    # Removed: both files of the remade part; it goes, the other stays.
    for name, *_ in prepared.read_manifest(version)["parts"][0]["files"]:
        (folder / name).unlink()
    update = prepared.prepare(folder, data_dir, val_fraction=0.0, workers=1)
    assert update["files_removed"] == 2 and update["files_parsed"] == 0 and update["parts"] == 1
    assert [p["name"] for p in prepared.read_manifest(version)["parts"]] == [second_part]
    assert _stamps(version, second_part) == kept
    meta = assert_prepared_reads_as_parsed(data_dir, 0.0)
    assert meta["files"] == 2


def test_a_part_of_unusable_files_only_is_listed_without_data(tmp_path, replays_dir):
    folder, data_dir = tmp_path / "replays", tmp_path / "data"
    _link(folder, FIRST[:2])
    prepared.prepare(folder, data_dir, val_fraction=0.0, workers=1)
    _link(folder, ("peppi_corrupt.slp",), BAD)
    update = prepared.prepare(folder, data_dir, val_fraction=0.0, workers=1)
    assert update["status"] == "updated" and update["replays_unreadable"] == 1
    assert dict(update["skipped"]).keys() == {"peppi_corrupt.slp"}
    last = prepared.read_manifest(prepared.version_path(data_dir, 0.0))["parts"][-1]
    assert last["examples"] == {} and not (prepared.version_path(data_dir, 0.0) / "parts" / last["name"]).exists()
    assert_prepared_reads_as_parsed(data_dir, 0.0)


def test_the_plan_bounds_parts_and_spreads_them_over_workers(tmp_path, monkeypatch):
    monkeypatch.setattr(prepared, "PART_FILES", 10)
    listing = {f"g{i:03d}.slp": (100 + i, i) for i in range(45)}
    plan = prepared.plan_parts(None, listing, tmp_path, 0.15, 0, ReplayFilter())
    assert plan.files_to_parse == 45 and plan.specs == []  # cut into parts once the workers are known
    plan.add_new_parts(workers=1)
    sizes = [len(s.files) for s in plan.specs]
    assert sizes == [9, 9, 9, 9, 9] and plan.files_to_parse == 45
    files = [f[0] for s in plan.specs for f in s.files]
    assert files == sorted(listing)  # contiguous: reading order is name order
    _, val = split_by_game([str(tmp_path / n) for n in listing], 0.15, 0)
    assert {f[0] for s in plan.specs for f in s.files if f[1] == prepared.VALIDATION} == {Path(p).name for p in val}
    # Few files, several workers: a part each.
    few = prepared.plan_parts(None, dict(list(listing.items())[:6]), tmp_path, 0.15, 0, ReplayFilter()).add_new_parts(workers=4)
    assert [len(s.files) for s in few.specs] == [2, 2, 1, 1]
    assert len({s.name for s in plan.specs}) == 5


def test_more_workers_without_apache_beam_is_one_clear_error(tmp_path, monkeypatch, replays_dir):
    monkeypatch.setitem(sys.modules, "apache_beam", None)  # import fails as if not installed
    assert not parts.beam_available()
    folder = tmp_path / "replays"
    _link(folder, FIRST[:2])
    with pytest.raises(ValueError, match=r"needs Apache Beam: pip install 'keras-lstm\[beam\]'"):
        prepared.prepare(folder, tmp_path / "data", workers=2)
    # Without Beam the default is one process, whatever the number of files.
    assert prepared.choose_workers(None, 10**6, ()) == 1
    with pytest.raises(ValueError, match="--workers must be >= 1"):
        prepared.choose_workers(0, 5, ())


@pytest.mark.slow  # Beam's workers each start Python and TensorFlow: ~10 s
def test_parts_built_by_beam_workers_equal_parts_built_here(tmp_path, replays_dir):
    if not parts.beam_available():
        pytest.skip("Apache Beam is not installed (the beam extra)")
    folder = tmp_path / "replays"
    _link(folder, FIRST + LATER)
    _link(folder, ("peppi_corrupt.slp",), BAD)
    here = prepared.prepare(folder, tmp_path / "here", workers=1)
    seen = []
    beam = prepared.prepare(folder, tmp_path / "beam", workers=2, on_file=lambda name, reason: seen.append((name, reason)))
    assert beam["workers"] == 2 and beam["parts"] == 2 and here["parts"] == 1
    # Each file reported once, the unreadable one with its reason.
    assert sorted(n for n, _ in seen) == sorted(FIRST + LATER + ("peppi_corrupt.slp",))
    assert "unreadable" in dict(seen)["peppi_corrupt.slp"]
    for key in ("examples", "counts", "skipped", "files", "frames_loaded"):
        assert beam[key] == here[key], key
    a, b = prepared.load_builder(tmp_path / "here"), prepared.load_builder(tmp_path / "beam")
    for split in (prepared.TRAIN, prepared.VALIDATION):
        for x, y in zip(prepared.read_trajectories(a, split), prepared.read_trajectories(b, split), strict=True):
            assert (x.source, x.port) == (y.source, y.port)
            np.testing.assert_array_equal(x.state_numeric, y.state_numeric)
    assert not any(p.name == parts.PROGRESS_FOLDER for p in (tmp_path / "beam").rglob("*"))


def test_a_damaged_manifest_is_named_by_readers_and_prepared_afresh(tmp_path, replays_dir):
    folder, data_dir = tmp_path / "replays", tmp_path / "data"
    _link(folder, FIRST[:2])
    first = prepared.prepare(folder, data_dir, val_fraction=0.0, workers=1)
    manifest = prepared.version_path(data_dir, 0.0) / prepared.MANIFEST
    manifest.write_text('{"format": 1, "parts": [')
    with pytest.raises(ValueError, match=r"manifest.json: not a valid prepared dataset manifest"):
        prepared.load_builder(data_dir, 0.0)
    again = prepared.prepare(folder, data_dir, val_fraction=0.0, workers=1)
    assert again["status"] == "prepared" and again["examples"] == first["examples"]
    assert_prepared_reads_as_parsed(data_dir, 0.0)


@pytest.mark.slow  # Beam's workers start Python: ~10 s
def test_a_killed_beam_prepare_takes_its_workers_along_and_loses_nothing(tmp_path, replays_dir):
    import time

    from keras_lstm.files import atomic

    if not parts.beam_available():
        pytest.skip("Apache Beam is not installed (the beam extra)")
    folder, data_dir = tmp_path / "replays", tmp_path / "data"
    _link(folder, FIRST)
    first = prepared.prepare(folder, data_dir, val_fraction=0.0, workers=1)
    _link(folder, LATER)
    # A worker stops in the middle of its part (the hook is inherited); then
    # the launching prepare is killed.
    code = f"from keras_lstm.data import prepared\nprepared.prepare({str(folder)!r}, {str(data_dir)!r}, val_fraction=0.0, workers=2)\n"
    worker, launcher = kill_when_paused(code, "generate", tmp_path)
    assert worker != launcher  # a worker process paused, not prepare itself
    deadline = time.monotonic() + 60
    while atomic.pid_alive(worker):  # its control channel closed: it exits
        assert time.monotonic() < deadline, f"Beam worker {worker} outlived the killed prepare"
        time.sleep(0.1)
    meta = assert_prepared_reads_as_parsed(data_dir, 0.0)  # the old dataset, whole
    assert meta["files"] == first["files"]
    again = prepared.prepare(folder, data_dir, val_fraction=0.0, workers=1)
    assert again["status"] == "updated" and again["files_parsed"] == len(LATER)
    assert not [p for p in data_dir.rglob("*") if p.name.startswith(".tmp-")]


@pytest.mark.slow  # Beam's workers start Python: ~10 s
def test_beam_options_run_the_parts_on_the_runner_they_name(tmp_path, replays_dir):
    """The cluster path's plumbing, on Beam's own local runner: the options
    go to Beam as given (no runner of ours), and the dataset is the same."""
    from typer.testing import CliRunner

    from keras_lstm.cli.main import app

    if not parts.beam_available():
        pytest.skip("Apache Beam is not installed (the beam extra)")
    folder = tmp_path / "replays"
    _link(folder, FIRST)
    here = prepared.prepare(folder, tmp_path / "here", workers=1)
    options = "--runner=DirectRunner --direct_running_mode=multi_processing --direct_num_workers=2"
    result = CliRunner().invoke(app, ["prepare", "--replays", str(folder), "--data-dir", str(tmp_path / "beam"), "--beam-options", options,
                                      "--no-progress", "--json"])
    assert result.exit_code == 0, result.output
    import json

    summary = json.loads(result.stdout)
    assert summary["parsed_by"] == f"on Apache Beam ({options})"
    for key in ("examples", "counts", "skipped", "files", "frames_loaded"):
        assert summary[key] == here[key], key


def test_progress_logs_carry_any_file_name_back(tmp_path):
    """A worker's progress line names the file whatever its name holds; the
    follower reads complete lines only, each once."""
    odd = ["tab\there.slp", "new\nline.slp", "not-utf8-\udcff.slp", "plain.slp"]
    log, seen = tmp_path / "part-00000.log", []
    follower = parts._ProgressFollower(tmp_path, lambda name, reason: seen.append((name, reason)))
    parts._log_file(log, odd[0], None)
    parts._log_file(log, odd[1], "unreadable: bad\tfile")
    with open(log, "a", encoding="ascii") as out:
        out.write('["half a line')  # still being written
    follower.poll()
    assert seen == [(odd[0], None), (odd[1], "unreadable: bad\tfile")]
    with open(log, "a", encoding="ascii") as out:
        out.write('.slp", null]\n')
    parts._log_file(log, odd[2], None)
    parts._log_file(log, odd[3], None)
    follower.poll()
    assert seen[2:] == [("half a line.slp", None), (odd[2], None), (odd[3], None)]


def test_a_reader_keeps_its_parts_across_prepares_until_it_lets_go(tmp_path, replays_dir, monkeypatch):
    """Through the load path training uses (`prepared_inputs` ->
    `load_builder`): a reader that opened the dataset reads it to the end,
    again and again, while prepare replaces every part it holds (a file
    removed, one changed, then other options: prepared afresh). Its parts
    are removed by the first prepare after it lets go."""
    from keras_lstm.training import inputs
    from keras_lstm.training.train import TrainConfig

    monkeypatch.setattr(prepared, "PART_FILES", 2)
    folder, data_dir = tmp_path / "replays", tmp_path / "data"
    _link(folder, FIRST)
    prepared.prepare(folder, data_dir, val_fraction=0.0, workers=1)
    version = prepared.version_path(data_dir, 0.0)
    held = [p["name"] for p in prepared.read_manifest(version)["parts"]]
    config = TrainConfig.from_flat(replays="", data_dir=str(data_dir), val_fraction=0.0, window_size=10, stride=40, batch_size=32)
    readers = []
    load = prepared.load_builder
    monkeypatch.setattr(prepared, "load_builder", lambda *args: readers.append(load(*args)) or readers[-1])
    data = inputs.prepared_inputs(config, shuffle_buffer=32, example_buffer=1)  # little read ahead
    batches = iter(data.make_train_dataset())
    next(batches)  # reading

    (folder / FIRST[0]).unlink()
    (folder / FIRST[2]).unlink()
    (folder / FIRST[2]).symlink_to(GAMES / LATER[0])
    update = prepared.prepare(folder, data_dir, val_fraction=0.0, workers=1)
    fresh = prepared.prepare(folder, data_dir, val_fraction=0.0, workers=1, replay_filter=ReplayFilter(min_frames=1))
    # The stream repeats, each pass over the examples opening the files again
    # (without the hold: NotFoundError after 3 or 4 passes read ahead).
    for _ in range(10 * data.steps_per_epoch):
        next(batches)
    assert update["status"] == "updated" and update["parts_held_by_readers"] == held
    assert fresh["status"] == "prepared" and fresh["files_parsed"] == len(FIRST) - 1
    assert fresh["parts_held_by_readers"] == held  # kept, and the update's own parts removed

    readers[0].leases.release()  # the reader lets go (as when its process ends)
    again = prepared.prepare(folder, data_dir, val_fraction=0.0, workers=1, replay_filter=ReplayFilter(min_frames=1))
    assert again["status"] == "up to date" and again["parts_held_by_readers"] == []
    assert {p.name for p in (version / "parts").iterdir()} == {p["name"] for p in prepared.read_manifest(version)["parts"]}
    assert_prepared_reads_as_parsed(data_dir, 0.0)


def test_a_reader_that_comes_while_a_part_is_removed_reads_the_new_manifest(tmp_path, replays_dir, monkeypatch):
    """The other interleaving, stepped by hand: a reader that read the old
    manifest holds its parts only after prepare removed one; it finds the
    manifest changed and reads the new one."""
    folder, data_dir = tmp_path / "replays", tmp_path / "data"
    _link(folder, FIRST[:2])
    prepared.prepare(folder, data_dir, val_fraction=0.0, workers=1)
    version = prepared.version_path(data_dir, 0.0)
    old = prepared.read_manifest(version)
    (folder / FIRST[0]).unlink()
    prepared.prepare(folder, data_dir, val_fraction=0.0, workers=1)  # no reader: the old part is gone
    assert prepared._hold_listed_parts(version, old) is None
    builder = prepared.load_builder(data_dir, 0.0)
    assert builder.info.metadata["files"] == 1 and len(builder.leases.fds) == 1


def test_unknown_beam_options_are_refused_before_any_work(tmp_path, replays_dir):
    from typer.testing import CliRunner

    from keras_lstm.cli.main import app

    if not parts.beam_available():
        pytest.skip("Apache Beam is not installed (the beam extra)")
    folder = tmp_path / "replays"
    _link(folder, FIRST[:1])
    for options, message in (
        ("--runner=FlinkRunner --flink_mastr=host:8081", "Apache Beam has no option --flink_mastr (did you mean --flink_master?)"),
        ("--runner=FlinkRunner --flink-master=host:8081", "Apache Beam has no option --flink-master (did you mean --flink_master?)"),
        ("--direct_num_workers=two", "argument --direct_num_workers: invalid int value: 'two'"),
    ):
        with pytest.raises(ValueError, match=re.escape(f"--beam-options: {message}")):
            prepared.prepare(folder, tmp_path / "data", beam_options=options.split())
        result = CliRunner().invoke(app, ["prepare", "--replays", str(folder), "--data-dir", str(tmp_path / "data"), "--beam-options", options])
        assert result.exit_code == 2 and result.output.strip() == f"error: --beam-options: {message}", result.output
    assert not (tmp_path / "data").exists()  # nothing made
    parts.check_beam_options(["--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"])


def test_workers_are_capped_at_the_parts_to_build(tmp_path, replays_dir, monkeypatch):
    used = []
    build = parts.build_parts

    def build_here(specs, parts_dir, workers=1, beam_options=(), on_file=None):
        used.append((workers, len(specs)))
        return build(specs, parts_dir, 1, beam_options, on_file)

    monkeypatch.setattr(parts, "build_parts", build_here)
    folder = tmp_path / "replays"
    _link(folder, FIRST[:3])
    summary = prepared.prepare(folder, tmp_path / "data", workers=64)
    assert used == [(3, 3)] and summary["workers"] == 3
    _link(folder, LATER[:1])
    summary = prepared.prepare(folder, tmp_path / "data", workers=64)
    assert used[1] == (1, 1) and summary["workers"] == 1 and summary["parsed_by"] == "in this process"
