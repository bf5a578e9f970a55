"""Evaluation in one pass over each game, the state carried: the deployed form.

Windowed evaluation (`keras_lstm.evaluation.evaluate.evaluate_policy`) runs
every predicted frame's window again from the zero state: about
`window / stride` times the work, and a window per frame in memory. Here each
validation game runs once from its first frame with the state carried, as
the bot plays it (`keras_lstm.evaluation.deploy_eval.deployed_logits`), and
every frame but a game's first (which has no previous frame for the
repeat baseline) is predicted and scored.

The summary is `evaluate.summarize`'s (loss, accuracy, F1, change frames,
calibration, keep bias, each beside repeating's and the prior's), the same
whole summary for each group of players (`by_player`: seen in training,
unseen, or anonymous: a player the replay does not name), and a few figures
(`group_summary`) by character.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from keras_lstm.data import controller
from keras_lstm.data.features import PolicyArrays
from keras_lstm.data.melee_ids import character_name
from keras_lstm.data.players import is_anonymous
from keras_lstm.evaluation import baselines
from keras_lstm.evaluation.baselines import BaselineStats
from keras_lstm.evaluation.deploy_eval import deployed_logits
from keras_lstm.evaluation.evaluate import frame_losses, head_accuracy, predictions, summarize
from keras_lstm.evaluation.f1 import f1_scores

SEEN, UNSEEN, ANONYMOUS, UNKNOWN = "seen", "unseen", "anonymous", "unknown"


@dataclasses.dataclass
class Games:
    """Validation games as the policy sees them: one aligned array per
    trajectory, with who played it (`player_group`) and as whom."""

    arrays: list[PolicyArrays]
    player_groups: list[str]  # per trajectory: SEEN, UNSEEN or ANONYMOUS
    characters: list[str]  # per trajectory: the player's character

    def __len__(self) -> int:
        """Frames scored: every frame of a trajectory but its first."""
        return int(sum(max(0, len(a) - 1) for a in self.arrays))

    @classmethod
    def of(cls, arrays: list[PolicyArrays], trajectories: list, train_players: set | None = None) -> "Games":
        """`arrays[i]` aligned from `trajectories[i]`. A named player is seen
        when `train_players` (the keys of the training games' players, from
        a split by player) holds them, else unseen; without `train_players`
        (a split by game, which does not know) named players are "unknown",
        as are trajectories that do not say who played (a prepared
        dataset's). A player the replay does not name is anonymous."""
        groups = []
        for t in trajectories:
            key = getattr(t, "player", "")
            if is_anonymous(key):
                groups.append(ANONYMOUS)
            elif not key or train_players is None:  # a prepared dataset's trajectory, or a split by game
                groups.append(UNKNOWN)
            else:
                groups.append(SEEN if key in train_players else UNSEEN)
        # From the trajectory, not the inputs: a run with the game state hidden sees no character.
        chars = [character_name(int(t.state_categorical[0, 2])) if len(t) else "none" for t in trajectories]
        return cls(list(arrays), groups, chars)


def _scored(games: Games):
    """`(rows per trajectory, targets, previous)` of the scored frames."""
    rows = [np.arange(1, len(a)) for a in games.arrays]
    targets = {h: np.concatenate([a.targets[h][1:] for a in games.arrays]) for h in controller.HEADS}
    previous = {h: np.concatenate([a.targets[h][:-1] for a in games.arrays]) for h in controller.HEADS}
    return rows, targets, previous


# Games run side by side, this many at a time: the time is the longest game
# of each batch in steps, so one batch for a validation set of ~100 games.
MAX_BATCH = 128


def one_pass_logits(policy, games: Games, max_batch: int = MAX_BATCH) -> dict:
    """The logits of every scored frame, in `_scored`'s order, each game run
    once from its first frame with the state carried (the recurrence by the
    backbone's Keras layers: `bench evaluate`)."""
    per_game = deployed_logits(policy, games.arrays, max_batch=max_batch, impl="keras")
    return {h: np.concatenate([g[h][1:] for g in per_game]) for h in controller.HEADS}


def group_summary(logits: dict, targets: dict, previous: dict, stats: BaselineStats) -> dict:
    """The few figures each group of frames gets: the loss, accuracy and F1
    per head, each beside repeating's."""
    losses = frame_losses(logits, targets)
    predicted = predictions(logits)
    repeat = baselines.repeat_baseline(stats, targets, previous)
    return {
        "frames": int(len(losses["buttons"])),
        "loss": float(sum(v.mean() for v in losses.values())),
        "baseline_repeat_loss": repeat["loss"],
        "per_head_accuracy": head_accuracy(predicted, targets),
        "baseline_repeat_accuracy": repeat["per_head_accuracy"],
        "f1": f1_scores(predicted, targets),
        "baseline_repeat_f1": f1_scores(baselines.repeat_predictions(previous), targets),
    }


def _by(labels_per_game: list[str], rows: list[np.ndarray], logits, targets, previous, stats, summary=group_summary) -> dict:
    frame_labels = np.concatenate([np.full(len(r), label, dtype=object) for r, label in zip(rows, labels_per_game)])
    out = {}
    for label in sorted(set(labels_per_game)):
        mask = frame_labels == label
        if mask.any():
            pick = lambda d: {h: v[mask] for h, v in d.items()}  # noqa: E731
            out[label] = summary(pick(logits), pick(targets), pick(previous), stats)
    return out


def _full_group_summary(logits, targets, previous, stats) -> dict:
    """Everything the whole summary has, on one group's frames, with the
    group summary's names for the loss (`loss`, as `group_summary`)."""
    full = summarize(logits, targets, previous, stats)
    return {"loss": full["val_loss"], **full}


def evaluate_games(policy, games: Games, stats: BaselineStats, max_batch: int = MAX_BATCH) -> dict:
    """The summary reported by `train` and `evaluate` in one pass (see the
    module docstring)."""
    if len(games) == 0:
        raise ValueError("no frames to evaluate (every validation game is empty)")
    rows, targets, previous = _scored(games)
    logits = one_pass_logits(policy, games, max_batch)
    summary = {"evaluation": "one pass, state carried", **summarize(logits, targets, previous, stats)}
    # By player, everything (the unseen players' frames are the test of
    # playing like people never seen); by character, the few figures.
    summary["by_player"] = _by(games.player_groups, rows, logits, targets, previous, stats, _full_group_summary)
    summary["by_character"] = _by(games.characters, rows, logits, targets, previous, stats)
    summary["trajectories_by_player"] = {g: games.player_groups.count(g) for g in sorted(set(games.player_groups))}
    return summary


def one_pass_loss(policy, games: Games, max_batch: int = MAX_BATCH) -> dict:
    """Only the loss and per-head accuracy (what a training epoch reports as
    `val_loss` and `val_acc_<head>`), in one pass."""
    _, targets, _ = _scored(games)
    logits = one_pass_logits(policy, games, max_batch)
    losses = frame_losses(logits, targets)
    accuracy = head_accuracy(predictions(logits), targets)
    return {"val_loss": float(sum(v.mean() for v in losses.values())), **{f"val_acc_{h}": v for h, v in accuracy.items()}}


__all__ = ["ANONYMOUS", "SEEN", "UNKNOWN", "UNSEEN", "Games", "evaluate_games", "group_summary", "one_pass_logits", "one_pass_loss"]
