"""Truncated BPTT: chunk bounds, gradients against full BPTT, and `fit`."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_lstm.data import controller, features
from keras_lstm.model.backbone import build_backbone
from keras_lstm.model.policy import BehaviorCloningPolicy, compile_for_fit
from keras_lstm.model.backbone import zero_state
from keras_lstm.model.tbptt import chunk_bounds, last_chunk_start
from keras_lstm.model.tf_training import truncated_last_hidden

B, T, E, U = 2, 8, 4, 5


@pytest.mark.parametrize(
    "window, k, want",
    [
        (60, None, [(0, 60)]),
        (60, 60, [(0, 60)]),
        (60, 100, [(0, 60)]),
        (60, 15, [(0, 15), (15, 30), (30, 45), (45, 60)]),
        (10, 4, [(0, 2), (2, 6), (6, 10)]),
        (5, 1, [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]),
    ],
)
def test_chunk_bounds(window, k, want):
    assert chunk_bounds(window, k) == want
    assert last_chunk_start(window, k) == want[-1][0]


def _setup(cell_type):
    keras.utils.set_random_seed(0)
    backbone = build_backbone(cell_type, embed_size=E, hidden_size=U, num_layers=2, dropout=0.0)
    x = tf.constant(np.random.default_rng(0).normal(size=(B, T, E)).astype("float32"))
    return backbone, x


def _grads(backbone, x, fn):
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(tf.sin(fn(x)))
    return tape.gradient(loss, [x, backbone.trainable_variables])


@pytest.mark.parametrize("cell_type", ["lstm", "gru"])
def test_k_equal_to_window_gives_full_bptt_gradients(cell_type):
    backbone, x = _setup(cell_type)
    dx_full, dw_full = _grads(backbone, x, lambda x: backbone(x))  # the Keras layers, autodiff
    dx_trunc, dw_trunc = _grads(backbone, x, lambda x: truncated_last_hidden(backbone, x, zero_state(backbone, B), T))
    np.testing.assert_allclose(dx_trunc.numpy(), dx_full.numpy(), atol=1e-5)
    for a, b in zip(dw_trunc, dw_full):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)


@pytest.mark.parametrize("cell_type", ["lstm", "gru"])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_frames_before_last_chunk_get_zero_gradient(cell_type, k):
    backbone, x = _setup(cell_type)
    hidden = truncated_last_hidden(backbone, x, zero_state(backbone, B), k)
    np.testing.assert_allclose(hidden.numpy(), backbone(x).numpy(), atol=1e-5)  # forward unchanged
    dx, dw = _grads(backbone, x, lambda x: truncated_last_hidden(backbone, x, zero_state(backbone, B), k))
    per_frame = np.abs(dx.numpy()).sum(axis=(0, 2))
    assert np.all(per_frame[: T - k] == 0.0)
    assert np.all(per_frame[T - k :] > 0.0)
    assert all(np.any(g.numpy() != 0) for g in dw)


def _batches(batch=4, window=T, steps=2):
    rng = np.random.default_rng(1)
    n = batch * steps
    x = {
        "numeric": rng.normal(size=(n, window, features.NUMERIC_SIZE)).astype("float32"),
        "categorical": rng.integers(0, 4, size=(n, window, features.CATEGORICAL_SIZE)).astype("int32"),
    }
    y = {"buttons": rng.integers(0, 2, size=(n, len(controller.BUTTONS))).astype("float32")}
    y.update({h: rng.integers(0, controller.HEAD_CLASSES[h], size=(n,)).astype("int32") for h in controller.CLASS_HEADS})
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


def test_the_first_training_step_is_traced_once(monkeypatch):
    """`compile_for_fit` makes Adam's slots before `fit`: a tf.function whose
    first call makes variables is traced again, so the step would be traced
    twice (Python runs `train_step` only while tracing)."""
    from keras_lstm.model import tf_training

    traces = []
    step = tf_training.train_step
    monkeypatch.setattr(tf_training, "train_step", lambda *args, **kwargs: traces.append(1) or step(*args, **kwargs))
    policy = BehaviorCloningPolicy(build_backbone("lstm", embed_size=E, hidden_size=U), truncate_bptt=3)
    compile_for_fit(policy, keras.optimizers.Adam(1e-2))
    policy.fit(_batches(), epochs=2, verbose=0, shuffle=False)
    assert len(traces) == 1  # Keras 3.15 with a plain compile: 2


@pytest.mark.parametrize("cell_type", ["lstm", "gru"])
def test_fit_runs_with_truncation(cell_type):
    keras.utils.set_random_seed(0)
    policy = BehaviorCloningPolicy(build_backbone(cell_type, embed_size=E, hidden_size=U, dropout=0.1), truncate_bptt=3)
    compile_for_fit(policy, keras.optimizers.Adam(1e-2))
    before = [w.copy() for w in policy.backbone.get_weights()]
    history = policy.fit(_batches(), validation_data=_batches(), epochs=2, verbose=0, shuffle=False)
    assert np.all(np.isfinite(history.history["loss"])) and np.all(np.isfinite(history.history["val_loss"]))
    assert all(np.any(a != b) for a, b in zip(before, policy.backbone.get_weights()))


# One SGD step moves each weight by exactly -lr * gradient, so the weight
# changes compare the two `train_step`s' gradients. (Not Adam: it divides by
# the gradient's RMS, so a rounding-level difference in a near-zero gradient
# element, e.g. 3e-9 in 6e-8, becomes a 1e-5 weight difference, and a
# comparison after an Adam step depends on the CPU's matmul kernels.)
# lr is a power of two, so lr * g is exact in float32, and large, so that
# (w0 - w1) / lr recovers g to within float32 eps * max(|w0| / lr, |g|)
# ~ eps * |g|: the weights' own rounding does not blur the comparison.
SGD_LR = 2.0**10
# Per variable, |g_ours - g_stock| <= GRAD_RTOL * max |g_stock|. Each
# gradient element is accumulated from the batch x window = 4 x 8 = 32
# per-frame contributions, each through dot products of up to 127 terms (the
# encoder projection) and 8 recurrent steps in 2 layers, summed in a
# different order (and with different kernels) by the two paths: float32
# rounding over a few hundred accumulated terms is ~300 x 1.2e-7 ~ 4e-5 of
# the terms' size, which the variable's largest gradient stands for.
# Observed: <= 5e-7 (with and without oneDNN, oneDNN limited to AVX2). A
# wrong gate order, a missing term or a misweighted head changes gradients
# by O(1) relative; one gradient scaled by 1.001 already fails it.
GRAD_RTOL = 1e-4


def _recompile_with_sgd(model):
    config = model.get_compile_config()  # keeps the stock model's losses and loss weights
    config["optimizer"] = keras.optimizers.serialize(keras.optimizers.SGD(SGD_LR))
    model.compile_from_config(config)
    assert isinstance(model.optimizer, keras.optimizers.SGD)


def test_full_bptt_step_matches_stock_keras_step():
    """One `fit` step of our `train_step` (full BPTT, dropout 0) computes the
    gradient that Keras' own `train_step` computes on the same model and
    batch (compared through one SGD step, see `SGD_LR`)."""
    from keras_lstm.benchmarks.train_speed import TrainSpeedConfig, build_variant

    config = TrainSpeedConfig.quick(cells=("lstm",), window_size=T)
    ours = build_variant("ours_full", "lstm", config, dropout=0.0)
    stock = build_variant("keras_fit", "lstm", config, dropout=0.0)
    assert [v.path for v in ours.weights] == [v.path for v in stock.weights]
    start = ours.get_weights()
    for a, b in zip(start, stock.get_weights()):
        np.testing.assert_array_equal(a, b)
    for model in (ours, stock):
        _recompile_with_sgd(model)
        model.fit(_batches(batch=config.training.optim.batch_size, steps=1), epochs=1, verbose=0, shuffle=False)
    for v, w0, a, b in zip(ours.weights, start, ours.get_weights(), stock.get_weights()):
        grad_ours, grad_stock = (w0 - a) / SGD_LR, (w0 - b) / SGD_LR
        scale = np.abs(grad_stock).max()
        assert scale > 0, f"{v.path} got no gradient: the comparison would be vacuous"
        np.testing.assert_allclose(grad_ours, grad_stock, rtol=0, atol=GRAD_RTOL * scale, err_msg=v.path)


def test_evaluate_matches_the_keras_forward_pass():
    """`test_step` runs the hand-written forward; its loss is the loss of the
    plain Keras model's outputs."""
    from keras_lstm.model.losses import policy_loss

    keras.utils.set_random_seed(0)
    policy = BehaviorCloningPolicy(build_backbone("lstm", embed_size=E, hidden_size=U, dropout=0.1))
    policy.compile(optimizer="adam")
    data = _batches(batch=8, steps=1)
    x, y = next(iter(data))
    want, _ = policy_loss(y, policy(x, training=False))
    got = policy.evaluate(data, verbose=0, return_dict=True)["loss"]
    np.testing.assert_allclose(got, float(want), rtol=1e-5)


def test_bfloat16_option_fits_and_round_trips_config():
    keras.utils.set_random_seed(0)
    policy = BehaviorCloningPolicy(build_backbone("gru", embed_size=E, hidden_size=U), truncate_bptt=3, matmul_dtype="bfloat16")
    assert BehaviorCloningPolicy.from_config(policy.get_config()).matmul_dtype == "bfloat16"
    compile_for_fit(policy, keras.optimizers.Adam(1e-2))
    history = policy.fit(_batches(), epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])
    with pytest.raises(ValueError, match="matmul_dtype"):
        BehaviorCloningPolicy(build_backbone("gru", embed_size=E, hidden_size=U), matmul_dtype="float16")
