"""The keep bias: 0 is the plain decision, a bias too large to overcome is
repeating the previous input, and in between a change survives only when it
is e^bias times as likely as keeping."""

import numpy as np

from keras_lstm.data import controller
from keras_lstm.evaluation import baselines
from keras_lstm.evaluation.evaluate import head_accuracy, predictions
from keras_lstm.evaluation.keep_bias import keep_biased_logits
from tests.evaluation.test_evaluate import random_heads


def random_previous(n, seed):
    _, previous = random_heads(n, seed)
    return previous


def test_zero_bias_is_the_plain_decision():
    logits, targets = random_heads(200, 0)
    previous = random_previous(200, 1)
    plain = predictions(logits)
    biased = predictions(keep_biased_logits(logits, previous, 0.0))
    for head in controller.HEADS:
        np.testing.assert_array_equal(biased[head], plain[head])


def test_a_bias_too_large_to_overcome_scores_as_repeating_the_previous_input():
    logits, targets = random_heads(300, 2)
    previous = random_previous(300, 3)
    predicted = predictions(keep_biased_logits(logits, previous, 1e4))  # the logits are ~N(0, 3)
    np.testing.assert_array_equal(predicted["buttons"], previous["buttons"] > 0.5)
    for head in controller.CLASS_HEADS:
        np.testing.assert_array_equal(predicted[head], previous[head])
    stats = baselines.fit_baselines(targets, previous)
    assert head_accuracy(predicted, targets) == baselines.repeat_baseline(stats, targets, previous)["per_head_accuracy"]


def test_a_change_survives_only_when_more_likely_than_the_bias():
    button = controller.BUTTONS.index("A")
    n_buttons = len(controller.BUTTONS)
    # frame 0: A was pressed, its logit -1.5; frame 1: A was released, its logit 0.7
    buttons = np.full((2, n_buttons), -8.0, np.float32)
    buttons[0, button], buttons[1, button] = -1.5, 0.7
    previous_buttons = np.zeros((2, n_buttons), np.float32)
    previous_buttons[0, button] = 1.0
    logits, previous = {"buttons": buttons}, {"buttons": previous_buttons}
    for head in controller.CLASS_HEADS:
        k = controller.HEAD_CLASSES[head]
        row = np.zeros((2, k), np.float32)
        row[:, 1] = np.log(3.0)  # class 1 three times as likely as class 0, the previous one
        logits[head], previous[head] = row, np.zeros(2, np.int32)

    def decided(bias):
        p = predictions(keep_biased_logits(logits, previous, bias))
        return bool(p["buttons"][0, button]), bool(p["buttons"][1, button]), int(p["main_x"][0])

    # a button's release is e^1.5 and its press e^0.7 times as likely as keeping; the class e^1.0986
    assert decided(0.0) == (False, True, 1)  # every change taken
    assert decided(0.5) == (False, True, 1)
    assert decided(1.0) == (False, False, 1)  # the press no longer
    assert decided(1.2) == (False, False, 0)  # nor the class change
    assert decided(2.0) == (True, False, 0)  # nor the release: all kept


def test_the_bias_leaves_the_logits_it_was_given_alone():
    logits, _ = random_heads(50, 4)
    previous = random_previous(50, 5)
    before = {h: v.copy() for h, v in logits.items()}
    keep_biased_logits(logits, previous, 2.0)
    for head in controller.HEADS:
        np.testing.assert_array_equal(logits[head], before[head])
