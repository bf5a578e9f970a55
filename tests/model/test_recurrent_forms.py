"""Every form of the recurrent math equals the spec, the Keras layers.

The spec: `keras.layers.LSTM` / `keras.layers.GRU` (the backbone's own
layers, with `return_state=True` twins sharing their weights for the final
states). The forms: the sequence forward (`backbone.unroll`), the one-frame
TF step (`backbone.step`, what the SavedModel runs), the numpy step
(`NumpyBackbone`, the frame loop's), the hand-written backward
(`backbone_last_hidden`, training) and the `stateful=True` twin. Outputs,
states and gradients, LSTM and GRU, from a non-zero state.

Tolerances: every value compared is at most ~1 in size and comes out of a
few dozen float32 multiply-adds per step over 7 steps and 2 layers, so
rounding is ~1e-6; 2e-5 leaves room for any CPU's kernels while a wrong gate,
bias or state (errors of 1e-2 and more) still fails. Gradients are compared
relative to the largest of each variable's gradient (1e-4: a few hundred
accumulations of float32 rounding).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_lstm.model.backbone import build_backbone
from keras_lstm.model.recurrent import backbone_last_hidden
from keras_lstm.serving.inference import NumpyBackbone, reset_twin, stateful_twin

B, T, E, U, L = 3, 7, 6, 5, 2
ATOL = 2e-5


def make(cell_type, seed=0):
    keras.utils.set_random_seed(seed)
    backbone = build_backbone(cell_type, embed_size=E, hidden_size=U, num_layers=L, dropout=0.0)
    rng = np.random.default_rng(seed)
    for v in backbone.weights:  # non-trivial biases too
        v.assign(rng.normal(0, 0.5, size=v.shape).astype(np.float32))
    x = rng.normal(size=(B, T, E)).astype(np.float32)
    per_layer = 2 if cell_type == "lstm" else 1
    state = tuple(tuple(rng.normal(0, 0.5, size=(B, U)).astype(np.float32) for _ in range(per_layer)) for _ in range(L))
    return backbone, x, state


def spec(backbone, x, state):
    """The Keras layers, with `return_state=True` copies for the final states:
    `(top outputs [B, T, U], final state)`."""
    layer_cls = keras.layers.LSTM if backbone.cell_type == "lstm" else keras.layers.GRU
    outputs, new_state = tf.convert_to_tensor(x), []
    for layer, layer_state in zip(backbone.recurrent_layers, state):
        twin = layer_cls(U, return_sequences=True, return_state=True)
        twin.build(outputs.shape)
        twin.set_weights(layer.get_weights())
        result = twin(outputs, initial_state=[tf.convert_to_tensor(s) for s in layer_state])
        outputs, final = result[0], tuple(result[1:])
        new_state.append(final)
    return outputs, tuple(new_state)


def assert_state_close(got, want):
    for got_layer, want_layer in zip(got, want):
        assert len(got_layer) == len(want_layer)
        for g, w in zip(got_layer, want_layer):
            np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=ATOL)


@pytest.mark.parametrize("cell_type", ["lstm", "gru"])
def test_every_form_equals_the_keras_layers(cell_type):
    backbone, x, state = make(cell_type)
    want_BxTxU, want_state = spec(backbone, x, state)
    want_BxTxU = want_BxTxU.numpy()

    # the sequence forward
    got_BxTxU, got_state = backbone.unroll(x, state)
    np.testing.assert_allclose(got_BxTxU.numpy(), want_BxTxU, atol=ATOL)
    assert_state_close(got_state, want_state)

    # the one-frame TF step (the export's), and the numpy step (the frame loop's)
    fast = NumpyBackbone(backbone)
    tf_state, np_state = state, state
    for t in range(T):
        tf_out, tf_state = backbone.step(x[:, t], tf_state)
        np_out, np_state = fast.step(x[:, t], np_state)
        np.testing.assert_allclose(tf_out.numpy(), want_BxTxU[:, t], atol=ATOL)
        np.testing.assert_allclose(np_out, want_BxTxU[:, t], atol=ATOL)
    assert_state_close(tf_state, want_state)
    assert_state_close(np_state, want_state)

    # the training form's forward: last output and state
    last, train_state = backbone_last_hidden(backbone, tf.transpose(x, [1, 0, 2]), state)
    np.testing.assert_allclose(last.numpy(), want_BxTxU[:, -1], atol=ATOL)
    assert_state_close(train_state, want_state)


@pytest.mark.parametrize("cell_type", ["lstm", "gru"])
def test_hand_written_backward_equals_autodiff_of_the_keras_layers(cell_type):
    backbone, x, state = make(cell_type, seed=1)
    rng = np.random.default_rng(2)
    w_out = tf.constant(rng.normal(size=(B, U)).astype(np.float32))
    w_state = tf.constant(rng.normal(size=(B, U)).astype(np.float32))
    x = tf.constant(x)
    state = tf.nest.map_structure(tf.constant, state)
    variables = backbone.trainable_variables

    def loss(last_BxU, final_state):
        # the output and the top layer's last state part both reach the loss
        return tf.reduce_sum(w_out * last_BxU) + tf.reduce_sum(w_state * final_state[-1][-1])

    def assert_gradients_close(got, want, names):
        for name, g, w in zip(names, got, want):
            assert g is not None and w is not None, name
            scale = max(float(tf.reduce_max(tf.abs(w))), 1e-6)
            assert float(tf.reduce_max(tf.abs(g - w))) <= 1e-4 * scale, name

    wrt = [x, *tf.nest.flatten(state)]
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(wrt)
        spec_BxTxU, spec_state = spec(backbone, x, state)  # the Keras layers, autodiff
        spec_loss = loss(spec_BxTxU[:, -1], spec_state)
        unrolled_BxTxU, unrolled_state = backbone.unroll(x, state)  # plain TF ops, autodiff
        unrolled_loss = loss(unrolled_BxTxU[:, -1], unrolled_state)
        got_last, got_state = backbone_last_hidden(backbone, tf.transpose(x, [1, 0, 2]), state)  # by hand
        got_loss = loss(got_last, got_state)
    np.testing.assert_allclose(got_loss.numpy(), spec_loss.numpy(), rtol=1e-5)
    names = ["x"] + [f"state {i}" for i in range(len(wrt) - 1)]
    # Inputs and state: the hand-written backward against the Keras layers.
    assert_gradients_close(tape.gradient(got_loss, wrt), tape.gradient(spec_loss, wrt), names)
    # Weights (the spec's layers are weight-sharing copies, so their weight
    # gradients are not the backbone's): against autodiff of the unrolled
    # forward, which `test_every_form_equals_the_keras_layers` holds to Keras.
    assert_gradients_close(
        tape.gradient(got_loss, variables), tape.gradient(unrolled_loss, variables), [v.path for v in variables]
    )


@pytest.mark.parametrize("cell_type", ["lstm", "gru"])
def test_stateful_twin_equals_the_keras_layers_frame_by_frame(cell_type):
    backbone, x, _ = make(cell_type, seed=3)
    zeros = backbone.initial_state(B)
    want_BxTxU, _ = spec(backbone, x[:1], tuple(tuple(s[:1] for s in layer) for layer in zeros))
    twin = stateful_twin(backbone)
    for game in range(2):  # a reset between games starts the second from zero again
        reset_twin(twin)
        for t in range(T):
            out = twin(x[:1, t : t + 1], training=False)
            np.testing.assert_allclose(np.asarray(out), want_BxTxU.numpy()[:, t], atol=ATOL)


@pytest.mark.parametrize("cell_type", ["lstm", "gru"])
def test_policy_step_and_unroll_equal_the_windowed_policy(cell_type):
    from keras_lstm.data import features
    from keras_lstm.model.policy import build_policy

    keras.utils.set_random_seed(4)
    policy = build_policy(cell_type, E, U, L, 0.0, None, None)
    rng = np.random.default_rng(4)
    x = {
        "numeric": rng.normal(size=(B, T, features.NUMERIC_SIZE)).astype(np.float32),
        "categorical": rng.integers(0, 3, size=(B, T, features.CATEGORICAL_SIZE)).astype(np.int32),
    }
    windowed = policy(x, training=False)  # the model as trained: last frame of each window
    unrolled, _ = policy.unroll(x, policy.initial_state(B))
    state = policy.initial_state(B)
    for t in range(T):
        stepped, state = policy.step({k: v[:, t] for k, v in x.items()}, state)
        for head in windowed:
            np.testing.assert_allclose(np.asarray(stepped[head]), np.asarray(unrolled[head])[:, t], atol=ATOL)
    for head in windowed:
        np.testing.assert_allclose(np.asarray(stepped[head]), np.asarray(windowed[head]), atol=ATOL)
