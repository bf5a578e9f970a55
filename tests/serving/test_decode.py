"""The numpy and TF controller decoders agree, on probabilities and on the pad."""

import numpy as np
import tensorflow as tf

from keras_lstm.data import controller
from keras_lstm.serving.decode import decode_controller, decode_controller_tf


def test_numpy_and_tf_decoders_agree():
    rng = np.random.default_rng(0)
    logits = {"buttons": rng.normal(0, 3, size=(64, len(controller.BUTTONS))).astype(np.float32)}
    for head in controller.CLASS_HEADS:
        logits[head] = rng.normal(0, 3, size=(64, controller.HEAD_CLASSES[head])).astype(np.float32)
    got = decode_controller_tf({k: tf.constant(v) for k, v in logits.items()})
    want = decode_controller(logits)
    assert set(got) == set(want)
    for key in want:
        np.testing.assert_allclose(got[key].numpy(), want[key], atol=1e-6, err_msg=key)
    assert set(np.unique(want["main_x"])) <= set(np.linspace(-1, 1, controller.STICK_CLASSES).astype(np.float32))
