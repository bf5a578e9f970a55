"""F1 per head as erickfm/MIMIC computes it (keras_lstm/evaluation/f1.py)."""

from __future__ import annotations

import numpy as np
import pytest

from keras_lstm.data import controller
from keras_lstm.evaluation.f1 import BUTTON_CLASSES, button_classes, f1_scores, macro_f1


def reference_macro_f1(predicted, target):
    """Counted class by class: precision and recall, then their harmonic mean."""
    scores = []
    for c in sorted(set(target)):
        tp = sum(1 for p, t in zip(predicted, target) if p == c and t == c)
        fp = sum(1 for p, t in zip(predicted, target) if p == c and t != c)
        fn = sum(1 for p, t in zip(predicted, target) if p != c and t == c)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn)
        scores.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return float(np.mean(scores))


@pytest.mark.parametrize("seed", range(5))
def test_macro_f1_is_the_mean_over_target_classes(seed):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, 7, 500)
    predicted = np.where(rng.random(500) < 0.6, target, rng.integers(0, 9, 500))  # some classes only predicted
    assert macro_f1(predicted, target) == pytest.approx(reference_macro_f1(predicted.tolist(), target.tolist()), abs=1e-12)


def test_macro_f1_edges():
    assert macro_f1([1, 2, 3], [1, 2, 3]) == 1.0
    assert macro_f1([0, 0, 0], [1, 2, 3]) == 0.0
    assert macro_f1([], []) is None
    assert macro_f1([5, 5], [1, 1]) == 0.0  # a class never hit scores 0, not NaN


def _buttons(*names):
    row = np.zeros(len(controller.BUTTONS), np.float32)
    for n in names:
        row[controller.BUTTONS.index(n)] = 1
    return row


@pytest.mark.parametrize(
    "pressed, expected",
    [
        ((), "none"), (("A",), "a"), (("B",), "b"), (("Z",), "z"), (("X",), "jump"), (("Y",), "jump"),
        (("L",), "trigger"), (("R",), "trigger"), (("A", "R"), "a_trigger"), (("A", "Z"), "z"),
        (("A", "B"), "b"), (("A", "B", "L"), "b"), (("X", "A"), "a"), (("D_UP",), "none"),
    ],
)
def test_button_combinations_follow_mimics_precedence(pressed, expected):
    assert BUTTON_CLASSES[button_classes(_buttons(*pressed)[None])[0]] == expected


def test_a_perfect_prediction_scores_one_on_every_head():
    rng = np.random.default_rng(0)
    n = 400
    targets = {"buttons": (rng.random((n, 8)) < 0.2).astype(np.float32)}
    for head in controller.CLASS_HEADS:
        targets[head] = rng.integers(0, controller.HEAD_CLASSES[head], n)
    predicted = {"buttons": targets["buttons"] > 0.5, **{h: targets[h] for h in controller.CLASS_HEADS}}
    scores = f1_scores(predicted, targets)
    assert set(scores) == set(controller.HEADS) | {"main_stick", "c_stick"}
    assert all(v == 1.0 for v in scores.values())
    predicted["main_x"] = (targets["main_x"] + 1) % controller.STICK_CLASSES  # every x wrong
    scores = f1_scores(predicted, targets)
    assert scores["main_x"] == 0.0 and scores["main_stick"] == 0.0 and scores["main_y"] == 1.0
