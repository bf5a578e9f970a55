"""Accuracy on change frames: the frames where the player's input differs
from the previous frame's.

Inputs persist across frames, so "no change" is right most of the time and
plain accuracy hardly separates a policy from repeating the previous input.
On change frames repeating scores 0 by construction; what is left measures
whether a policy knows *when and to what* the input changes.

- class heads (sticks, shoulder): frames where the target class differs from
  the previous frame's; a prediction is right when it equals the new class;
- buttons: each button on its own, on the frames where that button changed
  (a change event); the head's figure is the mean over the 8 buttons weighted
  by their numbers of change events (hits over all events), so a button that
  rarely changes weighs little.

The other side of the same frames: the policy's *predicted* changes (its
prediction differs from the previous input) and how often they are right,
the precision of its changes. Against repeating, a predicted change wins
a frame where it is right and loses one where the player kept the input; on
a button (two values) those are all of them, so a precision below 1/2 there
means the button's changes cost accuracy.

`ChangeFrameCounter` streams (play adds one frame at a time); evaluation adds
all its frames at once. Both report through `rates()` and `precisions()`,
one copy of the math.
"""

from __future__ import annotations

import numpy as np

from keras_lstm.data import controller


def _rate(hits: int, count: int) -> float | None:
    return hits / count if count else None


class ChangeFrameCounter:
    """Change frames seen and predictions right on them, per head and button.

    `add(predicted, targets, previous)` takes, per head, `[B]` classes (or
    `[B, 8]` 0/1 buttons): what was predicted for the frames, what the player
    pressed, and what the player pressed one frame earlier.
    """

    def __init__(self):
        self.changes = {h: 0 for h in controller.CLASS_HEADS}
        self.hits = {h: 0 for h in controller.CLASS_HEADS}
        self.button_changes = np.zeros(len(controller.BUTTONS), np.int64)
        self.button_hits = np.zeros(len(controller.BUTTONS), np.int64)
        # the policy's changes: predictions that differ from the previous input
        self.predicted = {h: 0 for h in controller.CLASS_HEADS}
        self.predicted_right = {h: 0 for h in controller.CLASS_HEADS}
        self.button_predicted = np.zeros(len(controller.BUTTONS), np.int64)
        self.button_predicted_right = np.zeros(len(controller.BUTTONS), np.int64)

    def add(self, predicted: dict, targets: dict, previous: dict) -> None:
        pressed = np.asarray(targets["buttons"]) > 0.5
        before = np.asarray(previous["buttons"]) > 0.5
        press = np.asarray(predicted["buttons"]) > 0.5
        changed, right = pressed != before, press == pressed
        self.button_changes += changed.sum(0)
        self.button_hits += (changed & right).sum(0)
        self.button_predicted += (press != before).sum(0)
        self.button_predicted_right += ((press != before) & right).sum(0)
        for head in controller.CLASS_HEADS:
            y = np.asarray(targets[head]).reshape(-1)
            before = np.asarray(previous[head]).reshape(-1)
            guess = np.asarray(predicted[head]).reshape(-1)
            changed, right = y != before, guess == y
            self.changes[head] += int(changed.sum())
            self.hits[head] += int((changed & right).sum())
            self.predicted[head] += int((guess != before).sum())
            self.predicted_right[head] += int(((guess != before) & right).sum())

    def counts(self) -> dict:
        """Change frames per head; for buttons, change events over the 8 buttons."""
        return {"buttons": int(self.button_changes.sum()), **{h: int(self.changes[h]) for h in controller.CLASS_HEADS}}

    def button_counts(self) -> dict:
        return {name: int(n) for name, n in zip(controller.BUTTONS, self.button_changes)}

    def rates(self) -> dict:
        """Accuracy on change frames per head (None for a head without any)."""
        buttons = _rate(int(self.button_hits.sum()), int(self.button_changes.sum()))  # weighted by change events
        return {"buttons": buttons, **{h: _rate(self.hits[h], self.changes[h]) for h in controller.CLASS_HEADS}}

    def predicted_counts(self) -> dict:
        """The policy's predicted changes per head (buttons: summed over the 8)."""
        return {"buttons": int(self.button_predicted.sum()), **{h: int(self.predicted[h]) for h in controller.CLASS_HEADS}}

    def precisions(self) -> dict:
        """How often a predicted change is right, per head (None for a head
        where the policy never predicted one)."""
        buttons = _rate(int(self.button_predicted_right.sum()), int(self.button_predicted.sum()))
        return {"buttons": buttons, **{h: _rate(self.predicted_right[h], self.predicted[h]) for h in controller.CLASS_HEADS}}

    def button_precisions(self) -> dict:
        return {name: _rate(int(r), int(n)) for name, r, n in zip(controller.BUTTONS, self.button_predicted_right, self.button_predicted)}

    def button_rates(self) -> dict:
        """Accuracy on change events per button (None for a button that never changed)."""
        return {name: _rate(int(h), int(n)) for name, h, n in zip(controller.BUTTONS, self.button_hits, self.button_changes)}


def change_frame_accuracy(predicted: dict, targets: dict, previous: dict) -> ChangeFrameCounter:
    """A counter holding every frame at once (see `ChangeFrameCounter`)."""
    counter = ChangeFrameCounter()
    counter.add(predicted, targets, previous)
    return counter

