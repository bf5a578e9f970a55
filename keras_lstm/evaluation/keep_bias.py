"""Does any confidence level of the policy's changes beat repeating? Its
accuracy with a bias toward the previous input added to each head's logits
before deciding.

Against repeating the previous input, a predicted change wins the frame when
it is right and loses it when the player kept the input. A policy whose
changes are over-confident on the players evaluated gains from a bias: it
then changes only where a change is much more likely than keeping. If no
bias lifts a head to repeating's accuracy, its changes are right less often
than not at every confidence: what fails is which frames it picks, and no
threshold on its probabilities mends that. With a bias so large that the
policy never changes, the accuracy is repeating's exactly.

The bias b is in nats: a button changes only when P(change) > e^b P(keep);
a class head moves off the previous class only to a class e^b times as
likely. `evaluate` reports the accuracy at `KEEP_BIASES` (`keep_bias_accuracy`),
on the games it evaluates. `play --keep-bias` and `export --keep-bias` act
with a bias, folded into the heads' weights
(`keras_lstm.model.heads.fold_keep_bias`, held equal to this function by
`tests/model/test_heads.py`); by default they decide without one.
"""

from __future__ import annotations

import numpy as np

from keras_lstm.data import controller

KEEP_BIASES = (0.5, 1.0, 2.0, 4.0)


def keep_biased_logits(logits: dict, previous: dict, bias: float) -> dict:
    """`logits` with `bias` added toward `previous` (per head, `[N]` classes;
    buttons `[N, 8]` 0/1): a button's logit of "pressed" moves up by `bias`
    when it was pressed, down when not; a class head's previous class gains
    `bias`."""
    was_pressed = np.asarray(previous["buttons"]) > 0.5
    out = {"buttons": np.asarray(logits["buttons"]) + np.where(was_pressed, bias, -bias)}
    for head in controller.CLASS_HEADS:
        shifted = np.array(logits[head], copy=True)
        shifted[np.arange(len(shifted)), np.asarray(previous[head])] += bias
        out[head] = shifted
    return out
