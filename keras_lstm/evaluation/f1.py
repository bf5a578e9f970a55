"""F1 per head, as erickfm/MIMIC reports it, so the figures can stand side by side.

MIMIC (train.py `_multiclass_prf`, at 164ac8a) scores every head as one
single-label classification of each frame: F1 per class from the argmax,
averaged over the classes that occur in the targets (a class only predicted
counts as false positives of others; a class without a true positive scores
0). Its buttons head is not 8 Bernoullis but one of 7 combinations, which
`button_classes` rebuilds from our 8 buttons by MIMIC's precedence (B, then
A with a trigger, Z, A, a trigger, a jump, else none). Its main stick is one
head of 37 positions; ours is two axes of 17 classes, so beside each axis
`main_stick` and `c_stick` score the joint (x, y) class, 17 x 17 positions:
a finer grid than MIMIC's, so a lower F1 for the same play. Two more
differences, both in favour of a stable figure: every scored frame counts
once here (MIMIC averages per-batch F1 over 100 random batches), and the
shoulder has our 5 classes (MIMIC's 3).
"""

from __future__ import annotations

import numpy as np

from keras_lstm.data import controller

# MIMIC's button combinations; each rule overwrites the ones before it.
BUTTON_CLASSES = ("a", "b", "z", "jump", "trigger", "a_trigger", "none")
_COL = {name: i for i, name in enumerate(controller.BUTTONS)}


def button_classes(pressed_Nx8) -> np.ndarray:
    """`[N, 8]` pressed (bool or 0/1) in `controller.BUTTONS` order -> `[N]`
    index into `BUTTON_CLASSES`."""
    b = np.asarray(pressed_Nx8) > 0.5
    a, bb, z = b[:, _COL["A"]], b[:, _COL["B"]], b[:, _COL["Z"]]
    jump = b[:, _COL["X"]] | b[:, _COL["Y"]]
    trigger = b[:, _COL["L"]] | b[:, _COL["R"]]
    out = np.full(len(b), BUTTON_CLASSES.index("none"), np.int64)
    for mask, name in ((jump, "jump"), (trigger, "trigger"), (a, "a"), (z, "z"), (a & trigger & ~bb, "a_trigger"), (bb, "b")):
        out[mask] = BUTTON_CLASSES.index(name)
    return out


def macro_f1(predicted, target) -> float | None:
    """Mean F1 over the classes present in `target` (None: no frames).
    Per class, F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (predicted + true)."""
    predicted = np.asarray(predicted, np.int64).ravel()
    target = np.asarray(target, np.int64).ravel()
    if not len(target):
        return None
    size = int(max(predicted.max(), target.max())) + 1
    true = np.bincount(target, minlength=size)
    hits = np.bincount(target[predicted == target], minlength=size)
    made = np.bincount(predicted, minlength=size)
    present = true > 0
    return float(np.mean(2 * hits[present] / (made[present] + true[present])))


def _joint(x, y) -> np.ndarray:
    return np.asarray(x, np.int64) * controller.STICK_CLASSES + np.asarray(y, np.int64)


def f1_scores(predicted: dict, targets: dict) -> dict:
    """Per head (and the joint sticks) the macro F1 of `predicted` (buttons:
    pressed `[N, 8]`; a class head its class `[N]`) against `targets`."""
    out = {"buttons": macro_f1(button_classes(predicted["buttons"]), button_classes(targets["buttons"]))}
    for head in controller.CLASS_HEADS:
        out[head] = macro_f1(predicted[head], targets[head])
    out["main_stick"] = macro_f1(_joint(predicted["main_x"], predicted["main_y"]), _joint(targets["main_x"], targets["main_y"]))
    out["c_stick"] = macro_f1(_joint(predicted["c_x"], predicted["c_y"]), _joint(targets["c_x"], targets["c_y"]))
    return out


def f1_summary(predicted: dict, targets: dict, previous: dict, stats) -> dict:
    """The policy's F1 per head beside repeating the previous input's and
    the class prior's, on the same frames."""
    from keras_lstm.evaluation.baselines import prior_predictions, repeat_predictions

    frames = len(np.asarray(targets["buttons"]))
    return {
        "f1": f1_scores(predicted, targets),
        "baseline_repeat_f1": f1_scores(repeat_predictions(previous), targets),
        "baseline_prior_f1": f1_scores(prior_predictions(stats, frames), targets),
    }


__all__ = ["BUTTON_CLASSES", "button_classes", "f1_scores", "f1_summary", "macro_f1"]
