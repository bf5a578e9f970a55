"""Streaming `tf.data` input from a prepared dataset (`keras_lstm.data.tfds_dataset`).

Per trajectory (one example): the no-leakage alignment with `--delay`
(`features.align`, in TensorFlow ops), then the windows `data.make_windows`
would make (same end rows, same `--stride`), gathered a chunk at a time. Across
trajectories: a shuffle of examples, an interleave of `cycle_length`
trajectories whose window order is itself shuffled, then a shuffle buffer of
windows; then batches and prefetch. Nothing holds the whole split in memory.

Unshuffled, the stream is exactly the windows and targets of
`make_windows([align(t, delay) for t in load_trajectories(files)])`
(`keras_lstm.data.trajectories`), in the same order (tests hold the two equal).

Sharding: worker `k` of `n` reads examples `[k*N//n, (k+1)*N//n)` of the
split (TFDS split slicing), so each worker reads only its own part.

What training takes from a prepared dataset (window counts, baselines, the
distributed stream) is built on these in `keras_lstm.training.inputs`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_lstm.data import augment, controller, tfds_dataset

DEFAULT_CYCLE_LENGTH = 8
DEFAULT_EXAMPLE_BUFFER = 8
DEFAULT_SHUFFLE_BUFFER = 2048
GATHER_CHUNK = 256


# -- the same maths as features.align / data.make_windows, in TF -------------


def targets_as_input_tf(targets: dict) -> tf.Tensor:
    """`controller.targets_as_input` in TensorFlow: `[T, CONTROLLER_INPUT_SIZE]`."""
    stick_scale = 2.0 / (controller.STICK_CLASSES - 1)
    cols = [tf.cast(targets["buttons"], tf.float32)]
    cols += [tf.cast(targets[h], tf.float32)[:, None] * stick_scale - 1.0 for h in controller.STICK_HEADS]
    cols.append(tf.cast(targets["shoulder"], tf.float32)[:, None] / (controller.SHOULDER_CLASSES - 1))
    return tf.concat(cols, axis=1)


def align_tf(example: dict, delay: int) -> tuple[tf.Tensor, tf.Tensor, dict]:
    """`features.align` on one decoded example: `(numeric [n, NUMERIC_SIZE],
    categorical [n, CATEGORICAL_SIZE], targets {head: [n, ...]})`, n = T-1-delay
    (0 when the trajectory is too short)."""
    first = 1 + delay
    T = tf.shape(example["state_numeric"])[0]
    n = tf.maximum(T - first, 0)
    targets = {h: example["targets"][h] for h in controller.HEADS}
    targets["buttons"] = tf.cast(targets["buttons"], tf.float32)
    prev_controller = targets_as_input_tf({h: v[first - 1 : first - 1 + n] for h, v in targets.items()})
    numeric = tf.concat([example["state_numeric"][:n], prev_controller], axis=1)
    categorical = example["state_categorical"][:n]
    return numeric, categorical, {h: v[first : first + n] for h, v in targets.items()}


def first_window_end(window_size: int) -> int:
    """Row of the first window's last frame (row `end - 1` must exist too, for
    the repeat baseline), as in `data.make_windows`."""
    return max(window_size - 1, 1)


def window_ends(n_rows: int, window_size: int, stride: int) -> np.ndarray:
    """End rows of the windows over one aligned trajectory of `n_rows` rows."""
    return np.arange(first_window_end(window_size), max(n_rows, 0), stride, dtype=np.int64)


def check_window_options(window_size: int, stride: int, delay: int) -> None:
    """Raise ValueError for a window size or stride under 1, or a negative delay."""
    if window_size < 1 or stride < 1:
        raise ValueError(f"window_size and stride must be positive, got {window_size} and {stride}")
    if delay < 0:
        raise ValueError(f"delay must be >= 0, got {delay}")


# -- reading ------------------------------------------------------------------


def shard_bounds(num_examples: int, index: int, count: int) -> tuple[int, int]:
    """Example range `[lo, hi)` read by shard `index` of `count`."""
    if not 0 <= index < count:
        raise ValueError(f"shard index {index} outside 0..{count - 1}")
    return index * num_examples // count, (index + 1) * num_examples // count


def read_examples(builder, split: str, shard_index: int = 0, num_shards: int = 1, decoders=None) -> tf.data.Dataset:
    """One shard of a split's examples, in generation order."""
    n = builder.info.splits[split].num_examples
    lo, hi = shard_bounds(n, shard_index, num_shards)
    if hi <= lo:
        raise ValueError(f"{split} split has {n} trajectories, too few for {num_shards} shards")
    read_config = tfds.ReadConfig(try_autocache=False)
    with tfds_dataset.quiet_tfds():
        return builder.as_dataset(split=f"{split}[{lo}:{hi}]", shuffle_files=False, read_config=read_config, decoders=decoders)


