"""The frame encoder's fast forms equal the Keras layer, on valid ids and on
ids past a table's end (clipped into it, as the fast forms promise)."""

import keras
import numpy as np
import tensorflow as tf

from keras_lstm.data import features
from keras_lstm.model.encoder import FrameEncoder, NumpyEncoder, encode_tf

B = 5


def test_encode_tf_and_numpy_equal_the_keras_layer():
    keras.utils.set_random_seed(0)
    encoder = FrameEncoder(16)
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
