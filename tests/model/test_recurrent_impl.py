"""`--recurrent-impl keras` (the Keras layers, cuDNN on a GPU) and `fused`
(our hand-written backward pass) train the same: one training step from the
same weights on the same batch gives the same loss and the same update, for
full and truncated BPTT, the loss on one frame or several, LSTM and GRU; and
they evaluate the same.

Tolerances: the loss to 1e-5 relative (float32 sums in another order); each
variable's update to 1e-4 of its largest entry (a few hundred float32
accumulations), while a wrong gradient is off by far more."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_lstm.data import controller, features
from keras_lstm.model.policy import build_policy, compile_for_fit
from keras_lstm.model.backbone import resolve_recurrent_impl

B, W = 4, 10


def batch(seed=0):
    rng = np.random.default_rng(seed)
    x = {
        "numeric": rng.normal(size=(B, W, features.NUMERIC_SIZE)).astype(np.float32),
        "categorical": np.stack([rng.integers(0, n, size=(B, W)) for n in features.CATEGORICAL_SIZES], axis=-1).astype(np.int32),
    }
    return x, rng


def targets(rng, frames):
    shape = (B,) if frames == 1 else (B, frames)
    y = {"buttons": rng.integers(0, 2, size=(*shape, len(controller.BUTTONS))).astype(np.float32)}
    y.update({h: rng.integers(0, controller.HEAD_CLASSES[h], size=shape).astype(np.int32) for h in controller.CLASS_HEADS})
    return y


def twins(cell_type, truncate_bptt, loss_frames):
    keras.utils.set_random_seed(7)
    kwargs = dict(embed_size=8, hidden_size=12, num_layers=2, dropout=0.0, truncate_bptt=truncate_bptt, loss_frames=loss_frames)
    fused = build_policy(cell_type, recurrent_impl="fused", **kwargs)
    other = build_policy(cell_type, recurrent_impl="keras", **kwargs)
    other.set_weights(fused.get_weights())
    for policy in (fused, other):
        compile_for_fit(policy, keras.optimizers.SGD(learning_rate=1.0))
    return fused, other


@pytest.mark.parametrize("cell_type,truncate_bptt,loss_frames", [
    ("lstm", None, 1), ("lstm", 4, 1), ("lstm", 4, 3), ("lstm", None, 5), ("gru", None, 1), ("gru", 4, 3),
])
def test_keras_and_fused_take_the_same_training_step(cell_type, truncate_bptt, loss_frames):
    fused, other = twins(cell_type, truncate_bptt, loss_frames)
    x, rng = batch()
    y = targets(rng, loss_frames)
    before = [w.copy() for w in fused.get_weights()]
    loss_fused = fused.train_on_batch(x, y, return_dict=True)["loss"]
    loss_keras = other.train_on_batch(x, y, return_dict=True)["loss"]
    assert loss_keras == pytest.approx(loss_fused, rel=1e-5)
    for w0, wf, wk in zip(before, fused.get_weights(), other.get_weights()):
        update = w0 - wf
        scale = max(np.abs(update).max(), 1e-6)
        np.testing.assert_allclose(w0 - wk, update, atol=1e-4 * scale, rtol=0)
    assert any(np.abs(w0 - wf).max() > 0 for w0, wf in zip(before, fused.get_weights()))  # a step was taken


@pytest.mark.parametrize("cell_type", ["lstm", "gru"])
def test_keras_and_fused_evaluate_the_same(cell_type):
    fused, other = twins(cell_type, None, 1)
    x, rng = batch(1)
    y = targets(rng, 1)
    a = fused.test_on_batch(x, y, return_dict=True)["loss"]
    b = other.test_on_batch(x, y, return_dict=True)["loss"]
    assert b == pytest.approx(a, rel=1e-5)


def test_auto_picks_by_device_and_bad_values_are_refused():
    expected = "keras" if tf.config.list_physical_devices("GPU") else "fused"
    assert resolve_recurrent_impl("auto") == expected
    with pytest.raises(ValueError, match="recurrent-impl must be one of auto, keras, fused"):
        resolve_recurrent_impl("cudnn")
    with pytest.raises(ValueError, match="bfloat16 applies to the fused"):
        build_policy(embed_size=8, hidden_size=8, num_layers=1, recurrent_impl="keras", matmul_dtype="bfloat16")
