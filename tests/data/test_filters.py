"""Filters on games and players: parsed from the command line's forms, each
left-out game or player counted under its filter, and the same in prepare."""


import numpy as np
import pytest
from typer.testing import CliRunner

from keras_lstm.cli.main import app
from keras_lstm.data import features, prepared
from keras_lstm.data.filters import FILTERS, ReplayFilter
from keras_lstm.data.replays import read_game
from keras_lstm.data.trajectories import load_trajectories

from conftest import GAMES

SELF, OPPONENT, STAGE = (features.CATEGORICAL_COLUMNS.index(c) for c in ("self_character", "opponent_character", "stage"))


@pytest.fixture(scope="module")
def games(replays_dir):
    paths = sorted(GAMES.glob("*.slp"))
    return paths, load_trajectories(paths)


def test_options_are_parsed_by_name_alias_or_id_and_bad_ones_named():
    f = ReplayFilter.from_options(characters="Fox, falco,Captain Falcon,20", stages="BF,final_destination", min_slippi_version="3.7")
    assert f.characters == {2, 20, 0} and f.stages == {31, 32} and f.min_slippi_version == (3, 7, 0)
    assert ReplayFilter.from_options().active is False and f.active
    for kwargs, option in (
        ({"characters": "foxx"}, "--characters"),
        ({"opponents": "marth,?"}, "--opponents"),
        ({"stages": "hyrule castle"}, "--stages"),
        ({"min_slippi_version": "3.x"}, "--min-slippi-version"),
        ({"min_frames": -1}, "--min-frames"),
        # ids no game can hold are refused like unknown names (they matched nothing)
        ({"opponents": "999"}, "--opponents: no character has id 999"),
        ({"characters": "fox,33"}, "--characters: no character has id 33"),
        ({"stages": "21"}, "--stages: no stage has id 21"),
        ({"stages": "1"}, "--stages: no stage has id 1"),
    ):
        with pytest.raises(ValueError, match=option):
            ReplayFilter.from_options(**kwargs)
    edges = ReplayFilter.from_options(characters="0,32", opponents="26", stages="2,20,22,32")
    assert (edges.characters, edges.opponents, edges.stages) == ({0, 32}, {26}, {2, 20, 22, 32})


def test_every_filter_leaves_out_what_it_says_and_counts_it(games):
    paths, everything = games
    assert all(everything.filtered[name] == 0 for name in FILTERS)
    lengths = {t.source: len(t) for t in everything.trajectories}
    median = int(np.median(list(lengths.values())))
    short = load_trajectories(paths, replay_filter=ReplayFilter(min_frames=median))
    assert short.filtered["min_frames"] == sum(n < median for n in lengths.values()) > 0
    assert all(len(t) >= median for t in short.trajectories)

    versions = {str(p): tuple(read_game(p).start.slippi.version) for p in paths if str(p) in lengths}
    recent = load_trajectories(paths, replay_filter=ReplayFilter(min_slippi_version=(3, 0, 0)))
    assert recent.filtered["min_slippi_version"] == sum(v < (3, 0, 0) for v in versions.values()) > 0

    humans = load_trajectories(paths, replay_filter=ReplayFilter(humans_only=True))
    assert humans.filtered["humans_only"] > 0 and humans.cpu_players == 0 < everything.cpu_players

    stage = int(everything.trajectories[0].state_categorical[0, STAGE])
    on_stage = load_trajectories(paths, replay_filter=ReplayFilter(stages=frozenset({stage})))
    assert {int(t.state_categorical[0, STAGE]) for t in on_stage.trajectories} == {stage}
    assert on_stage.filtered["stages"] + on_stage.replays_used == everything.replays_used

    fox = load_trajectories(paths, replay_filter=ReplayFilter(characters=frozenset({2})))
    assert {int(t.state_categorical[0, SELF]) for t in fox.trajectories} == {2}
    assert fox.filtered["characters"] + len(fox.trajectories) == len(everything.trajectories)
    vs_fox = load_trajectories(paths, replay_filter=ReplayFilter(opponents=frozenset({2})))
    assert {int(t.state_categorical[0, OPPONENT]) for t in vs_fox.trajectories} == {2}
    assert vs_fox.filtered["opponents"] + len(vs_fox.trajectories) == len(everything.trajectories)
    assert fox.counts()["filtered_characters"] == fox.filtered["characters"]


def test_prepare_counts_what_it_left_out_and_redoes_when_the_filters_change(tmp_path, replays_dir):
    folder = tmp_path / "replays"
    folder.mkdir()
    for name in ("peppi_transform.slp", "slippi-js_v2_test.slp", "slippi-js_test.slp", "libmelee_test_game_2.slp"):
        (folder / name).symlink_to(GAMES / name)
    humans = ReplayFilter(humans_only=True)
    first = prepared.prepare(folder, tmp_path / "data", val_fraction=0.25, replay_filter=humans)
    direct = load_trajectories(sorted(folder.glob("*.slp")), replay_filter=humans)
    assert first["status"] == "prepared" and first["filtered_humans_only"] == direct.filtered["humans_only"] > 0
    assert prepared.prepare(folder, tmp_path / "data", val_fraction=0.25, replay_filter=humans)["status"] == "up to date"
    again = prepared.prepare(folder, tmp_path / "data", val_fraction=0.25)
    assert again["status"] == "prepared" and again["filtered_humans_only"] == 0
    assert again["cpu_players_not_imitated"] > 0


def test_train_filters_from_replays_and_refuses_them_with_a_prepared_dataset(tmp_path, replays_dir):
    runner = CliRunner()
    tiny = ["--temporal", "--embed-size", "8", "--hidden-size", "8", "--num-layers", "1", "--window-size", "10", "--epochs", "1",
            "--batch-size", "8", "--steps-per-epoch", "2", "--stride", "50"]
    out = runner.invoke(app, ["train", "--replays", str(GAMES), "--output", str(tmp_path / "run"), "--characters", "fox", *tiny])
    assert out.exit_code == 0, out.output
    assert "left out by the filters: characters" in out.output
    refused = runner.invoke(app, ["train", "--data-dir", str(tmp_path), "--output", str(tmp_path / "r2"), "--stages", "bf"])
    assert refused.exit_code == 2 and "keras-lstm prepare" in refused.output and len(refused.output.strip().splitlines()) == 1
