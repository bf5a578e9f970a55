"""Splitting by player: no validation player is ever in a training game."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from keras_lstm.data.players import is_anonymous, read_player_keys
from keras_lstm.data.replays import find_replays
from keras_lstm.data.split import split_by_player

GAMES = Path(__file__).resolve().parents[2].parent / "shared" / "replays" / "games"


def _synthetic(seed: int = 0, games: int = 300) -> dict:
    """A collection like the corpus: one collector in most games, many
    opponents, some players in several games, some games unnamed."""
    rng = np.random.default_rng(seed)
    out = {}
    for g in range(games):
        name = f"/r/game{g:03d}.slp"
        if g % 9 == 0:
            out[name] = []  # unreadable, or nobody named
        elif g % 4:
            out[name] = ["HUB#1", f"P{rng.integers(0, 80)}#2"]
        else:
            out[name] = [f"P{rng.integers(0, 80)}#2", f"P{rng.integers(0, 80)}#2"]
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_validation_player_is_in_a_training_game(seed):
    players_of = _synthetic(seed)
    split = split_by_player(players_of, 0.15, seed)
    held_out = set(split.val_players)
    for path in split.train_files:
        assert not held_out & set(players_of[path]), path
    assert not held_out & set(split.train_players)
    assert sorted(split.train_files + split.val_files) == sorted(players_of)
    # Every validation game has a held-out player; the share is the asked one, within one game.
    for path in split.val_files:
        keys = players_of[path] or [f"game:{Path(path).name}:0"]
        assert held_out & set(keys), path
    assert abs(len(split.val_files) - round(0.15 * len(players_of))) <= 1
    assert "HUB#1" in split.train_players  # in more games than validation may hold: it always trains


def test_the_split_is_deterministic_and_moves_with_the_seed():
    players_of = _synthetic()
    a, b = split_by_player(players_of, 0.15, 0), split_by_player(players_of, 0.15, 0)
    assert a == b
    assert split_by_player(players_of, 0.15, 1).val_files != a.val_files


def test_counts_name_the_players_on_each_side():
    split = split_by_player(_synthetic(), 0.15, 0)
    counts = split.counts()
    assert counts["split_by"] == "player"
    assert counts["val_players"] == len([k for k in split.val_players if not is_anonymous(k)])
    assert counts["train_players"] + counts["train_anonymous_players"] == len(split.train_players)


def test_no_validation_without_a_fraction_or_with_one_game():
    assert split_by_player(_synthetic(), 0.0, 0).val_files == []
    assert split_by_player({"/r/a.slp": ["A#1", "B#1"]}, 0.5, 0).val_files == []
    with pytest.raises(ValueError, match="val_fraction"):
        split_by_player(_synthetic(), 1.0, 0)


def test_on_real_replays_a_held_out_player_takes_every_game_of_theirs():
    paths = find_replays(GAMES)
    players_of = {str(p): read_player_keys(p) for p in paths}
    shared = [p for p, keys in players_of.items() if "OPTI＃882" in keys]
    assert len(shared) == 2  # slippi-js_techTest and slippi-js_techTester
    held_out_once = False
    for seed in range(40):
        split = split_by_player(players_of, 0.3, seed)
        held_out = set(split.val_players)
        assert all(not held_out & set(players_of[p]) for p in split.train_files)
        if "OPTI＃882" in held_out:
            held_out_once = True
            assert all(p in split.val_files for p in shared)
    assert held_out_once


def test_player_keys_come_from_codes_names_and_tags_else_the_game():
    keys = {p.name: read_player_keys(p) for p in find_replays(GAMES)}
    assert keys["py-slippi_v3.14.0.slp"] == ["ABCD＃123", "EFGH＃456"]  # connect codes
    assert keys["peppi_netplay_name.slp"] == ["Player1", "metonym"]  # netplay names, before connect codes
    assert keys["slippi-js_timer_limit.slp"][0] == "ＴＩＭＥ"  # an in-game tag
    assert all(is_anonymous(k) for k in keys["peppi_game.slp"])  # nobody named: the game
    assert read_player_keys(GAMES.parent / "bad" / "peppi_corrupt.slp") == []  # unreadable: placed by its name, skipped when read


def test_a_training_sample_keeps_the_validation_games_and_counts_its_own_players():
    from keras_lstm.config import TrainConfig
    from keras_lstm.training.inputs import replay_paths, split_files

    config = TrainConfig.from_flat(replays=str(GAMES), split_by="player", val_fraction=0.3)
    train, val, counts, players = split_files(config, replay_paths(config))
    few_train, few_val, few_counts, few_players = split_files(config.replace(train_games=3), replay_paths(config))
    assert few_val == val and len(few_train) == 3 and set(few_train) <= set(train)
    assert set(few_players) == {k for f in few_train for k in read_player_keys(f)}
    assert few_counts["train_games"] == 3
    assert few_counts["train_players"] + few_counts["train_anonymous_players"] == len(few_players) < len(players)
