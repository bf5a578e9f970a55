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

`scan_split` is one pass over the targets only: the number of windows (for
`steps_per_epoch`) and the baselines' statistics, streamed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_lstm.data import controller, features, tfds_dataset
from keras_lstm.data.windows import make_windows
from keras_lstm.evaluation.baselines import BaselineStats
from keras_lstm.training import distribute

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


def _check_window_options(window_size: int, stride: int, delay: int) -> None:
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
) -> tf.data.Dataset:
    """Unbatched `(x, y)` windows: x = `{"numeric": [W, NUMERIC_SIZE],
    "categorical": [W, CATEGORICAL_SIZE]}`, y = the controller at the last frame.

    `repeat=True` gives an endless stream (epochs reshuffled, deterministic for
    a seed); otherwise one pass.
    """
    _check_window_options(window_size, stride, delay)
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
            return x, {h: tf.gather(v, ends_chunk) for h, v in targets.items()}

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
    **window_options,
) -> Callable[[tf.distribute.InputContext], tf.data.Dataset]:
    """For `strategy.distribute_datasets_from_function`: each input pipeline
    (one per worker) reads its own shard, shuffles and repeats it, and batches
    at the per-replica batch size. The stream's order is fixed by `seed`;
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
        return batches.skip(skip_steps) if skip_steps else batches

    return make


# -- one pass over the targets: window counts and baseline statistics ---------


class BaselineAccumulator:
    """`baselines.fit_baselines`, streamed: add the targets at predicted frames
    and the controller one frame earlier, chunk by chunk; `stats()` gives the
    same numbers as `fit_baselines` on everything at once."""

    def __init__(self):
        self.frames = 0
        self.buttons_on = np.zeros(len(controller.BUTTONS), np.float64)
        self.buttons_changed = np.zeros(len(controller.BUTTONS), np.int64)
        self.class_counts = {h: np.zeros(controller.HEAD_CLASSES[h], np.int64) for h in controller.CLASS_HEADS}
        self.changed = {h: 0 for h in controller.CLASS_HEADS}

    def add(self, targets: dict, previous: dict) -> None:
        buttons = np.asarray(targets["buttons"], np.float64)
        self.frames += len(buttons)
        self.buttons_on += buttons.sum(0)
        self.buttons_changed += (buttons != np.asarray(previous["buttons"])).sum(0)
        for head in controller.CLASS_HEADS:
            self.class_counts[head] += np.bincount(targets[head], minlength=controller.HEAD_CLASSES[head])[: controller.HEAD_CLASSES[head]]
            self.changed[head] += int(np.sum(np.asarray(targets[head]) != np.asarray(previous[head])))

    def stats(self) -> BaselineStats:
        if self.frames == 0:
            raise ValueError("no training frames to fit the baselines on")
        n = self.frames
        button_prior = (self.buttons_on + 1) / (n + 2)
        class_prior, change = {}, {}
        for head in controller.CLASS_HEADS:
            counts = self.class_counts[head].astype(np.float64) + 1
            class_prior[head] = (counts / counts.sum()).tolist()
            change[head] = float(np.clip(self.changed[head] / n, 1e-4, 1.0))
        change["buttons"] = np.clip(self.buttons_changed / n, 1e-4, 1.0).tolist()
        return BaselineStats(button_prior.tolist(), class_prior, change)


@dataclasses.dataclass
class SplitScan:
    """What one pass over a split's targets gives."""

    windows_per_example: list  # [num_examples] windows in each trajectory
    frames: int  # per-frame rows stored (before alignment)
    trajectories_too_short: int
    stats: BaselineStats | None

    @property
    def windows(self) -> int:
        return int(sum(self.windows_per_example))

    def shard_windows(self, num_shards: int) -> list[int]:
        n = len(self.windows_per_example)
        return [
            int(sum(self.windows_per_example[slice(*shard_bounds(n, k, num_shards))])) for k in range(num_shards)
        ]


