"""The loss on the last N frames of each window (`loss_frames`): the training
step's gradient equals autodiff of the per-frame loss through the policy's
own `unroll`, with and without truncation."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_lstm.data import controller, features
from keras_lstm.model.losses import flatten_time, policy_loss
from keras_lstm.model.policy import build_policy, compile_for_fit

B, T = 4, 12


def _batch(seed=0, loss_frames=5):
    rng = np.random.default_rng(seed)
    x = {
        "numeric": rng.normal(size=(B, T, features.NUMERIC_SIZE)).astype("float32"),
        "categorical": rng.integers(0, 5, size=(B, T, features.CATEGORICAL_SIZE)).astype("int32"),
    }
    y = {"buttons": (rng.random((B, loss_frames, len(controller.BUTTONS))) < 0.3).astype("float32")}
    for head in controller.CLASS_HEADS:
        y[head] = rng.integers(0, controller.HEAD_CLASSES[head], size=(B, loss_frames)).astype("int32")
    return x, y


def _reference_loss(policy, x, y, loss_frames, truncate_bptt):
    """Chunks of `truncate_bptt` counted back from the window's end, the state
    carried with the gradient stopped between them, through `policy.unroll`."""
    state = policy.initial_state(B)
    chunk = truncate_bptt or T
    bounds = [(max(0, end - chunk), end) for end in range(T, 0, -chunk)][::-1]
    logits = []
    for start, end in bounds:
        out, state = policy.unroll({k: v[:, start:end] for k, v in x.items()}, state, training=True)
        state = tf.nest.map_structure(tf.stop_gradient, state)
        logits.append(out)
    full = {h: tf.concat([o[h] for o in logits], axis=1)[:, T - loss_frames :] for h in controller.HEADS}
    loss, _ = policy_loss({h: flatten_time(v) for h, v in y.items()}, {h: flatten_time(v) for h, v in full.items()})
    return loss


@pytest.mark.parametrize("truncate_bptt", [None, 4])
@pytest.mark.parametrize("cell_type", ["lstm", "gru"])
def test_sequence_step_matches_autodiff_through_unroll(cell_type, truncate_bptt):
    loss_frames = 5
    keras.utils.set_random_seed(3)
    ours = build_policy(cell_type, 8, 16, 2, dropout=0.0, truncate_bptt=truncate_bptt, loss_frames=loss_frames)
    reference = build_policy(cell_type, 8, 16, 2, dropout=0.0)
    reference.set_weights(ours.get_weights())
    x, y = _batch(loss_frames=loss_frames)
    with tf.GradientTape() as tape:
        want_loss = _reference_loss(reference, x, y, loss_frames, truncate_bptt)
    want = tape.gradient(want_loss, reference.trainable_variables)
    lr = 2.0**-4
    compile_for_fit(ours, keras.optimizers.SGD(lr))
    start = [v.numpy() for v in ours.trainable_variables]
    logs = ours.train_on_batch(x, y, return_dict=True)
    np.testing.assert_allclose(logs["loss"], float(want_loss), rtol=1e-5)
    for before, var, grad in zip(start, ours.trainable_variables, want):
        if grad is None:
            continue
        grad = tf.convert_to_tensor(grad).numpy()
        got = (before - var.numpy()) / lr
        scale = max(np.abs(grad).max(), 1e-6)
        np.testing.assert_allclose(got, grad, atol=1e-4 * scale + 1e-7, err_msg=var.path)


def test_windows_give_targets_for_the_last_frames():
    from keras_lstm.data.windows import make_windows

    rng = np.random.default_rng(0)
    n = 40
    targets = {"buttons": rng.random((n, 8)).astype("float32")}
    targets.update({h: np.arange(n, dtype=np.int32) for h in controller.CLASS_HEADS})
    arrays = features.PolicyArrays(
        rng.normal(size=(n, features.NUMERIC_SIZE)).astype("float32"), np.zeros((n, features.CATEGORICAL_SIZE), np.int32), targets
    )
    windows = make_windows([arrays], window_size=10, stride=5)
    _, last = windows.gather(windows.ends)
    _, seq = windows.gather(windows.ends, target_frames=3)
    np.testing.assert_array_equal(seq["main_x"][:, -1], last["main_x"])
    np.testing.assert_array_equal(seq["main_x"], windows.ends[:, None] + np.arange(-2, 1)[None, :])
    batch = next(iter(windows.dataset(2, shuffle=False, target_frames=3)))
    assert batch[1]["main_x"].shape == (2, 3) and batch[1]["buttons"].shape == (2, 3, 8)
