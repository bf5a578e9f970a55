"""Truncated backpropagation through time over a window.

The window is cut into chunks of K frames, counted back from its end. The
state `(h, c)` is carried from chunk to chunk with the gradient stopped at
each boundary. Because the loss sits on the last timestep only, every chunk
but the last contributes nothing to the gradient, so the training step runs
them before the gradient tape opens (`carry_state`): no activations are kept
for them and no backward pass is spent on them. The last chunk runs through
`keras_lstm.model.recurrent.backbone_last_hidden`, whose backward pass is written
by hand.
"""

from __future__ import annotations

import tensorflow as tf

from keras_lstm.model.recurrent import backbone_last_hidden, backbone_unroll, keras_layers_unroll


def chunk_bounds(window: int, truncate_bptt: int | None) -> list[tuple[int, int]]:
    """`[(start, end), ...]` chunk boundaries of a window; the last chunk is
    exactly K long, the first may be shorter. No truncation: one chunk."""
    if truncate_bptt is None or truncate_bptt >= window:
        return [(0, window)]
    ends = list(range(window, 0, -truncate_bptt))
    return [(max(0, end - truncate_bptt), end) for end in reversed(ends)]


def last_chunk_start(window: int, truncate_bptt: int | None) -> int:
    """The first frame that gradients reach: `window - K`, or 0."""
    return chunk_bounds(window, truncate_bptt)[-1][0]


def carry_state(backbone, frames_BxTxE, state, truncate_bptt: int, training: bool, matmul_dtype=None, impl: str = "fused"):
    """Run `frames` chunk by chunk from `state`, gradient stopped at every
    chunk boundary; returns the final state. `impl`: `fused` (our unroll) or
    `keras` (the Keras layers, computing in `matmul_dtype`)."""
    for start, end in chunk_bounds(frames_BxTxE.shape[1], truncate_bptt):
        if impl == "keras":
            _, state = keras_layers_unroll(backbone, frames_BxTxE[:, start:end], state, training, matmul_dtype)
        else:
            _, state = backbone_unroll(backbone, frames_BxTxE[:, start:end], state, training, matmul_dtype)
        state = tf.nest.map_structure(tf.stop_gradient, state)
    return state


def truncated_last_hidden(backbone, frames_BxTxE, state, truncate_bptt: int | None, training: bool = False):
    """The backbone's last-timestep output `[B, hidden]` with gradients
    flowing only through the final chunk of `truncate_bptt` frames.

    A train step that opens its tape after `carry_state` saves the prefix's
    memory too; this function is the same math in one call (tests use it).
    """
    last_start = last_chunk_start(frames_BxTxE.shape[1], truncate_bptt)
    if last_start > 0:
        state = carry_state(backbone, frames_BxTxE[:, :last_start], state, truncate_bptt, training)
    last_chunk_TxBxE = tf.transpose(frames_BxTxE[:, last_start:], [1, 0, 2])
    hidden_BxU, _ = backbone_last_hidden(backbone, last_chunk_TxBxE, state, training=training)
    return hidden_BxU
