"""The hand-written recurrence equals the Keras layers it reads its weights from.

Forward (`backbone_unroll`) and training (`backbone_last_hidden`, with its
hand-written backward pass) are both held to the plain Keras backbone, and
the trained weights load into a fresh Keras backbone and back unchanged.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_lstm.model.backbone import build_backbone
from keras_lstm.model.recurrent import backbone_last_hidden, backbone_unroll, zero_state

B, T, E, U, LAYERS = 3, 7, 5, 6, 2
TOL = 1e-5


def _backbone(cell_type, dropout=0.0, seed=0):
    keras.utils.set_random_seed(seed)
    backbone = build_backbone(cell_type, embed_size=E, hidden_size=U, num_layers=LAYERS, dropout=dropout)
    # Non-zero biases, so a bias mix-up would show.
    for layer in backbone.recurrent_layers:
        bias = layer.cell.bias
        bias.assign(np.random.default_rng(1).normal(0.0, 0.5, bias.shape).astype("float32"))
    return backbone


def _frames(seed=0, t=T):
    return tf.constant(np.random.default_rng(seed).normal(size=(B, t, E)).astype("float32"))


def _keras_sequence(backbone, x_BxTxE):
    """The Keras layers' own per-timestep output of the last layer."""
    x = x_BxTxE
    for layer in backbone.recurrent_layers:
        x = layer(x)
    return x


@pytest.mark.parametrize("cell_type", ["lstm", "gru"])
def test_unroll_from_zero_state_equals_keras(cell_type):
    backbone = _backbone(cell_type)
    x = _frames()
    y_BxTxU, _ = backbone_unroll(backbone, x, zero_state(backbone, B))
    np.testing.assert_allclose(y_BxTxU.numpy(), _keras_sequence(backbone, x).numpy(), atol=TOL)
    np.testing.assert_allclose(y_BxTxU[:, -1].numpy(), backbone(x).numpy(), atol=TOL)


@pytest.mark.parametrize("cell_type", ["lstm", "gru"])
def test_state_carried_over_two_halves_equals_one_pass(cell_type):
    backbone = _backbone(cell_type)
    x = _frames()
    state = zero_state(backbone, B)
    whole, whole_state = backbone_unroll(backbone, x, state)
    first, mid_state = backbone_unroll(backbone, x[:, :3], state)
    second, end_state = backbone_unroll(backbone, x[:, 3:], mid_state)
    np.testing.assert_allclose(tf.concat([first, second], 1).numpy(), whole.numpy(), atol=TOL)
    for a, b in zip(tf.nest.flatten(end_state), tf.nest.flatten(whole_state)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=TOL)


def _last_hidden_and_grads(backbone, x, state, fn):
    variables = backbone.trainable_variables
    with tf.GradientTape() as tape:
        tape.watch(x)
        tape.watch(state)
        hidden, new_state = fn(x, state)
        # A loss that weighs every unit differently, and uses the new state.
        weights = tf.range(1, U + 1, dtype=tf.float32) / U
        loss = tf.reduce_sum(tf.tanh(hidden) * weights) + 0.3 * tf.reduce_sum(tf.nest.flatten(new_state)[-1])
    grads = tape.gradient(loss, [x, state, variables])
    return hidden, new_state, grads


@pytest.mark.parametrize("cell_type", ["lstm", "gru"])
@pytest.mark.parametrize("compiled", [False, True])
def test_hand_written_gradient_equals_autodiff(cell_type, compiled):
    backbone = _backbone(cell_type)
    x = _frames(2)
    state = tf.nest.map_structure(
        lambda z: z + tf.constant(np.random.default_rng(3).normal(0, 0.5, z.shape).astype("float32")),
        zero_state(backbone, B),
    )

    def reference(x, state):
        y, new_state = backbone_unroll(backbone, x, state)
        return y[:, -1], new_state

    def fused(x, state):
        return backbone_last_hidden(backbone, tf.transpose(x, [1, 0, 2]), state)

    run = tf.function(_last_hidden_and_grads) if compiled else _last_hidden_and_grads
    want = run(backbone, x, state, reference)
    got = run(backbone, x, state, fused)
    for w, g in zip(tf.nest.flatten(want), tf.nest.flatten(got)):
        np.testing.assert_allclose(g.numpy(), w.numpy(), atol=TOL, rtol=1e-4)


@pytest.mark.parametrize("cell_type", ["lstm", "gru"])
def test_training_path_equals_keras_output(cell_type):
    backbone = _backbone(cell_type)
    x = _frames(4)
    hidden, _ = backbone_last_hidden(backbone, tf.transpose(x, [1, 0, 2]), zero_state(backbone, B))
    np.testing.assert_allclose(hidden.numpy(), backbone(x).numpy(), atol=TOL)


@pytest.mark.parametrize("cell_type", ["lstm", "gru"])
def test_weights_round_trip_through_plain_keras_backbone(cell_type):
    """Trained weights are the plain Keras layers' variables: they load into
    a freshly built Keras backbone and back with identical outputs."""
    from keras_lstm.model.policy import BehaviorCloningPolicy, compile_for_fit

    backbone = _backbone(cell_type, seed=5)
    policy = BehaviorCloningPolicy(backbone)
    compile_for_fit(policy, keras.optimizers.Adam(1e-2))
    x = _frames(6)
    hidden_before = backbone(x).numpy()
    policy.fit(_policy_batch(), epochs=1, verbose=0)
    assert not np.allclose(backbone(x).numpy(), hidden_before), "training changed nothing"

    plain = build_backbone(cell_type, embed_size=E, hidden_size=U, num_layers=LAYERS, dropout=0.0)
    assert [v.shape for v in plain.weights] == [v.shape for v in backbone.weights]
    plain.set_weights(backbone.get_weights())
    np.testing.assert_array_equal(plain(x).numpy(), backbone(x).numpy())
    unrolled, _ = backbone_unroll(plain, x, zero_state(plain, B))
    np.testing.assert_allclose(unrolled[:, -1].numpy(), backbone(x).numpy(), atol=TOL)

    again = _backbone(cell_type, seed=9)
    again.set_weights(plain.get_weights())
    np.testing.assert_array_equal(again(x).numpy(), backbone(x).numpy())


def _policy_batch(batch=4, window=T):
    from keras_lstm.data import controller, features

    rng = np.random.default_rng(0)
    x = {
        "numeric": rng.normal(size=(batch, window, features.NUMERIC_SIZE)).astype("float32"),
        "categorical": rng.integers(0, 4, size=(batch, window, features.CATEGORICAL_SIZE)).astype("int32"),
    }
    y = {"buttons": rng.integers(0, 2, size=(batch, len(controller.BUTTONS))).astype("float32")}
    y.update({h: rng.integers(0, controller.HEAD_CLASSES[h], size=(batch,)).astype("int32") for h in controller.CLASS_HEADS})
    return tf.data.Dataset.from_tensors((x, y))


@pytest.mark.parametrize("cell_type", ["lstm", "gru"])
def test_bfloat16_matmuls_stay_close_to_float32(cell_type):
    backbone = _backbone(cell_type)
    x = _frames(7)
    state = zero_state(backbone, B)

    def run(dtype):
        return tf.function(_last_hidden_and_grads)(
            backbone, x, state, lambda x, s: backbone_last_hidden(backbone, tf.transpose(x, [1, 0, 2]), s, matmul_dtype=dtype)
        )

    for want, got in zip(tf.nest.flatten(run(None)), tf.nest.flatten(run("bfloat16"))):
        assert float(tf.norm(got - want)) <= 0.03 * float(tf.norm(want)) + 1e-6
