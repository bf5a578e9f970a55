"""Reading replays: rollback, ports, which players count, bad files."""

from pathlib import Path

import numpy as np
import pytest

from keras_lstm.data.features import game_to_trajectories
from keras_lstm.data.replays import (
    FIRST_PLAYABLE_FRAME,
    ReplayError,
    default_replays_dir,
    find_replays,
    last_record_index,
    read_game,
)
from keras_lstm.data.trajectories import load_trajectories

from conftest import BAD, CLIPS, GAMES


def test_last_record_index_keeps_the_last_record_of_each_frame():
    ids = np.array([0, 1, 2, 1, 2, 3, 2, 4])
    idx = last_record_index(ids)
    assert ids[idx].tolist() == [0, 1, 2, 3, 4]
    assert idx.tolist() == [0, 3, 6, 5, 7]


def test_rollback_replay_has_one_row_per_frame():
    path = GAMES / "slippi-js_rollbackFrameTest.slp"
    game = read_game(path)
    raw_ids = np.asarray(game.frames.id.to_numpy())
    assert len(raw_ids) == 13569  # frame records, rollbacks included
    trajectories, n_cpu = game_to_trajectories(game, path)
    assert n_cpu == 0 and len(trajectories) == 2
    distinct = np.unique(raw_ids)
    assert len(distinct) == 9277
    assert len(trajectories[0]) == int((distinct >= FIRST_PLAYABLE_FRAME).sum())


@pytest.mark.parametrize("name,ports", [("peppi_nintendont.slp", [1, 3]), ("slippi-js_v2_test.slp", [2, 3]), ("libmelee_test_game_2.slp", [1, 2])])
def test_players_on_any_ports(name, ports):
    trajectories, _ = game_to_trajectories(read_game(GAMES / name), name)
    assert sorted(t.port for t in trajectories) == ports
    a, b = trajectories
    # each perspective puts itself first: self columns of one are opponent columns of the other
    half = a.state_numeric.shape[1] // 2
    np.testing.assert_array_equal(a.state_numeric[:, :half], b.state_numeric[:, half:])
    np.testing.assert_array_equal(a.state_categorical[:, 0], b.state_categorical[:, 1])


def test_cpu_player_is_opponent_but_not_imitated():
    trajectories, n_cpu = game_to_trajectories(read_game(GAMES / "peppi_game.slp"), "peppi_game")
    assert n_cpu == 1
    assert [t.port for t in trajectories] == [0]


@pytest.mark.parametrize("name", ["slippi-js_doubles.slp", "slippi-js_teams_time.slp"])
def test_doubles_and_four_player_games_are_skipped_with_reason(name):
    with pytest.raises(ReplayError, match="not a 1v1 game"):
        game_to_trajectories(read_game(GAMES / name), name)


def test_every_bad_file_is_skipped_with_a_one_line_reason(capfd):
    paths = find_replays(BAD)
    seen = []
    report = load_trajectories(paths, on_skip=lambda p, r: seen.append((p, r)))
    assert report.replays_used == 0
    assert report.replays_skipped == len(paths) == len(seen) == 9
    for path, reason in seen:
        assert path.endswith(".slp") and reason and "\n" not in reason
    # the Rust panic in the parser must not spill a backtrace on stderr
    assert "stack backtrace" not in capfd.readouterr().err


