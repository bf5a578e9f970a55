"""The heads' view of the previous controller: the Keras layer and its numpy
form agree, and both invert `controller.targets_as_input`."""

import numpy as np

from keras_lstm.data import controller, features
from keras_lstm.model.heads import PREVIOUS_INPUT_SIZE, PreviousInput, previous_input_numpy


def _numeric_with_pad(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    targets = {"buttons": (rng.random((n, len(controller.BUTTONS))) < 0.3).astype(np.float32)}
    for head in controller.CLASS_HEADS:
        targets[head] = rng.integers(0, controller.HEAD_CLASSES[head], n).astype(np.int32)
    state = rng.normal(size=(n, features.STATE_NUMERIC_SIZE)).astype(np.float32)
    return np.concatenate([state, controller.targets_as_input(targets)], axis=1), targets


def test_numpy_and_keras_forms_agree_and_recover_the_classes():
    numeric, targets = _numeric_with_pad(500)
    ours = previous_input_numpy(numeric)
    keras_form = np.asarray(PreviousInput()(numeric))
    assert ours.shape == (500, PREVIOUS_INPUT_SIZE)
    np.testing.assert_array_equal(ours, keras_form)
    np.testing.assert_array_equal(ours[:, : len(controller.BUTTONS)], targets["buttons"])
    offset = len(controller.BUTTONS)
    for head in controller.CLASS_HEADS:
        k = controller.HEAD_CLASSES[head]
        np.testing.assert_array_equal(ours[:, offset : offset + k].argmax(1), targets[head])
        assert (ours[:, offset : offset + k].sum(1) == 1).all()
        offset += k
    assert offset == PREVIOUS_INPUT_SIZE


def test_keras_form_keeps_the_time_axis():
    numeric, _ = _numeric_with_pad(12)
    windowed = np.asarray(PreviousInput()(numeric.reshape(3, 4, -1)))
    np.testing.assert_array_equal(windowed.reshape(12, -1), previous_input_numpy(numeric))


def test_a_policy_saved_before_the_option_loads_as_it_was(tmp_path):
    import keras

    from keras_lstm.model.policy import BehaviorCloningPolicy, build_policy

    keras.utils.set_random_seed(0)
    seed_policy = build_policy("lstm", 8, 8, 1, previous_input_heads=False)
    config = seed_policy.get_config()
    for key in ("previous_input_heads", "loss_frames"):  # what the seed's get_config did not write
        config.pop(key)
    again = BehaviorCloningPolicy.from_config(config)
    assert again.previous_input is None and again.loss_frames == 1
    seed_policy.save(tmp_path / "p.keras")
    loaded = keras.models.load_model(tmp_path / "p.keras")
    assert loaded.previous_input is None
    numeric, _ = _numeric_with_pad(6)
    x = {"numeric": numeric.reshape(2, 3, -1), "categorical": np.zeros((2, 3, features.CATEGORICAL_SIZE), np.int32)}
    for head, value in seed_policy.predict_on_batch(x).items():
        np.testing.assert_allclose(loaded.predict_on_batch(x)[head], value, rtol=1e-6)


def test_heads_that_see_the_previous_input_round_trip(tmp_path):
    import keras

    from keras_lstm.model.policy import build_policy

    keras.utils.set_random_seed(0)
    policy = build_policy("gru", 8, 8, 1, loss_frames=3)
    policy.save(tmp_path / "p.keras")
    loaded = keras.models.load_model(tmp_path / "p.keras")
    assert loaded.previous_input is not None and loaded.loss_frames == 3
    numeric, _ = _numeric_with_pad(6)
    x = {"numeric": numeric.reshape(2, 3, -1), "categorical": np.zeros((2, 3, features.CATEGORICAL_SIZE), np.int32)}
    for head, value in policy.predict_on_batch(x).items():
        np.testing.assert_allclose(loaded.predict_on_batch(x)[head], value, rtol=1e-6)


def _last_frame_logits(policy, numeric):
    x = {"numeric": numeric.reshape(len(numeric), 1, -1), "categorical": np.zeros((len(numeric), 1, features.CATEGORICAL_SIZE), np.int32)}
    return {h: np.asarray(v) for h, v in policy.predict_on_batch(x).items()}


def test_a_folded_keep_bias_adds_the_bias_toward_the_previous_input():
    import keras
    import pytest

    from keras_lstm.evaluation.keep_bias import keep_biased_logits
    from keras_lstm.model.heads import fold_keep_bias
    from keras_lstm.model.policy import build_policy

    keras.utils.set_random_seed(1)
    policy = build_policy("lstm", 8, 8, 1)
    numeric, previous = _numeric_with_pad(300, seed=3)
    before = _last_frame_logits(policy, numeric)
    fold_keep_bias(policy, 1.5)
    after = _last_frame_logits(policy, numeric)
    expected = keep_biased_logits(before, previous, 1.5)
    for head in controller.HEADS:
        # float32 sums of ~90 terms of size ~1: a few ulps of the largest
        np.testing.assert_allclose(after[head], expected[head], rtol=0, atol=1e-5, err_msg=head)
        assert np.abs(after[head] - before[head]).max() > 1.0, head  # the bias did land on every head
    with pytest.raises(ValueError, match="finite number >= 0"):
        fold_keep_bias(policy, -1.0)
    with pytest.raises(ValueError, match="no-previous-input-heads"):
        fold_keep_bias(build_policy("lstm", 8, 8, 1, previous_input_heads=False), 1.0)
