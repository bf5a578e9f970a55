"""One-pass evaluation: each game once from its first frame, the state carried."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest

from keras_lstm.data import controller, features
from keras_lstm.data.features import PolicyArrays
from keras_lstm.evaluation import baselines, one_pass
from keras_lstm.model.policy import build_policy


def _arrays(length: int, rng, character: int = 2) -> PolicyArrays:
    targets = {"buttons": (rng.random((length, 8)) < 0.2).astype(np.float32)}
    for head in controller.CLASS_HEADS:
        targets[head] = rng.integers(0, controller.HEAD_CLASSES[head], length).astype(np.int32)
    categorical = rng.integers(0, 30, (length, features.CATEGORICAL_SIZE)).astype(np.int32)
    categorical[:, 2] = character
    return PolicyArrays(rng.normal(size=(length, features.NUMERIC_SIZE)).astype(np.float32), categorical, targets)


@dataclasses.dataclass
class _Traj:
    player: str
    state_categorical: np.ndarray

    def __len__(self):
        return len(self.state_categorical)


@pytest.fixture(scope="module")
def setup():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    arrays = [_arrays(n, rng, c) for n, c in ((90, 2), (31, 20), (150, 20))]
    policy = build_policy(embed_size=8, hidden_size=12, num_layers=2)
    players = ("A#1", "B#2", "game:x.slp:0")
    games = one_pass.Games.of(arrays, [_Traj(p, a.categorical) for p, a in zip(players, arrays)], train_players={"A#1"})
    targets = {h: np.concatenate([a.targets[h][1:] for a in arrays]) for h in controller.HEADS}
    previous = {h: np.concatenate([a.targets[h][:-1] for a in arrays]) for h in controller.HEADS}
    stats = baselines.fit_baselines(targets, previous)
    return policy, games, stats


def test_games_know_who_played_and_as_whom(setup):
    _, games, _ = setup
    assert games.player_groups == [one_pass.SEEN, one_pass.UNSEEN, one_pass.ANONYMOUS]
    assert games.characters == ["fox", "falco", "falco"]
    assert len(games) == 89 + 30 + 149


def test_one_pass_logits_are_the_frame_by_frame_step(setup):
    policy, games, _ = setup
    logits = one_pass.one_pass_logits(policy, games, max_batch=2)  # two batches: padding after the short game
    offset = 0
    for a in games.arrays:
        state = policy.initial_state(1)
        stepped = {h: [] for h in controller.HEADS}
        for t in range(len(a)):
            out, state = policy.step({"numeric": a.numeric[t : t + 1], "categorical": a.categorical[t : t + 1]}, state)
            for h in controller.HEADS:
                stepped[h].append(np.asarray(out[h])[0])
        n = len(a) - 1
        for h in controller.HEADS:
            np.testing.assert_allclose(logits[h][offset : offset + n], np.stack(stepped[h])[1:], rtol=1e-4, atol=1e-5)
        offset += n


def test_the_summary_splits_every_frame_into_groups(setup):
    policy, games, stats = setup
    summary = one_pass.evaluate_games(policy, games, stats)
    assert summary["evaluation"] == "one pass, state carried"
    assert summary["frames"] == len(games)
    assert set(summary["by_player"]) == {"seen", "unseen", "anonymous"}
    assert sum(g["frames"] for g in summary["by_player"].values()) == len(games)
    assert {k: v["frames"] for k, v in summary["by_character"].items()} == {"fox": 89, "falco": 179}
    weighted = sum(g["loss"] * g["frames"] for g in summary["by_player"].values()) / len(games)
    assert weighted == pytest.approx(summary["val_loss"], rel=1e-9)
    for key in ("f1", "baseline_repeat_f1", "baseline_prior_f1"):
        assert set(summary[key]) >= set(controller.HEADS)
    repeat = sum(g["baseline_repeat_loss"] * g["frames"] for g in summary["by_player"].values()) / len(games)
    assert repeat == pytest.approx(summary["baseline_repeat_loss"], rel=1e-9)
    # What each epoch reports is the same loss.
    assert one_pass.one_pass_loss(policy, games)["val_loss"] == pytest.approx(summary["val_loss"], rel=1e-6)


def test_characters_come_from_the_game_even_when_the_inputs_hide_it(setup):
    _, games, _ = setup
    hidden = [dataclasses.replace(a, categorical=np.zeros_like(a.categorical)) for a in games.arrays]
    trajectories = [_Traj("A#1", a.categorical) for a in games.arrays]
    assert one_pass.Games.of(hidden, trajectories).characters == ["fox", "falco", "falco"]