def scan_split(builder, split: str, window_size: int, stride: int, delay: int, fit_stats: bool = True) -> SplitScan:
    """Count the windows of every trajectory and (optionally) fit the
    baselines, reading the targets only (the states are not decompressed)."""
    _check_window_options(window_size, stride, delay)
    skip = {"state_numeric": tfds.decode.SkipDecoding(), "state_categorical": tfds.decode.SkipDecoding()}
    ds = read_examples(builder, split, decoders=skip)
    ds = ds.map(lambda ex: ex["targets"], num_parallel_calls=tf.data.AUTOTUNE)
    first = 1 + delay
    accumulator = BaselineAccumulator() if fit_stats else None
    counts, frames, too_short = [], 0, 0
    for targets in tfds.as_numpy(ds):
        T = len(targets["main_x"])
        frames += T
        ends = window_ends(T - first, window_size, stride)
        counts.append(len(ends))
        if not len(ends):
            too_short += 1
            continue
        if accumulator is not None:
            predicted = {h: v[first + ends] for h, v in targets.items()}
            previous = {h: v[first + ends - 1] for h, v in targets.items()}
            predicted["buttons"] = predicted["buttons"].astype(np.float32)
            previous["buttons"] = previous["buttons"].astype(np.float32)
            accumulator.add(predicted, previous)
    stats = accumulator.stats() if accumulator is not None and accumulator.frames else None
    return SplitScan(counts, frames, too_short, stats)


# -- what `train` needs, from a prepared dataset -------------------------------


@dataclasses.dataclass
class TrainInputs:
    """Everything `train.train` takes from its data, whichever the source.

    `make_train_dataset(skip_steps)` is called after the model is built,
    under the strategy: the training batches of every epoch in a fixed order
    (the same for the same seed), less the first `skip_steps` (batches a
    resumed run already trained on); `steps_per_epoch` batches make an epoch.
    """

    make_train_dataset: Callable[[int], object]
    steps_per_epoch: int
    train_windows: int
    val: object  # data.Windows, in memory (evaluation gathers from it)
    stats: BaselineStats
    train_files: list
    val_files: list
    train_counts: dict
    counts: dict
    skipped: list


def prepared_inputs(config, strategy: tf.distribute.Strategy | None = None, **window_options) -> TrainInputs:
    """`TrainInputs` from the dataset `keras-lstm prepare` wrote to
    `config.data_dir` (the config with `config.val_fraction` and `config.seed`).

    Training windows stream from disk, `strategy`'s workers each reading their
    own shard; the validation windows (15 % of the games by default) are read
    into memory, exactly as `train.load_split` makes them, so the evaluation
    is the same code on the same frames.
    """
    strategy = strategy or tf.distribute.get_strategy()
    for name in ("max_replays", "max_frames"):
        if getattr(config, name) is not None:
            flag = name.replace("_", "-")
            raise ValueError(f"--{flag} applies to --replays; with --data-dir, prepare a smaller folder instead")
    builder = tfds_dataset.load_builder(config.data_dir, config.val_fraction, config.seed)
    meta = builder.info.metadata
    root = Path(meta["replays_dir"])
    W, stride, delay = config.window_size, config.stride, config.delay

    if tfds_dataset.TRAIN not in builder.info.splits:
        raise ValueError(f"{config.data_dir}: the prepared dataset has no training split")
    scan = scan_split(builder, tfds_dataset.TRAIN, W, stride, delay)
    if scan.windows < config.batch_size:
        raise ValueError(
            f"{config.data_dir}: only {scan.windows} training windows of {W} frames, fewer than one batch of {config.batch_size}"
        )
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise ValueError(f"batch-size ({config.batch_size}) must be a multiple of the {replicas} replicas")
    workers = distribute.num_workers(strategy)
    if len(scan.windows_per_example) < workers or min(scan.shard_windows(workers)) == 0:
        raise ValueError(
            f"{config.data_dir}: {len(scan.windows_per_example)} training trajectories cannot give each of {workers} workers windows"
        )

    val_trajectories = tfds_dataset.read_trajectories(builder, tfds_dataset.VALIDATION)
    val = make_windows([features.align(t, delay) for t in val_trajectories], W, stride)
    def make_train_dataset(skip_steps: int = 0):
        train_fn = dataset_fn(builder, tfds_dataset.TRAIN, config.batch_size, W, stride, delay, config.seed, skip_steps, **window_options)
        return strategy.distribute_datasets_from_function(train_fn)

    counts = meta["counts"]
    return TrainInputs(
        make_train_dataset=make_train_dataset,
        steps_per_epoch=scan.windows // config.batch_size,
        train_windows=scan.windows,
        val=val,
        stats=scan.stats,
        train_files=[str(root / f) for f in meta["train_files"]],
        val_files=[str(root / f) for f in meta["val_files"]],
        train_counts=dict(counts[tfds_dataset.TRAIN]),
        counts={k: counts[tfds_dataset.TRAIN][k] + counts[tfds_dataset.VALIDATION][k] for k in counts[tfds_dataset.TRAIN]},
        skipped=[(str(root / name), reason) for name, reason in meta["skipped"]],
    )