def window_dataset(
    builder,
    split: str,
    window_size: int,
    stride: int = 1,
    delay: int = 0,
    shuffle: bool = False,
    seed: int = 0,
    repeat: bool = False,
    shard_index: int = 0,
    num_shards: int = 1,
    cycle_length: int = DEFAULT_CYCLE_LENGTH,
    example_buffer: int = DEFAULT_EXAMPLE_BUFFER,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    target_frames: int = 1,
) -> tf.data.Dataset:
    """Unbatched `(x, y)` windows: x = `{"numeric": [W, NUMERIC_SIZE],
    "categorical": [W, CATEGORICAL_SIZE]}`, y = the controller at the last
    frame, or at the last `target_frames` frames (as `Windows.gather`).

    `repeat=True` gives an endless stream (epochs reshuffled, deterministic for
    a seed); otherwise one pass.
    """
    check_window_options(window_size, stride, delay)
    W = window_size
    offsets = tf.range(1 - W, 1, dtype=tf.int64)
    first_end = first_window_end(W)

    def windows_of(example, shuffle_seed=None) -> tf.data.Dataset:
        numeric, categorical, targets = align_tf(example, delay)
        n = tf.cast(tf.shape(numeric)[0], tf.int64)
        ends = tf.range(first_end, tf.maximum(n, first_end), stride, dtype=tf.int64)
        if shuffle_seed is not None:
            ends = tf.random.experimental.stateless_shuffle(ends, seed=shuffle_seed)

        def gather(ends_chunk):
            rows = ends_chunk[:, None] + offsets[None, :]
            x = {"numeric": tf.gather(numeric, rows), "categorical": tf.gather(categorical, rows)}
            at = ends_chunk if target_frames == 1 else rows[:, W - target_frames :]
            return x, {h: tf.gather(v, at) for h, v in targets.items()}

        return tf.data.Dataset.from_tensor_slices(ends).batch(GATHER_CHUNK).map(gather).unbatch()

    examples = read_examples(builder, split, shard_index, num_shards)
    examples = examples.map(lambda ex: {k: ex[k] for k in ("state_numeric", "state_categorical", "targets")})
    if not shuffle:
        return (examples.repeat() if repeat else examples).flat_map(windows_of)
    # Shuffle, then repeat: each epoch is a new order of the trajectories.
    examples = examples.shuffle(example_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        examples = examples.repeat()
    # One stateless seed per (epoch, trajectory), from a seeded random stream.
    seeds = tf.data.Dataset.random(seed=seed).batch(2)
    windows = tf.data.Dataset.zip(examples, seeds).interleave(
        windows_of, cycle_length=cycle_length, block_length=1, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    return windows.shuffle(shuffle_buffer, seed=seed)


def batched(windows: tf.data.Dataset, batch_size: int, drop_remainder: bool = True) -> tf.data.Dataset:
    return windows.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


def dataset_fn(
    builder,
    split: str,
    global_batch_size: int,
    window_size: int,
    stride: int,
    delay: int,
    seed: int,
    skip_steps: int = 0,
    augmentations: tuple[str, ...] = (),
    **window_options,
) -> Callable[[tf.distribute.InputContext], tf.data.Dataset]:
    """For `strategy.distribute_datasets_from_function`: each input pipeline
    (one per worker) reads its own shard, shuffles and repeats it, and batches
    at the per-replica batch size, each batch then `augmentations`
    (`keras_lstm.data.augment`). The stream's order is fixed by `seed`;
    `skip_steps` drops the batches a resumed run has already trained on."""

    def make(context: tf.distribute.InputContext) -> tf.data.Dataset:
        windows = window_dataset(
            builder,
            split,
            window_size,
            stride,
            delay,
            shuffle=True,
            seed=seed + 1000 * context.input_pipeline_id,
            repeat=True,
            shard_index=context.input_pipeline_id,
            num_shards=context.num_input_pipelines,
            **window_options,
        )
        batches = batched(windows, context.get_per_replica_batch_size(global_batch_size), drop_remainder=True)
        batches = batches.skip(skip_steps) if skip_steps else batches
        return augment.augmented(batches, augmentations, seed + 1000 * context.input_pipeline_id, first_index=skip_steps)

    return make
