"""Augmented training windows stay games a player could have played."""

import numpy as np
import pytest
import tensorflow as tf

from keras_lstm.config import TrainConfig
from keras_lstm.data import augment, controller, features
from keras_lstm.data.trajectories import load_trajectories
from keras_lstm.data.windows import make_windows

W = 30


@pytest.fixture(scope="module")
def windows(replays_dir):
    report = load_trajectories([replays_dir / "games" / "py-slippi_v3.14.0.slp"])  # a Slippi version with velocities
    return make_windows([features.align(t) for t in report.trajectories], W, stride=7)


def batch(windows, n=64):
    spread = windows.ends[:: len(windows) // n][:n]  # windows from the whole game
    x, y = windows.gather(spread, target_frames=W)  # targets of every frame
    return {k: tf.constant(v) for k, v in x.items()}, {k: tf.constant(v) for k, v in y.items()}


def flags(n, every):
    return tf.constant(np.arange(n) % every == 0)


def column(player: int, field: str) -> int:
    return player * len(features.PLAYER_FIELDS) + [f for f, _ in features.PLAYER_FIELDS].index(field)


def previous_input_matches_targets(x, y) -> bool:
    """Row t of the numeric input holds the controller of row t-1's target."""
    pad = x["numeric"].numpy()[:, 1:, features.STATE_NUMERIC_SIZE :]
    targets = {h: v.numpy()[:, :-1] for h, v in y.items()}
    n, t = targets["main_x"].shape
    expected = controller.targets_as_input({h: v.reshape(n * t, *v.shape[2:]) for h, v in targets.items()})
    return np.allclose(pad.reshape(n * t, -1), expected)


def test_the_previous_input_stays_the_previous_target(windows):
    x, y = batch(windows)
    assert previous_input_matches_targets(x, y)
    for mirror, swap in ((flags(64, 2), flags(64, 64)), (flags(64, 64), flags(64, 3)), (flags(64, 2), flags(64, 3))):
        ax, ay = augment.transform(x, y, mirror, swap)
        assert previous_input_matches_targets(ax, ay)


def test_mirror_flips_every_horizontal_quantity_and_nothing_else(windows):
    x, y = batch(windows)
    everyone = tf.ones([64], tf.bool)
    mx, my = augment.transform(x, y, everyone, tf.zeros([64], tf.bool))
    before, after = x["numeric"].numpy(), mx["numeric"].numpy()
    for player in (0, 1):
        # velocities still point the way the position moves (a missed column would not)
        dx = np.diff(after[:, :, column(player, "x")], axis=1)
        vx = after[:, 1:, column(player, "self_x_air")] + after[:, 1:, column(player, "self_x_ground")]
        moving = (np.abs(dx) > 0.005) & (np.abs(vx) > 0.005)
        assert moving.sum() > 50
        assert np.mean(np.sign(dx[moving]) == np.sign(vx[moving])) > 0.8
        np.testing.assert_array_equal(after[..., column(player, "facing")], -before[..., column(player, "facing")])
        np.testing.assert_array_equal(after[..., column(player, "y")], before[..., column(player, "y")])
    np.testing.assert_array_equal(my["main_x"].numpy(), controller.STICK_CLASSES - 1 - y["main_x"].numpy())
    np.testing.assert_array_equal(my["c_y"].numpy(), y["c_y"].numpy())
    np.testing.assert_array_equal(my["buttons"].numpy(), y["buttons"].numpy())
    np.testing.assert_array_equal(mx["categorical"].numpy(), x["categorical"].numpy())


def test_each_transformation_undoes_itself_and_leaves_unchosen_windows_alone(windows):
    x, y = batch(windows)
    mirror, swap = flags(64, 2), flags(64, 5)
    ax, ay = augment.transform(*augment.transform(x, y, mirror, swap), mirror, swap)
    np.testing.assert_array_equal(ax["numeric"].numpy(), x["numeric"].numpy())
    for head in controller.HEADS:
        np.testing.assert_array_equal(ay[head].numpy(), y[head].numpy())
    ax, ay = augment.transform(x, y, mirror, swap)
    untouched = ~(mirror.numpy() | swap.numpy())
    np.testing.assert_array_equal(ax["numeric"].numpy()[untouched], x["numeric"].numpy()[untouched])
    swapped = swap.numpy() & ~mirror.numpy()
    b = list(controller.BUTTONS)
    np.testing.assert_array_equal(ay["buttons"].numpy()[swapped][..., b.index("Y")], y["buttons"].numpy()[swapped][..., b.index("X")])
    np.testing.assert_array_equal(ay["buttons"].numpy()[swapped][..., b.index("L")], y["buttons"].numpy()[swapped][..., b.index("R")])


def test_draws_are_fixed_by_seed_and_batch_index_and_about_half(windows):
    x, y = batch(windows)
    one = augment.augment_batch(x, y, tf.constant([0, 5], tf.int64), ("mirror", "swap-buttons"))
    again = augment.augment_batch(x, y, tf.constant([0, 5], tf.int64), ("mirror", "swap-buttons"))
    other = augment.augment_batch(x, y, tf.constant([0, 6], tf.int64), ("mirror", "swap-buttons"))
    np.testing.assert_array_equal(one[0]["numeric"].numpy(), again[0]["numeric"].numpy())
    assert not np.array_equal(one[0]["numeric"].numpy(), other[0]["numeric"].numpy())
    mirrored = np.mean(one[1]["main_x"].numpy() != y["main_x"].numpy(), axis=1) > 0  # a window with any non-centre x
    assert 0.2 < mirrored.mean() < 0.8
    only_swap = augment.augment_batch(x, y, tf.constant([0, 5], tf.int64), ("swap-buttons",))
    np.testing.assert_array_equal(only_swap[1]["main_x"].numpy(), y["main_x"].numpy())


def test_a_resumed_run_draws_what_the_uninterrupted_run_drew(windows):
    from keras_lstm.training.inputs import training_batches

    config = TrainConfig.from_flat(batch_size=8, epochs=1, window_size=W, augment="mirror,swap-buttons")
    steps = len(windows) // 8
    full = list(training_batches(windows, config, steps))
    resumed = list(training_batches(windows, config, steps, skip_steps=3))
    assert len(resumed) == len(full) - 3
    for (fx, fy), (rx, ry) in zip(full[3:], resumed):
        np.testing.assert_array_equal(fx["numeric"].numpy(), rx["numeric"].numpy())
        np.testing.assert_array_equal(fy["main_x"].numpy(), ry["main_x"].numpy())
    plain = list(training_batches(windows, config.replace(augment="none"), steps))
    assert any(not np.array_equal(a[0]["numeric"].numpy(), b[0]["numeric"].numpy()) for a, b in zip(full, plain))


def test_the_option_is_checked_and_defaults_off_for_carried_state():
    with pytest.raises(ValueError, match="augment"):
        TrainConfig.from_flat(augment="mirror,flip").validate()
    assert TrainConfig.from_flat().augmentations == ("mirror", "swap-buttons")
    assert TrainConfig.from_flat(carried_state=True).augmentations == ()
    segments = TrainConfig.from_flat(augment="mirror", carried_state=True)
    segments.validate()  # segments take it too, a piece of a game at a time
    assert segments.augmentations == ("mirror",)
    assert TrainConfig.from_flat(augment="none").augmentations == ()
    assert TrainConfig.from_flat(augment="swap-buttons, mirror").augmentations == ("swap-buttons", "mirror")
