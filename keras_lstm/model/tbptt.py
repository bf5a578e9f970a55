"""Truncated backpropagation through time over a window.

The window is cut into chunks of K frames, counted back from its end. The
state `(h, c)` is carried from chunk to chunk with the gradient stopped at
each boundary (`keras.ops.stop_gradient`). Chunks before the first frame
with a loss contribute nothing to the gradient: TensorFlow's train step runs
them before its gradient tape opens (`carry_state`), so no activations are
kept for them; under autodiff elsewhere (JAX) the stopped gradient prunes
their backward pass the same way.
"""

from __future__ import annotations

import keras

from keras_lstm.model.backbone import keras_layers_unroll


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
    chunk boundary; returns the final state. `impl`: `fused` (TensorFlow's
    unroll) or `keras` (the Keras layers, computing in `matmul_dtype`)."""
    for start, end in chunk_bounds(frames_BxTxE.shape[1], truncate_bptt):
        if impl == "keras":
            _, state = keras_layers_unroll(backbone, frames_BxTxE[:, start:end], state, training, matmul_dtype)
        else:
            from keras_lstm.model.recurrent import backbone_unroll  # TensorFlow's

            _, state = backbone_unroll(backbone, frames_BxTxE[:, start:end], state, training, matmul_dtype)
        state = stop_gradient(state)
    return state


def stop_gradient(state) -> tuple:
    """The state, the gradient stopped (a chunk boundary)."""
    return tuple(tuple(keras.ops.stop_gradient(s) for s in layer) for layer in state)

