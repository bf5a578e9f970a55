"""The two baselines every reported loss is compared with, on the same frames.

- class prior: each head predicts the training split's class frequencies
  (Laplace-smoothed), whatever the game state;
- repeat previous input: each head predicts the player's previous controller
  value. Melee inputs persist across frames, so this is very strong. To give
  it a finite cross-entropy it keeps probability 1 - eps on the previous
  value and spreads eps by the prior, with eps per head the training split's
  rate of change (fitted on training frames, like the model).

Losses are in nats, summed over heads like the policy's loss. On change
frames (the input differs from the previous frame's) the prior scores the
rate at which the new value is its mode, and repeating scores 0.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from keras_lstm.data import controller
from keras_lstm.evaluation.change_frames import change_frame_accuracy

_MIN_PROB = 1e-6


@dataclasses.dataclass
class BaselineStats:
    """What the baselines learn from the training split."""

    button_prior: list  # [8] P(pressed)
    class_prior: dict  # head -> [classes]
    change_rate: dict  # head -> eps ("buttons" -> [8])

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "BaselineStats":
        return cls(**data)


class BaselineAccumulator:
    """The baselines' statistics, streamed: `add` the targets at predicted
    frames and the controller one frame earlier, chunk by chunk; `stats()`
    fits them on everything added (`fit_baselines` is one `add`, so the two
    give the same numbers)."""

    def __init__(self):
        self.frames = 0
        self.buttons_on = np.zeros(len(controller.BUTTONS), np.float64)
        self.buttons_changed = np.zeros(len(controller.BUTTONS), np.int64)
        self.class_counts = {h: np.zeros(controller.HEAD_CLASSES[h], np.int64) for h in controller.CLASS_HEADS}
        self.changed = {h: 0 for h in controller.CLASS_HEADS}

    def add(self, targets: dict, previous: dict) -> None:
        buttons = np.asarray(targets["buttons"], np.float64)
        self.frames += len(buttons)
        self.buttons_on += buttons.sum(0)
        self.buttons_changed += (buttons != np.asarray(previous["buttons"])).sum(0)
        for head in controller.CLASS_HEADS:
            classes = controller.HEAD_CLASSES[head]
            values = np.asarray(targets[head])
            self.class_counts[head] += np.bincount(values, minlength=classes)[:classes]
            self.changed[head] += int(np.sum(values != np.asarray(previous[head])))

    def stats(self) -> BaselineStats:
        """Laplace-smoothed priors, and change rates clipped to [1e-4, 1]."""
        if self.frames == 0:
            raise ValueError("no training frames to fit the baselines on")
        n = self.frames
        button_prior = (self.buttons_on + 1) / (n + 2)
        class_prior, change = {}, {}
        for head in controller.CLASS_HEADS:
            counts = self.class_counts[head].astype(np.float64) + 1
            class_prior[head] = (counts / counts.sum()).tolist()
            change[head] = float(np.clip(self.changed[head] / n, 1e-4, 1.0))
        change["buttons"] = np.clip(self.buttons_changed / n, 1e-4, 1.0).tolist()
        return BaselineStats(button_prior.tolist(), class_prior, change)


def fit_baselines(targets: dict, previous: dict) -> BaselineStats:
    """Fit priors and change rates on training frames (targets and the
    controller one frame earlier), all at once. Raises ValueError when there
    are no frames."""
    accumulator = BaselineAccumulator()
    accumulator.add(targets, previous)
    return accumulator.stats()


def _bernoulli_nll(p_on: np.ndarray, pressed: np.ndarray) -> np.ndarray:
    p = np.clip(np.where(pressed > 0.5, p_on, 1 - p_on), _MIN_PROB, 1.0)
    return -np.log(p)


def prior_baseline(stats: BaselineStats, targets: dict) -> dict:
    """Loss (mean summed nats), and per-head accuracy of the majority class."""
    buttons = np.asarray(targets["buttons"])
    p_on = np.asarray(stats.button_prior)[None, :]
    per_head_loss = {"buttons": _bernoulli_nll(p_on, buttons).sum(1).mean()}
    accuracy = {"buttons": float(np.mean((p_on > 0.5) == (buttons > 0.5)))}
    for head in controller.CLASS_HEADS:
        prior = np.asarray(stats.class_prior[head])
        y = np.asarray(targets[head])
        per_head_loss[head] = float(-np.log(np.clip(prior[y], _MIN_PROB, 1)).mean())
        accuracy[head] = float(np.mean(y == prior.argmax()))
    return {"loss": float(sum(per_head_loss.values())), "per_head_loss": per_head_loss, "per_head_accuracy": accuracy}


def repeat_baseline(stats: BaselineStats, targets: dict, previous: dict) -> dict:
    """Loss and per-head accuracy of "press what was pressed last frame"."""
    buttons, prev_buttons = np.asarray(targets["buttons"]), np.asarray(previous["buttons"])
    eps_b = np.asarray(stats.change_rate["buttons"])[None, :]
    p_on = (1 - eps_b) * prev_buttons + eps_b * np.asarray(stats.button_prior)[None, :]
    per_head_loss = {"buttons": float(_bernoulli_nll(p_on, buttons).sum(1).mean())}
    accuracy = {"buttons": float(np.mean(buttons == prev_buttons))}
    for head in controller.CLASS_HEADS:
        y, prev = np.asarray(targets[head]), np.asarray(previous[head])
        eps = stats.change_rate[head]
        prior = np.asarray(stats.class_prior[head])
        p = (1 - eps) * (y == prev) + eps * prior[y]
        per_head_loss[head] = float(-np.log(np.clip(p, _MIN_PROB, 1)).mean())
        accuracy[head] = float(np.mean(y == prev))
    return {"loss": float(sum(per_head_loss.values())), "per_head_loss": per_head_loss, "per_head_accuracy": accuracy}


def prior_predictions(stats: BaselineStats, frames: int) -> dict:
    """What the class prior predicts on `frames` frames: its most likely
    class per head (a constant), and each button pressed iff P(pressed) > 0.5."""
    pressed = np.asarray(stats.button_prior) > 0.5
    out = {"buttons": np.broadcast_to(pressed, (frames, len(pressed)))}
    for head in controller.CLASS_HEADS:
        out[head] = np.full(frames, int(np.argmax(stats.class_prior[head])))
    return out


def repeat_predictions(previous: dict) -> dict:
    """What repeating the previous input predicts: the previous controller
    (buttons pressed as bools, the class heads their classes)."""
    return {"buttons": np.asarray(previous["buttons"]) > 0.5, **{h: np.asarray(previous[h]) for h in controller.CLASS_HEADS}}


def prior_change_frame_accuracy(stats: BaselineStats, targets: dict, previous: dict) -> dict:
    """The class prior's accuracy on change frames (see
    `keras_lstm.evaluation.change_frames`): its prediction is constant, so
    this is the rate at which the new value equals the prior's mode."""
    frames = len(np.asarray(targets["buttons"]))
    return change_frame_accuracy(prior_predictions(stats, frames), targets, previous).rates()


def repeat_change_frame_accuracy(change_frames: dict) -> dict:
    """Repeating the previous input on change frames is wrong on every one by
    construction: 0.0 per head with change frames (`change_frames`: their
    counts), None for one without. Reported so that the reader sees it."""
    return {head: (0.0 if n else None) for head, n in change_frames.items()}
