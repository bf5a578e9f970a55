"""The frame encoder's fast forms equal the Keras layer, on valid ids and on
ids past a table's end (clipped into it, as the fast forms promise)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_lstm.data import features
from keras_lstm.model.encoder import FrameEncoder, NumpyEncoder, relative_columns
from keras_lstm.model.encoder_tf import encode_tf

B = 5


@pytest.mark.parametrize("relative_features", [False, True])
def test_encode_tf_and_numpy_equal_the_keras_layer(relative_features):
    keras.utils.set_random_seed(0)
    encoder = FrameEncoder(16, relative_features=relative_features)
    encoder.build(((None, features.NUMERIC_SIZE), (None, features.CATEGORICAL_SIZE)))
    rng = np.random.default_rng(0)
    for v in encoder.weights:  # a non-zero bias, so that ReLU cuts somewhere
        v.assign(rng.normal(0, 0.5, size=v.shape).astype(np.float32))
    numeric = rng.normal(size=(B, features.NUMERIC_SIZE)).astype(np.float32)
    categorical = np.stack([rng.integers(0, size, B) for size in features.CATEGORICAL_SIZES], axis=1).astype(np.int32)
    want = np.asarray(encoder([numeric, categorical]))
    assert (want == 0).any() and (want > 0).any()
    # Each output is a float32 dot product of ~130 terms; rounding grows with
    # the outputs' size (~10 here), so the tolerance is relative to it. A wrong
    # table, column or bias moves outputs by order 1.
    atol = 2e-6 * np.abs(want).max()
    np.testing.assert_allclose(encode_tf(encoder, numeric, categorical).numpy(), want, atol=atol)
    np.testing.assert_allclose(NumpyEncoder(encoder)(numeric, categorical), want, atol=atol)
    # past a table's end: clipped to its last row in both fast forms
    too_big = categorical + np.asarray(features.CATEGORICAL_SIZES, np.int32)
    last = np.asarray(features.CATEGORICAL_SIZES, np.int32) - 1
    clipped = np.asarray(encoder([numeric, np.broadcast_to(last, categorical.shape)]))
    np.testing.assert_allclose(encode_tf(encoder, numeric, too_big).numpy(), clipped, atol=atol)
    np.testing.assert_allclose(NumpyEncoder(encoder)(numeric, too_big), clipped, atol=atol)
    assert not np.allclose(clipped, want)


def test_relative_columns_say_where_the_opponent_is_and_who_faces_whom():
    numeric = np.zeros((3, features.NUMERIC_SIZE), np.float32)
    fields = [name for name, _ in features.PLAYER_FIELDS]
    me, them = 0, len(fields)
    x, y, facing = fields.index("x"), fields.index("y"), fields.index("facing")
    numeric[:, me + x], numeric[:, them + x] = [0.0, 0.5, 0.2], [0.3, -0.5, 0.2]
    numeric[:, me + y], numeric[:, them + y] = 0.0, [0.4, 0.0, 0.1]
    numeric[:, me + facing], numeric[:, them + facing] = [1, 1, -1], [-1, -1, 1]
    got = relative_columns(numeric, np)
    np.testing.assert_allclose(got[:, 0], [0.3, -1.0, 0.0], atol=1e-7)  # dx: opponent minus me
    np.testing.assert_allclose(got[:, 1], [0.4, 0.0, 0.1], atol=1e-7)
    np.testing.assert_allclose(got[:, 2], [0.5, 1.0, 0.1], atol=1e-6)
    np.testing.assert_array_equal(got[:, 3], [1, -1, 0])  # I face right; the opponent is right, left, level
    np.testing.assert_array_equal(got[:, 4], [1, -1, 0])  # it faces left: toward me in the first row only
    np.testing.assert_allclose(np.asarray(relative_columns(tf.constant(numeric), tf)), got, atol=1e-6)


def test_an_encoder_saved_without_the_option_loads_without_it():
    config = FrameEncoder(16).get_config()
    config.pop("relative_features")
    assert FrameEncoder.from_config(config).relative_features is False
