"""Features: fixed widths, no leakage between inputs and targets."""

import numpy as np
import pytest

from keras_lstm.data import controller, features
from keras_lstm.data.features import align, game_to_trajectories
from keras_lstm.data.replays import read_game

from conftest import GAMES


@pytest.fixture(scope="module")
def trajectory():
    return game_to_trajectories(read_game(GAMES / "slippi-js_techTest.slp"), "techTest")[0][0]


def test_widths_and_ranges(trajectory):
    assert trajectory.state_numeric.shape[1] == features.STATE_NUMERIC_SIZE
    assert trajectory.state_categorical.shape[1] == features.CATEGORICAL_SIZE
    assert np.isfinite(trajectory.state_numeric).all()
    assert (trajectory.state_categorical >= 0).all()
    assert (trajectory.state_categorical < np.array(features.CATEGORICAL_SIZES)).all()


@pytest.mark.parametrize("delay", [0, 2])
def test_alignment_has_no_leakage(trajectory, delay):
    arrays = align(trajectory, delay)
    first = 1 + delay
    assert len(arrays) == len(trajectory) - first
    t = 500  # any row
    frame = t + first  # the frame whose controller row t predicts
    # game state seen: frame - 1 - delay
    np.testing.assert_array_equal(
        arrays.numeric[t, : features.STATE_NUMERIC_SIZE], trajectory.state_numeric[frame - 1 - delay]
    )
    np.testing.assert_array_equal(arrays.categorical[t], trajectory.state_categorical[frame - 1 - delay])
    # own controller seen: frame - 1; target: frame
    prev = controller.targets_as_input({k: v[frame - 1 : frame] for k, v in trajectory.targets.items()})[0]
    np.testing.assert_array_equal(arrays.numeric[t, features.STATE_NUMERIC_SIZE :], prev)
    for head, target in arrays.targets.items():
        np.testing.assert_array_equal(target[t], trajectory.targets[head][frame])


def test_targets_are_not_in_the_inputs(trajectory):
    """No input column equals the current controller better than the previous one does."""
    arrays = align(trajectory, 0)
    now = controller.targets_as_input(arrays.targets)
    seen = arrays.numeric[:, features.STATE_NUMERIC_SIZE :]
    changed = (now != seen).any(1)
    assert changed.mean() > 0.05  # the player's inputs do change between frames


def test_negative_delay_is_rejected(trajectory):
    with pytest.raises(ValueError, match="delay"):
        align(trajectory, -1)