def test_the_reasons_say_what_is_wrong_in_words(tmp_path):
    reasons = {}
    load_trajectories(find_replays(BAD), on_skip=lambda p, r: reasons.setdefault(Path(p).name, r))
    assert reasons["libmelee_corrupt_game_1.slp"] == "unreadable replay: not a Slippi replay (the file does not start as a .slp file does)"  # text
    assert reasons["libmelee_corrupt_game_2.slp"] == reasons["libmelee_corrupt_game_1.slp"]  # a PNG
    for name in ("slippi-js_incomplete.slp", "py-slippi_severed_metadata.slp"):
        assert reasons[name].startswith("unreadable replay: an unfinished recording (the replay's length was never written"), name
    for name in ("slippi-js_Event.slp", "slippi-js_Home-Run-Contest.slp"):
        assert reasons[name].startswith("unreadable replay: a game mode the parser does not read (OSError: "), name
    assert reasons["slippi-js_10-Man.slp"].startswith("unreadable replay: damaged replay data (PanicException: ")
    # a finished replay cut short: its length field says how much is missing
    data = (GAMES / "peppi_game.slp").read_bytes()
    length = int.from_bytes(data[11:15], "big")
    cut = tmp_path / "cut.slp"
    cut.write_bytes(data[:100_000])
    with pytest.raises(ReplayError, match=rf"the file is cut short \(it holds 99,985 of the replay's {length:,} bytes\) \(OSError: "):
        read_game(cut)
    # part of its event stream zeroed: events that do not exist
    damaged = tmp_path / "damaged.slp"
    damaged.write_bytes(data[:5000] + bytes(2000) + data[7000:])
    with pytest.raises(ReplayError, match=r"unreadable replay: damaged replay data \("):
        read_game(damaged)
    # the same replay with its length field zeroed, as Dolphin leaves a recording it has not finished
    unfinished = tmp_path / "unfinished.slp"
    unfinished.write_bytes(data[:11] + bytes(4) + data[15 : len(data) // 2])
    with pytest.raises(ReplayError, match="an unfinished recording"):
        read_game(unfinished)


def test_one_bad_file_loses_nothing_else(tmp_path):
    good = [GAMES / "peppi_game.slp", CLIPS / "peppi_buttons_abxy.slp"]
    paths = [BAD / "slippi-js_10-Man.slp", *good, BAD / "libmelee_corrupt_game_1.slp"]
    report = load_trajectories(paths)
    alone = load_trajectories(good)
    assert report.replays_skipped == 2 and report.replays_used == 2
    assert report.frames == alone.frames > 0


def test_empty_and_missing_inputs(tmp_path):
    with pytest.raises(ReplayError, match="no such folder"):
        find_replays(tmp_path / "missing")
    with pytest.raises(ReplayError, match="no .slp replays"):
        find_replays(tmp_path)
    empty = tmp_path / "empty.slp"
    empty.write_bytes(b"")
    with pytest.raises(ReplayError, match="empty file"):
        read_game(empty)


def test_max_frames_and_default_folder(monkeypatch, tmp_path):
    report = load_trajectories(find_replays(GAMES), max_frames=5000)
    assert report.frames == 5000
    monkeypatch.setenv("KERAS_LSTM_REPLAYS", str(tmp_path))
    assert default_replays_dir() == tmp_path
    monkeypatch.delenv("KERAS_LSTM_REPLAYS")
    assert default_replays_dir().name == "Slippi"


def _unusable_entries(folder):
    """A peppi archive, a dangling symbolic link and a symbolic link loop."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "archive.slpp").write_bytes(b"not a slippi replay")
    (folder / "gone.slp").symlink_to(folder / "deleted.slp")
    (folder / "loop.slp").symlink_to(folder / "loop.slp")
    return {
        "archive.slpp": "peppi .slpp archive, not a .slp replay",
        "gone.slp": "dangling symbolic link",
        "loop.slp": "symbolic link loop",
    }


def test_unusable_entries_are_named_and_counted_as_skipped(tmp_path):
    folder = tmp_path / "replays"
    expected = _unusable_entries(folder)
    (folder / "good.slp").symlink_to(CLIPS / "peppi_buttons_abxy.slp")
    paths = find_replays(folder)
    assert sorted(p.name for p in paths) == sorted([*expected, "good.slp"])
    seen = []
    report = load_trajectories(paths, on_skip=lambda p, r: seen.append((p, r)))
    assert report.replays_used == 1 and report.replays_skipped == 3
    assert report.counts()["replays_unreadable"] == 3
    assert seen == report.skipped
    for path, reason in report.skipped:
        name = path.rsplit("/", 1)[-1]
        assert reason.startswith(expected[name]), (name, reason)
        assert "\n" not in reason
    assert "slp -f slippi" in dict(seen)[str(folder / "archive.slpp")]
    with pytest.raises(ReplayError, match="symbolic link loop"):
        read_game(folder / "loop.slp")


def test_a_folder_of_only_unusable_entries_names_each_of_them(tmp_path):
    expected = _unusable_entries(tmp_path)
    report = load_trajectories(find_replays(tmp_path))
    assert report.replays_used == 0
    assert sorted(p.rsplit("/", 1)[-1] for p, _ in report.skipped) == sorted(expected)
    # A single .slpp file given as the folder gets the same reason.
    with pytest.raises(ReplayError, match="peppi .slpp archive"):
        find_replays(tmp_path / "archive.slpp")
