"""Truncated backpropagation through time over a window.

The window is cut into chunks of K frames, counted back from its end. The
state `(h, c)` is carried from chunk to chunk with the gradient stopped at
each boundary. Because the loss sits on the last timestep only, every chunk
but the last contributes nothing to the gradient, so the training step runs
them before the gradient tape opens (`carry_state`): no activations are kept
for them and no backward pass is spent on them.
"""

from __future__ import annotations

import tensorflow as tf

from keras_lstm.recurrent import backbone_unroll


def chunk_bounds(window: int, truncate_bptt: int | None) -> list[tuple[int, int]]:
    """`[(start, end), ...]` chunk boundaries of a window; the last chunk is
    exactly K long, the first may be shorter. No truncation: one chunk."""
    if truncate_bptt is None or truncate_bptt >= window:
        return [(0, window)]
    ends = list(range(window, 0, -truncate_bptt))
    return [(max(0, end - truncate_bptt), end) for end in reversed(ends)]


def carry_state(backbone, frames_BxTxE, state, truncate_bptt: int, training: bool):
    """Run `frames` chunk by chunk from `state`, gradient stopped at every
    chunk boundary; returns the final state."""
    for start, end in chunk_bounds(frames_BxTxE.shape[1], truncate_bptt):
        _, state = backbone_unroll(backbone, frames_BxTxE[:, start:end], state, training=training)
        state = tf.nest.map_structure(tf.stop_gradient, state)
    return state


def truncated_last_hidden(backbone, frames_BxTxE, state, truncate_bptt: int | None, training: bool = False):
    """The backbone's last-timestep output `[B, hidden]` with gradients
    flowing only through the final chunk of `truncate_bptt` frames."""
    window = frames_BxTxE.shape[1]
    bounds = chunk_bounds(window, truncate_bptt)
    last_start = bounds[-1][0]
    if last_start > 0:
        state = carry_state(backbone, frames_BxTxE[:, :last_start], state, truncate_bptt, training)
    outputs_BxTxU, _ = backbone_unroll(backbone, frames_BxTxE[:, last_start:], state, training=training)
    return outputs_BxTxU[:, -1]
