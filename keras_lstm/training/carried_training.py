"""Training with the recurrent state carried across consecutive segments of a game.

Windowed training (`keras_lstm.training.train`) starts every window from the zero
state and puts the loss on its last frame; in play the state is carried from
the first frame of the game for thousands of frames. This mode trains the way
the policy is deployed:

- each of `streams` batch rows walks through whole games, one `segment_frames`
  slice per training step, in order;
- the state left by one step is the initial state of the row's next step
  (the gradient is stopped there: truncated BPTT over one segment);
- the state is reset to zero where a row starts a new piece of a game;
- the loss is on every frame of the segment, averaged over frames.

Games are cut into pieces of at most `piece_frames` frames (about a minute)
so that the rows stay busy; each piece starts from the zero state, like a
game does. A row that finishes a piece takes the next one from a queue that
is reshuffled (with the seed) every time it runs out, so no row ever waits
or pads.

It is `keras-lstm train`'s default, the corpus recipe
(`TrainConfig.carried_state`; `--temporal` trains on windows instead): the
same trainer, run folder, backups and callbacks as windowed training, with
`CarriedStatePolicy.train_step` under `model.fit`, validated each epoch in
one pass over each validation game (`keras_lstm.evaluation.one_pass`). The
saved model is a plain `BehaviorCloningPolicy`: the carried-state machinery
only exists while training. Gradients come from the hand-written backward
pass of `keras_lstm.model.recurrent.backbone_last_hidden` with every
timestep's output kept.

Why it is the default: each frame's loss is computed once an epoch, so an
epoch costs the frames, not the frames times the windows' overlap (15x at
window 60, stride 4), and the policy trains on the state as the bot builds
it. docs/QUALITY.md has it measured on the 278-game corpus.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_lstm.config import AUGMENTATIONS, DEFAULT_PIECE_FRAMES
from keras_lstm.data import augment, features
from keras_lstm.data.features import PolicyArrays
from keras_lstm.model import tf_training
from keras_lstm.model.losses import flatten_time, policy_loss
from keras_lstm.model.policy import BehaviorCloningPolicy, build_policy


class _StateBox:
    """Holds the carried state variables out of Keras' weight tracking, so
    they are neither trained nor saved."""

    def __init__(self, variables):
        self.variables = variables


class CarriedStatePolicy(BehaviorCloningPolicy):
    """A `BehaviorCloningPolicy` whose `train_step` carries the state from
    one batch to the next, row by row (see the module docstring).

    Batches are `(x, targets, reset)`: `x` as for the policy but
    `[streams, segment_frames, ...]`, targets per frame
    `{head: [streams, segment_frames, ...]}`, and `reset [streams]` (1.0
    where the row starts a new piece and must start from the zero state).

    Args:
        backbone: a `RecurrentBackbone`.
        streams: batch rows (fixed: the carried state has this batch size).

    Example:
    >>> policy = CarriedStatePolicy(build_backbone("lstm", 128), streams=32)
    >>> policy.compile(optimizer="adam")
    >>> policy.fit(segment_dataset(arrays, 60, 32), steps_per_epoch=steps_per_epoch(arrays, 60, 32))
    >>> plain = policy.to_policy()   # a BehaviorCloningPolicy with the same weights
    """

    def __init__(self, backbone, streams: int, **kwargs):
        kwargs.pop("truncate_bptt", None)
        super().__init__(backbone, truncate_bptt=None, **kwargs)
        self.streams = streams
        self._carried = _StateBox(
            tf.nest.map_structure(lambda z: tf.Variable(z, trainable=False), backbone.initial_state(streams))
        )

    def train_step(self, data):
        x, targets, reset_B = data[0], data[1], data[2]
        keep_Bx1 = 1.0 - tf.cast(reset_B, tf.float32)[:, None]
        state = tf.nest.map_structure(lambda v: v * keep_Bx1, self._carried.variables)
        with tf.GradientTape() as tape:
            frames_BxTxE = self.encode(x, training=True)
            outputs_BxTxU, new_state = tf_training.run_backbone(self, frames_BxTxE, state, training=True, all_timesteps=True)
            logits = self.apply_heads(outputs_BxTxU, x["numeric"])
            flat_logits = {h: flatten_time(v) for h, v in logits.items()}
            flat_targets = {h: flatten_time(v) for h, v in targets.items()}
            loss, _ = policy_loss(flat_targets, flat_logits)
            total = tf_training.training_objective(self, loss)
        tf_training.apply_gradients(self, tape, total)
        for var, value in zip(tf.nest.flatten(self._carried.variables), tf.nest.flatten(new_state)):
            var.assign(tf.stop_gradient(value))
        return self.record(loss, flat_targets, flat_logits)

    @property
    def carried_state_variables(self) -> list:
        """The state carried between steps, for backups (a resumed run must
        carry on from the same state)."""
        return tf.nest.flatten(self._carried.variables)

    def to_policy(self) -> BehaviorCloningPolicy:
        """A plain `BehaviorCloningPolicy` holding these weights."""
        b = self.backbone
        plain = build_policy(
            backbone=b.cell_type, embed_size=b.embed_size, hidden_size=b.hidden_size, num_layers=b.num_layers, dropout=b.dropout,
            previous_input_heads=self.previous_input is not None, relative_features=self.encoder.relative_features,
        )
        plain.set_weights(self.get_weights())
        return plain

    def get_config(self):
        return {**super().get_config(), "streams": self.streams}


def cut_pieces(arrays: list[PolicyArrays], segment_frames: int, piece_frames: int) -> list[tuple[int, int, int]]:
    """`[(trajectory, start, segments)]`: each trajectory cut into pieces of
    whole segments, at most `piece_frames` long (the tail shorter than one
    segment is dropped)."""
    per_piece = max(1, piece_frames // segment_frames)
    pieces = []
    for i, a in enumerate(arrays):
        segments = len(a) // segment_frames
        for first in range(0, segments, per_piece):
            pieces.append((i, first * segment_frames, min(per_piece, segments - first)))
    return pieces


def segment_batches(
    arrays: list[PolicyArrays], segment_frames: int, streams: int, piece_frames: int = DEFAULT_PIECE_FRAMES, seed: int = 0,
    augmentations: tuple[str, ...] = (),
):
    """An endless generator of `(x, targets, reset)` numpy batches (see
    `CarriedStatePolicy`): `streams` rows, each walking through pieces of
    games in order, a new piece from a seeded shuffled queue when one ends.

    With `augmentations` (`keras_lstm.data.augment`), each piece draws its
    transformations when a row takes it (each listed one with probability
    1/2) and keeps them to its end, so the carried state sees one consistent
    game; each batch then comes with the rows' draws as a fourth element,
    `[streams, len(AUGMENTATIONS)]` bools in `AUGMENTATIONS`' order. The
    draws have a generator of their own, so the pieces' order is the same
    with or without them."""
    pieces = cut_pieces(arrays, segment_frames, piece_frames)
    if not pieces:
        raise ValueError(f"no game has {segment_frames} frames to train on")
    rng = np.random.default_rng(seed)
    draw_rng = np.random.default_rng([seed, 1])
    listed = np.array([name in augmentations for name in AUGMENTATIONS])
    augmenting = bool(listed.any())
    queue: list = []

    def next_piece():
        if not queue:
            queue.extend(pieces[k] for k in rng.permutation(len(pieces)))
        return queue.pop()

    # Per row: (trajectory, next start frame, segments left).
    rows = [list(next_piece()) for _ in range(streams)]
    fresh = [True] * streams
    draws = np.zeros((streams, len(AUGMENTATIONS)), bool)

    def draw(row):
        if augmenting:
            draws[row] = (draw_rng.random(len(AUGMENTATIONS)) < 0.5) & listed

    for r in range(streams):
        draw(r)
    heads = list(arrays[0].targets)
    while True:
        numeric = np.empty((streams, segment_frames, features.NUMERIC_SIZE), np.float32)
        categorical = np.empty((streams, segment_frames, features.CATEGORICAL_SIZE), np.int32)
        targets = {h: np.empty((streams, segment_frames) + arrays[0].targets[h].shape[1:], arrays[0].targets[h].dtype) for h in heads}
        reset = np.asarray(fresh, np.float32)
        batch_draws = draws.copy()
        for r, (traj, start, left) in enumerate(rows):
            a, end = arrays[traj], start + segment_frames
            numeric[r] = a.numeric[start:end]
            categorical[r] = a.categorical[start:end]
            for h in heads:
                targets[h][r] = a.targets[h][start:end]
            if left > 1:
                rows[r], fresh[r] = [traj, end, left - 1], False
            else:
                rows[r], fresh[r] = list(next_piece()), True
                draw(r)
        x = {"numeric": numeric, "categorical": categorical}
        yield (x, targets, reset, batch_draws) if augmenting else (x, targets, reset)


def segment_dataset(
    arrays: list[PolicyArrays], segment_frames: int, streams: int, piece_frames: int = DEFAULT_PIECE_FRAMES, seed: int = 0,
    augmentations: tuple[str, ...] = (),
) -> tf.data.Dataset:
    """`segment_batches` as an endless, ordered `tf.data.Dataset` of
    `(x, targets, reset)`, each row transformed as its piece drew
    (`augment.transform`). Never shuffle or interleave it: the rows' order
    is what carries the state."""
    sample = arrays[0]
    signature = (
        {
            "numeric": tf.TensorSpec([streams, segment_frames, features.NUMERIC_SIZE], tf.float32),
            "categorical": tf.TensorSpec([streams, segment_frames, features.CATEGORICAL_SIZE], tf.int32),
        },
        {h: tf.TensorSpec([streams, segment_frames] + list(v.shape[1:]), tf.as_dtype(v.dtype)) for h, v in sample.targets.items()},
        tf.TensorSpec([streams], tf.float32),
    )
    augmenting = any(name in augmentations for name in AUGMENTATIONS)
    if augmenting:
        signature += (tf.TensorSpec([streams, len(AUGMENTATIONS)], tf.bool),)
    batches = tf.data.Dataset.from_generator(
        lambda: segment_batches(arrays, segment_frames, streams, piece_frames, seed, augmentations), output_signature=signature
    )
    if augmenting:
        batches = batches.map(lambda x, targets, reset, draws: (*augment.transform_drawn(x, targets, draws), reset))  # in order
    return batches.prefetch(2)


def steps_per_epoch(arrays: list[PolicyArrays], segment_frames: int, streams: int, piece_frames: int = DEFAULT_PIECE_FRAMES) -> int:
    """Steps that show every whole segment of the training games once."""
    segments = sum(p[2] for p in cut_pieces(arrays, segment_frames, piece_frames))
    return max(1, -(-segments // streams))


__all__ = [
    "CarriedStatePolicy",
    "cut_pieces",
    "segment_batches",
    "segment_dataset",
    "steps_per_epoch",
]
