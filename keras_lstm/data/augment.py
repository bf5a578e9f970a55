"""Training windows made new without new games: the mirror image, and the
buttons Melee treats as one.

- `mirror`: the game seen left-right mirrored. Every horizontal quantity
  changes sign (positions, facing, the three x velocities, of both players),
  and so do the x axes of both sticks, in the previous input the policy sees
  and in its targets (class c becomes 16 - c). Melee's physics are the same
  both ways round; what a mirrored window does not mirror is a stage whose
  layout is not symmetric (Fountain of Dreams' platforms, Pokémon Stadium's
  transformations), a small error for the variety it buys.
- `swap-buttons`: X for Y and L for R, in the previous input and the
  targets. The game does the same for either button of each pair (jump,
  shield/air-dodge); which one a player uses is a habit. Swapping lets the
  policy learn "how long this player holds jump" from every player, not only
  from those who jump with the same button.

Each window of a batch draws its own transformations (each with probability
1/2), from a stateless seed of (run seed, batch index), so an epoch's
batches are the same in a resumed run as in an uninterrupted one.
`docs/QUALITY.md` has the measurements.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_lstm.config import AUGMENTATIONS
from keras_lstm.data import controller, features

_FIELDS = [name for name, _ in features.PLAYER_FIELDS]
_HORIZONTAL_FIELDS = ("x", "facing", "self_x_air", "knockback_x", "self_x_ground")
_PAD = features.STATE_NUMERIC_SIZE  # where the previous controller starts in `numeric`
_STICK_OFFSET = _PAD + len(controller.BUTTONS)  # the sticks follow the 8 buttons

# Numeric columns whose sign a mirror flips: each player's horizontal fields,
# and the x axis of both sticks in the previous controller.
MIRRORED_COLUMNS = tuple(
    sorted(
        [player * len(_FIELDS) + _FIELDS.index(f) for player in (0, 1) for f in _HORIZONTAL_FIELDS]
        + [_STICK_OFFSET + controller.STICK_HEADS.index(h) for h in ("main_x", "c_x")]
    )
)
MIRRORED_HEADS = ("main_x", "c_x")
SWAPPED_BUTTONS = (("X", "Y"), ("L", "R"))


def _button_permutation(width: int, offset: int) -> np.ndarray:
    """Column order that swaps each pair of `SWAPPED_BUTTONS` (buttons at `offset`)."""
    order = np.arange(width)
    for a, b in SWAPPED_BUTTONS:
        i, j = offset + controller.BUTTONS.index(a), offset + controller.BUTTONS.index(b)
        order[i], order[j] = j, i
    return order


def _per_window(flag, like):
    """`[B]` bool broadcast against a `[B, ...]` tensor."""
    return tf.reshape(flag, tf.concat([tf.shape(flag), tf.ones([tf.rank(like) - 1], tf.int32)], 0))


def transform(x: dict, y: dict, mirror, swap_buttons) -> tuple[dict, dict]:
    """The windows of `(x, y)` mirrored where `mirror[b]`, buttons swapped
    where `swap_buttons[b]` (`[B]` bools). `x["numeric"]` is `[B, W, F]`; the
    targets `[B, ...]` as `Windows.gather` gives them (one frame or several)."""
    numeric = x["numeric"]
    y = dict(y)
    mask = np.zeros(numeric.shape[-1], np.float32)
    mask[list(MIRRORED_COLUMNS)] = 1.0
    sign = 1.0 - 2.0 * tf.cast(_per_window(mirror, numeric), numeric.dtype) * mask
    numeric = numeric * sign
    for head in MIRRORED_HEADS:
        target = y[head]
        y[head] = tf.where(_per_window(mirror, target), tf.cast(controller.STICK_CLASSES - 1, target.dtype) - target, target)

    swapped = tf.gather(numeric, _button_permutation(numeric.shape[-1], _PAD), axis=-1)
    numeric = tf.where(_per_window(swap_buttons, numeric), swapped, numeric)
    buttons = y["buttons"]
    swapped = tf.gather(buttons, _button_permutation(buttons.shape[-1], 0), axis=-1)
    y["buttons"] = tf.where(_per_window(swap_buttons, buttons), swapped, buttons)
    return {**x, "numeric": numeric}, y


def transform_drawn(x: dict, y: dict, draws) -> tuple[dict, dict]:
    """`transform` by each row's draws: `[B, len(AUGMENTATIONS)]` bools, a
    column per augmentation in `AUGMENTATIONS`' order."""
    return transform(x, y, draws[:, AUGMENTATIONS.index("mirror")], draws[:, AUGMENTATIONS.index("swap-buttons")])


def augment_batch(x: dict, y: dict, seed, augmentations: tuple[str, ...]) -> tuple[dict, dict]:
    """`transform` with each window's choices drawn from the stateless
    `seed` (shape [2]): each listed augmentation with probability 1/2."""
    batch = tf.shape(x["numeric"])[0]
    draws = tf.random.stateless_uniform([batch, len(AUGMENTATIONS)], seed=seed) < 0.5
    on = tf.constant([name in augmentations for name in AUGMENTATIONS])
    return transform_drawn(x, y, tf.logical_and(draws, on))


def augmented(batches: tf.data.Dataset, augmentations: tuple[str, ...], seed: int, first_index: int = 0) -> tf.data.Dataset:
    """`(x, y)` batches, each augmented from the seed (`seed`, its index);
    `first_index` is the index of the first batch (a resumed run's skipped
    batches), so resuming draws what the uninterrupted run would have."""
    if not augmentations:
        return batches

    def apply(index, batch):
        x, y = batch
        return augment_batch(x, y, tf.stack([tf.cast(seed, tf.int64), index]), augmentations)

    return batches.enumerate(start=first_index).map(apply, num_parallel_calls=tf.data.AUTOTUNE)
