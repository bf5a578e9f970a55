"""The recurrent math written out over a Keras layer's own weight variables.

Training (truncated BPTT carries the state from chunk to chunk) and stateful
inference need to run a backbone from a given state and get the final state
back, which `keras.layers.LSTM(return_sequences=True)` does not expose. These
functions compute exactly what `keras.layers.LSTM` / `keras.layers.GRU`
compute (tanh / sigmoid, Keras' gate order, GRU with `reset_after=True`),
reading the layers' variables, so the trained model stays a plain Keras model
and `tests/test_recurrent.py` holds the two equal.

The input projection `x @ kernel + bias` is computed once for the whole
sequence as one matmul; only `h @ recurrent_kernel` runs per step.
"""

from __future__ import annotations

import tensorflow as tf


def zero_state(backbone, batch_size) -> tuple:
    """The zero state: per layer `(h, c)` for LSTM, `(h,)` for GRU."""
    zeros = tf.zeros([batch_size, backbone.hidden_size], dtype=tf.float32)
    return tuple((zeros, zeros) if backbone.cell_type == "lstm" else (zeros,) for _ in range(backbone.num_layers))


def lstm_layer_unroll(layer, x_BxTxD, h_BxU, c_BxU):
    """One Keras LSTM layer over a sequence from `(h, c)`; returns `(y_BxTxU, h, c)`."""
    cell = layer.cell
    T = x_BxTxD.shape[1]
    proj_BxTx4U = tf.einsum("btd,dg->btg", x_BxTxD, cell.kernel) + cell.bias
    outputs = []
    for t in range(T):
        z = proj_BxTx4U[:, t] + tf.matmul(h_BxU, cell.recurrent_kernel)
        i, f, g, o = tf.split(z, 4, axis=-1)
        c_BxU = tf.sigmoid(f) * c_BxU + tf.sigmoid(i) * tf.tanh(g)
        h_BxU = tf.sigmoid(o) * tf.tanh(c_BxU)
        outputs.append(h_BxU)
    return tf.stack(outputs, axis=1), h_BxU, c_BxU


def gru_layer_unroll(layer, x_BxTxD, h_BxU):
    """One Keras GRU layer (`reset_after=True`) over a sequence from `h`; returns `(y_BxTxU, h)`."""
    cell = layer.cell
    T = x_BxTxD.shape[1]
    input_bias, recurrent_bias = tf.unstack(cell.bias)
    proj_BxTx3U = tf.einsum("btd,dg->btg", x_BxTxD, cell.kernel) + input_bias
    outputs = []
    for t in range(T):
        x_z, x_r, x_h = tf.split(proj_BxTx3U[:, t], 3, axis=-1)
        r_z, r_r, r_h = tf.split(tf.matmul(h_BxU, cell.recurrent_kernel) + recurrent_bias, 3, axis=-1)
        z = tf.sigmoid(x_z + r_z)
        r = tf.sigmoid(x_r + r_r)
        candidate = tf.tanh(x_h + r * r_h)
        h_BxU = z * h_BxU + (1.0 - z) * candidate
        outputs.append(h_BxU)
    return tf.stack(outputs, axis=1), h_BxU


def backbone_unroll(backbone, x_BxTxE, state, training: bool = False):
    """Run every layer of a `RecurrentBackbone` over a sequence from `state`.

    Returns `(y_BxTxU, new_state)`: the last layer's outputs after its dropout,
    and the per-layer final state in the layout of `zero_state`.
    """
    x = x_BxTxE
    new_state = []
    for layer, dropout, layer_state in zip(backbone.recurrent_layers, backbone.dropout_layers, state):
        if backbone.cell_type == "lstm":
            x, h, c = lstm_layer_unroll(layer, x, *layer_state)
            new_state.append((h, c))
        else:
            x, h = gru_layer_unroll(layer, x, *layer_state)
            new_state.append((h,))
        x = dropout(x, training=training)
    return x, tuple(new_state)
