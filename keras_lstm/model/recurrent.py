"""TensorFlow's forms of the recurrent math, written out over a Keras layer's own weight variables.

Training (truncated BPTT carries the state from chunk to chunk) and stateful
inference need to run a backbone from a given state and get the final state
back, which `keras.layers.LSTM(return_sequences=True)` does not expose. These
functions compute exactly what `keras.layers.LSTM` / `keras.layers.GRU`
compute (tanh / sigmoid, Keras' gate order i f c o / z r h, GRU with
`reset_after=True`), reading the layers' variables, so the trained model stays
a plain Keras model and `tests/model/test_recurrent.py` holds the two equal.

The spec is `keras.layers.LSTM` / `keras.layers.GRU`; everything here is a
faster form of it, side by side, and `tests/model/test_recurrent_forms.py` holds
every form equal to the Keras layers (outputs, states and gradients, LSTM and
GRU). The state has one layout everywhere: a tuple with one entry per layer,
`(h, c)` for LSTM and `(h,)` for GRU, each `[batch, hidden]`.

Sequence forms (TF):

- `backbone_unroll(backbone, x_BxTxE, state)`: forward, plain TF ops
  (differentiable by autodiff); inference, export and the no-gradient prefix
  of truncated BPTT use it.
- `backbone_last_hidden(backbone, x_TxBxE, state)`: training. Each layer is
  one `tf.custom_gradient` whose backward pass is written by hand
  (`tests/model/test_recurrent.py` holds it to autodiff). The per-step work in
  both directions is a single `[B, U] x [U, G*U]` matmul plus a few
  elementwise ops; everything that does not depend on the recurrence is done
  for the whole sequence at once as one large matmul: the input projection
  `x @ kernel` (forward), and the weight gradients `x^T dz`, `h^T dz` and the
  input gradient `dz @ kernel^T` (backward). Autodiff of the per-step loop
  instead computes and accumulates T small weight-gradient matmuls per layer.

One-frame forms, for play and serving:

- `tf_step(cell_type, cells, x_BxD, state)`: one frame in plain TF ops over
  the cells' variables, as few ops as possible (the SavedModel's step);
- `fuse_numpy(cell_type, cell)` + `numpy_step(cell_type, fused, x_BxD,
  state)`: numpy over a snapshot of the weights with each layer's gate
  matrices fused into one `[in + hidden, gates]` matrix (the frame loop's
  step: no TensorFlow dispatch).

Sequences run time-major (`[T, B, ...]`) inside, so a timestep is a
contiguous slice. `matmul_dtype="bfloat16"` (opt-in) rounds every matmul's
inputs to bfloat16 (`"float16"`: mixed precision on the fused path); states,
gates and weights stay float32. The Keras-layers form takes a
`compute_dtype` instead: the layers run under Keras' `mixed_*` policy.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_lstm.model.backbone import zero_state  # noqa: F401 - the state's one layout
# The numpy forms live with the rest of the policy's numpy math (no TensorFlow there).
from keras_lstm.model.numpy_policy import fuse_cell, numpy_step  # noqa: F401
from keras_lstm.model.numpy_policy import sigmoid as np_sigmoid  # noqa: F401


def _matmul(a, b, dtype):
    """`a @ b` with inputs rounded to `dtype` (bfloat16: about twice the
    matmul throughput on CPUs with AVX512_BF16, products accumulated in
    float32 by oneDNN), result in float32. Nothing changes for float32."""
    return tf.cast(tf.matmul(tf.cast(a, dtype), tf.cast(b, dtype)), tf.float32)


def _project_TxBxG(x_TxBxD, kernel_DxG, bias_G, dtype=tf.float32):
    """`x @ kernel + bias` for every timestep at once: one matmul."""
    T, D = tf.shape(x_TxBxD)[0], tf.shape(x_TxBxD)[2]
    flat = _matmul(tf.reshape(x_TxBxD, [-1, D]), kernel_DxG, dtype) + bias_G
    return tf.reshape(flat, [T, -1, kernel_DxG.shape[-1]])


def _transposed(w_AxB):
    """`w^T` as its own tensor. Grappler folds a plain `tf.transpose` feeding a
    matmul into `transpose_b=True`, which this TF's CPU kernel runs several
    times slower at these shapes; a 3-D transpose is left alone."""
    a, b = tf.shape(w_AxB)[0], tf.shape(w_AxB)[1]
    w_T = tf.reshape(tf.transpose(tf.reshape(w_AxB, [a, b, 1]), [1, 0, 2]), [b, a])
    w_T.set_shape(w_AxB.shape[::-1])
    return w_T


# --- LSTM ----------------------------------------------------------------


def _lstm_steps(proj_TxBx4U, h_BxU, c_BxU, rkernel_Ux4U, keep: bool, dtype=tf.float32):
    """The recurrence over precomputed input projections. With `keep`, also
    returns the per-step values the backward pass needs (gates, cells, tanh of
    cells, outputs) as lists."""
    saved = {"i": [], "f": [], "g": [], "o": [], "c": [], "tc": [], "h": []}
    rkernel_Ux4U = tf.cast(rkernel_Ux4U, dtype)  # once, not per step
    for p_Bx4U in tf.unstack(proj_TxBx4U, axis=0):
        z = p_Bx4U + _matmul(h_BxU, rkernel_Ux4U, dtype)
        z_i, z_f, z_g, z_o = tf.split(z, 4, axis=-1)
        i, f, g, o = tf.sigmoid(z_i), tf.sigmoid(z_f), tf.tanh(z_g), tf.sigmoid(z_o)
        c_BxU = f * c_BxU + i * g
        tc = tf.tanh(c_BxU)
        h_BxU = o * tc
        if keep:
            for key, value in (("i", i), ("f", f), ("g", g), ("o", o), ("c", c_BxU), ("tc", tc), ("h", h_BxU)):
                saved[key].append(value)
        else:
            saved["h"].append(h_BxU)
    return h_BxU, c_BxU, saved


def _lstm_forward_TxB(cell, x_TxBxD, h_BxU, c_BxU, dtype=tf.float32):
    proj = _project_TxBxG(x_TxBxD, cell.kernel, cell.bias, dtype)
    h, c, saved = _lstm_steps(proj, h_BxU, c_BxU, cell.recurrent_kernel, keep=False, dtype=dtype)
    return tf.stack(saved["h"], axis=0), h, c


def _lstm_train_fn(return_sequences: bool, dtype=tf.float32):
    """A `tf.custom_gradient` LSTM layer `(x_TxBxD, h0, c0, kernel,
    recurrent_kernel, bias) -> (y_TxBxU, h, c)` (or `(h, c)` without
    `return_sequences`) with the backward pass written out."""

    @tf.custom_gradient
    def lstm(x_TxBxD, h0_BxU, c0_BxU, kernel_Dx4U, rkernel_Ux4U, bias_4U):
        proj = _project_TxBxG(x_TxBxD, kernel_Dx4U, bias_4U, dtype)
        h_T, c_T, saved = _lstm_steps(proj, h0_BxU, c0_BxU, rkernel_Ux4U, keep=True, dtype=dtype)
        outputs_TxBxU = tf.stack(saved["h"], axis=0) if return_sequences else None

        def grad(*upstream):
            if return_sequences:
                dy_TxBxU, dh_T, dc_T = upstream
            else:
                dy_TxBxU, (dh_T, dc_T) = None, upstream
            i, f, g, o, tc = (tf.stack(saved[k], axis=0) for k in ("i", "f", "g", "o", "tc"))
            c_prev = tf.stack([c0_BxU] + saved["c"][:-1], axis=0)
            h_prev_TxBxU = tf.stack([h0_BxU] + saved["h"][:-1], axis=0)
            # Everything that does not depend on the recurrence, for all steps
            # at once: dz = [dc, dc, dc, dh] * gate_factor, dc += dh * cell_factor.
            gate_factor = tf.unstack(
                tf.concat([g * i * (1.0 - i), c_prev * f * (1.0 - f), i * (1.0 - g * g), tc * o * (1.0 - o)], axis=-1)
            )
            cell_factor = tf.unstack(o * (1.0 - tc * tc))
            forget = tf.unstack(f)
            dys = tf.unstack(dy_TxBxU, num=len(saved["h"])) if dy_TxBxU is not None else None
            rkernel_T = tf.cast(_transposed(rkernel_Ux4U), dtype)
            dh = dh_T if dh_T is not None else tf.zeros_like(h0_BxU)
            dc = dc_T if dc_T is not None else tf.zeros_like(c0_BxU)
            dzs = []
            for t in reversed(range(len(forget))):
                if dys is not None:
                    dh = dh + dys[t]
                dc = dc + dh * cell_factor[t]
                dz = tf.concat([dc, dc, dc, dh], axis=-1) * gate_factor[t]
                dzs.append(dz)
                dh = _matmul(dz, rkernel_T, dtype)
                dc = dc * forget[t]
            dz_TxBx4U = tf.stack(dzs[::-1], axis=0)
            dz_flat = tf.reshape(dz_TxBx4U, [-1, 4 * h0_BxU.shape[-1]])
            D = kernel_Dx4U.shape[0]
            d_kernel = _matmul(_transposed(tf.reshape(x_TxBxD, [-1, D])), dz_flat, dtype)
            d_rkernel = _matmul(_transposed(tf.reshape(h_prev_TxBxU, [-1, h0_BxU.shape[-1]])), dz_flat, dtype)
            d_bias = tf.reduce_sum(dz_flat, axis=0)
            dx = tf.reshape(_matmul(dz_flat, _transposed(kernel_Dx4U), dtype), tf.shape(x_TxBxD))
            return dx, dh, dc, d_kernel, d_rkernel, d_bias

        if return_sequences:
            return (outputs_TxBxU, h_T, c_T), grad
        return (h_T, c_T), grad

    return lstm


# --- GRU (reset_after=True) --------------------------------------------------


def _gru_steps(proj_TxBx3U, h_BxU, rkernel_Ux3U, rbias_3U, keep: bool, dtype=tf.float32):
    saved = {"z": [], "r": [], "hh": [], "rh": [], "h": []}
    rkernel_Ux3U = tf.cast(rkernel_Ux3U, dtype)
    x_z, x_r, x_h = (tf.unstack(part, axis=0) for part in tf.split(proj_TxBx3U, 3, axis=-1))
    for t in range(len(x_z)):
        r_z, r_r, r_h = tf.split(_matmul(h_BxU, rkernel_Ux3U, dtype) + rbias_3U, 3, axis=-1)
        z = tf.sigmoid(x_z[t] + r_z)
        r = tf.sigmoid(x_r[t] + r_r)
        hh = tf.tanh(x_h[t] + r * r_h)
        h_BxU = hh + z * (h_BxU - hh)  # = z * h + (1 - z) * hh
        if keep:
            for key, value in (("z", z), ("r", r), ("hh", hh), ("rh", r_h), ("h", h_BxU)):
                saved[key].append(value)
        else:
            saved["h"].append(h_BxU)
    return h_BxU, saved


def _gru_forward_TxB(cell, x_TxBxD, h_BxU, dtype=tf.float32):
    input_bias, recurrent_bias = tf.unstack(cell.bias)
    proj = _project_TxBxG(x_TxBxD, cell.kernel, input_bias, dtype)
    h, saved = _gru_steps(proj, h_BxU, cell.recurrent_kernel, recurrent_bias, keep=False, dtype=dtype)
    return tf.stack(saved["h"], axis=0), h


def _gru_train_fn(return_sequences: bool, dtype=tf.float32):
    """A `tf.custom_gradient` GRU layer `(x_TxBxD, h0, kernel,
    recurrent_kernel, bias_2x3U) -> (y_TxBxU, h)` (or `h`)."""

    @tf.custom_gradient
    def gru(x_TxBxD, h0_BxU, kernel_Dx3U, rkernel_Ux3U, bias_2x3U):
        input_bias, recurrent_bias = tf.unstack(bias_2x3U)
        proj = _project_TxBxG(x_TxBxD, kernel_Dx3U, input_bias, dtype)
        h_T, saved = _gru_steps(proj, h0_BxU, rkernel_Ux3U, recurrent_bias, keep=True, dtype=dtype)
        outputs_TxBxU = tf.stack(saved["h"], axis=0) if return_sequences else None

        def grad(*upstream):
            if return_sequences:
                dy_TxBxU, dh_T = upstream
            else:
                dy_TxBxU, dh_T = None, upstream[0]
            z, r, hh, rh = (tf.stack(saved[k], axis=0) for k in ("z", "r", "hh", "rh"))
            h_prev_TxBxU = tf.stack([h0_BxU] + saved["h"][:-1], axis=0)
            # Every pre-activation gradient is dh times a factor that does not
            # depend on the recurrence: compute the factors for all steps at once.
            candidate = (1.0 - z) * (1.0 - hh * hh)
            update = (h_prev_TxBxU - hh) * z * (1.0 - z)
            reset = candidate * rh * r * (1.0 - r)
            input_factor = tf.concat([update, reset, candidate], axis=-1)
            recurrent_factor_TxBx3U = tf.concat([update, reset, candidate * r], axis=-1)
            recurrent_factor = tf.unstack(recurrent_factor_TxBx3U)
            keep = tf.unstack(z)
            dys = tf.unstack(dy_TxBxU, num=len(saved["h"])) if dy_TxBxU is not None else None
            rkernel_T = tf.cast(_transposed(rkernel_Ux3U), dtype)
            dh = dh_T if dh_T is not None else tf.zeros_like(h0_BxU)
            dhs = []
            for t in reversed(range(len(keep))):
                if dys is not None:
                    dh = dh + dys[t]
                dhs.append(dh)
                d_rec = tf.concat([dh, dh, dh], axis=-1) * recurrent_factor[t]
                dh = dh * keep[t] + _matmul(d_rec, rkernel_T, dtype)
            dh3_TxBx3U = tf.tile(tf.stack(dhs[::-1], axis=0), [1, 1, 3])
            U = h0_BxU.shape[-1]
            d_in = tf.reshape(dh3_TxBx3U * input_factor, [-1, 3 * U])
            d_rec_flat = tf.reshape(dh3_TxBx3U * recurrent_factor_TxBx3U, [-1, 3 * U])
            D = kernel_Dx3U.shape[0]
            d_kernel = _matmul(_transposed(tf.reshape(x_TxBxD, [-1, D])), d_in, dtype)
            d_rkernel = _matmul(_transposed(tf.reshape(h_prev_TxBxU, [-1, U])), d_rec_flat, dtype)
            d_bias = tf.stack([tf.reduce_sum(d_in, axis=0), tf.reduce_sum(d_rec_flat, axis=0)])
            dx = tf.reshape(_matmul(d_in, _transposed(kernel_Dx3U), dtype), tf.shape(x_TxBxD))
            return dx, dh, d_kernel, d_rkernel, d_bias

        if return_sequences:
            return (outputs_TxBxU, h_T), grad
        return h_T, grad

    return gru


MATMUL_DTYPES = ("float32", "bfloat16", "float16")
_TRAIN_FNS = {
    (cell_type, return_sequences, dtype): make(return_sequences, tf.as_dtype(dtype))
    for cell_type, make in (("lstm", _lstm_train_fn), ("gru", _gru_train_fn))
    for return_sequences in (True, False)
    for dtype in MATMUL_DTYPES
}


def _matmul_dtype(matmul_dtype):
    name = tf.as_dtype(matmul_dtype or "float32").name
    if name not in MATMUL_DTYPES:
        raise ValueError(f"matmul_dtype must be one of {MATMUL_DTYPES}, got {matmul_dtype!r}")
    return name


# --- whole backbones -----------------------------------------------------------


def backbone_unroll(backbone, x_BxTxE, state, training: bool = False, matmul_dtype=None):
    """Run every layer of a `RecurrentBackbone` over a sequence from `state`.

    Returns `(y_BxTxU, new_state)`: the last layer's outputs after its dropout,
    and the per-layer final state in the layout of `zero_state`.
    `matmul_dtype="bfloat16"` rounds the matmul inputs (see `_matmul`).
    """
    dtype = tf.as_dtype(_matmul_dtype(matmul_dtype))
    x = tf.transpose(x_BxTxE, [1, 0, 2])
    new_state = []
    for layer, dropout, layer_state in zip(backbone.recurrent_layers, backbone.dropout_layers, state):
        if backbone.cell_type == "lstm":
            x, h, c = _lstm_forward_TxB(layer.cell, x, *layer_state, dtype=dtype)
            new_state.append((h, c))
        else:
            x, h = _gru_forward_TxB(layer.cell, x, *layer_state, dtype=dtype)
            new_state.append((h,))
        x = dropout(x, training=training)
    return tf.transpose(x, [1, 0, 2]), tuple(new_state)


def backbone_last_hidden(
    backbone, x_TxBxE, state, training: bool = False, matmul_dtype=None, all_timesteps: bool = False
):
    """The backbone's last-timestep output `[B, U]` (after dropout) over a
    time-major sequence from `state`, and the new state; the training path
    (hand-written backward pass per layer). With `all_timesteps`, the top
    layer's output at every timestep, `[T, B, U]` (the loss on many frames).

    Equal to `backbone_unroll(...)[0][:, -1]` (or, with `all_timesteps`, to
    `backbone_unroll(...)[0]` time-major) in value and gradient. Only the
    last timestep of the top layer is computed past its recurrence, so its
    dropout is applied to `[B, U]` instead of `[B, T, U]` (the same
    distribution: each unit is dropped independently). `matmul_dtype` as in
    `backbone_unroll`.
    """
    dtype = _matmul_dtype(matmul_dtype)
    x = x_TxBxE
    new_state = []
    # The top layer keeps every timestep's output (and its gradient) exactly
    # as the layers below it do when all of them are wanted.
    last = len(backbone.recurrent_layers) - (0 if all_timesteps else 1)
    for n, (layer, dropout, layer_state) in enumerate(zip(backbone.recurrent_layers, backbone.dropout_layers, state)):
        cell = layer.cell
        weights = (cell.kernel, cell.recurrent_kernel, cell.bias)
        weights = tuple(tf.convert_to_tensor(w) for w in weights)
        layer_fn = _TRAIN_FNS[(backbone.cell_type, n < last, dtype)]
        if backbone.cell_type == "lstm":
            if n < last:
                x, h, c = layer_fn(x, *layer_state, *weights)
            else:
                h, c = layer_fn(x, *layer_state, *weights)
                x = h
            new_state.append((h, c))
        else:
            if n < last:
                x, h = layer_fn(x, *layer_state, *weights)
            else:
                h = layer_fn(x, *layer_state, *weights)
                x = h
            new_state.append((h,))
        x = dropout(x, training=training)
    return x, tuple(new_state)


# --- one frame: the fast forms for play and serving -------------------------


def tf_step(cell_type: str, cells, x_BxD, state):
    """One frame through every layer's cell (plain TF ops over the Keras
    variables); returns `(y_BxU, new_state)`. No dropout: inference only."""
    new_state = []
    for cell, layer_state in zip(cells, state):
        if cell_type == "lstm":
            h, c = layer_state
            z = tf.matmul(x_BxD, cell.kernel) + tf.matmul(h, cell.recurrent_kernel) + cell.bias
            i, f, g, o = tf.split(z, 4, axis=1)  # Keras' gate order
            c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
            x_BxD = tf.sigmoid(o) * tf.tanh(c)
            new_state.append((x_BxD, c))
        else:
            (h,) = layer_state
            input_bias, recurrent_bias = tf.unstack(cell.bias)
            x_z, x_r, x_h = tf.split(tf.matmul(x_BxD, cell.kernel) + input_bias, 3, axis=1)
            h_z, h_r, h_h = tf.split(tf.matmul(h, cell.recurrent_kernel) + recurrent_bias, 3, axis=1)
            update = tf.sigmoid(x_z + h_z)
            reset = tf.sigmoid(x_r + h_r)
            x_BxD = update * h + (1.0 - update) * tf.tanh(x_h + reset * h_h)
            new_state.append((x_BxD,))
    return x_BxD, tuple(new_state)


def fuse_numpy(cell_type: str, cell) -> tuple[np.ndarray, np.ndarray]:
    """A Keras cell's weights fused for `numpy_step` (`numpy_policy.fuse_cell`)."""
    return fuse_cell(cell_type, cell.kernel.numpy(), cell.recurrent_kernel.numpy(), cell.bias.numpy())
