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


@pytest.mark.parametrize("delay", [1, 18])
def test_the_delay_reaches_the_features(delay):
    """For the input at frame t, delay D shows the game state delay 0 shows
    for frame t - D, and still the player's own input at t - 1."""
    path = GAMES / "py-slippi_v3.14.0.slp"
    trajectory = features.game_to_trajectories(read_game(path), path)[0][0]
    at_0, at_d = features.align(trajectory, 0), features.align(trajectory, delay)
    state = features.STATE_NUMERIC_SIZE
    n = len(at_d)
    assert n == len(at_0) - delay
    # row j of delay D predicts frame j + 1 + D; row j of delay 0 predicts frame j + 1
    np.testing.assert_array_equal(at_d.numeric[:, :state], at_0.numeric[:n, :state])  # the game state of D frames before
    np.testing.assert_array_equal(at_d.categorical, at_0.categorical[:n])
    np.testing.assert_array_equal(at_d.numeric[:, state:], at_0.numeric[delay:, state:])  # the own previous input: not delayed
    for head, target in at_d.targets.items():
        np.testing.assert_array_equal(target, at_0.targets[head][delay:])
    assert not np.array_equal(at_d.numeric[:, :state], at_0.numeric[delay:, :state])  # the state did move


@pytest.mark.parametrize("delay", [0, 18])
def test_hiding_the_game_state_leaves_only_the_own_previous_inputs(trajectory, delay):
    seen, blind = align(trajectory, delay), align(trajectory, delay, hide_game_state=True)
    state = slice(0, features.STATE_NUMERIC_SIZE)
    assert not blind.numeric[:, state].any() and not blind.categorical.any()
    assert seen.numeric[:, state].any() and seen.categorical.any()  # there was a game state to hide
    np.testing.assert_array_equal(blind.numeric[:, features.STATE_NUMERIC_SIZE :], seen.numeric[:, features.STATE_NUMERIC_SIZE :])
    for head, target in seen.targets.items():
        np.testing.assert_array_equal(blind.targets[head], target)


def test_trajectories_name_their_player():
    trajs, _ = game_to_trajectories(read_game(GAMES / "py-slippi_v3.14.0.slp"), GAMES / "py-slippi_v3.14.0.slp")
    assert [t.player for t in trajs] == ["ABCD＃123", "EFGH＃456"]
    assert trajs[0].head(10).player == "ABCD＃123"
