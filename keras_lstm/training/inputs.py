"""What `train` takes from its data, whichever the source: `TrainInputs`.

- `replay_inputs`: a replay folder, parsed, split by game (`load_split`) and
  windowed in memory; the training batches of every epoch in a fixed order
  (`training_batches`);
- `carried_inputs`: the same split, for carried-state training: the training
  batches are segments of whole games (`keras_lstm.training.carried_training`);
- `prepared_inputs`: a dataset prepared once (`keras_lstm.data.prepared`),
  the training windows streamed from disk (`keras_lstm.data.pipeline`), each
  worker of a `tf.distribute` strategy reading its own shard. `scan_split`
  is one pass over the split's targets only: the number of windows (for
  `steps_per_epoch`) and the baselines' statistics, streamed
  (`keras_lstm.evaluation.baselines.BaselineAccumulator`).

All three give the same validation windows, baselines, file lists and counts
for the same replays and options (tests hold them equal). Each takes the run's
options as `config`, a `keras_lstm.training.train.TrainConfig` (not imported
here: `train` imports this module).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_lstm.data import augment, features, pipeline, prepared
from keras_lstm.data.filters import left_out_text
from keras_lstm.data.replays import find_replays
from keras_lstm.data.trajectories import LoadReport, load_trajectories
from keras_lstm.data.players import read_player_keys
from keras_lstm.data.split import split_by_game, split_by_player
from keras_lstm.data.windows import Windows, make_windows
from keras_lstm.evaluation import baselines, one_pass
from keras_lstm.model.backbone import recurrent_param_count
from keras_lstm.training import carried_training, distribute

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
    stats: baselines.BaselineStats
    train_files: list
    val_files: list
    train_counts: dict
    counts: dict
    skipped: list
    release: Callable[[], None] = lambda: None  # let go of what the source holds (a prepared dataset's parts), once trained
    # Free the training frames once trained, before the final evaluation takes
    # its memory: a `from_generator` dataset keeps its generator, and so the
    # frames, alive after `fit` has let it go.
    forget_training_frames: Callable[[], None] = lambda: None
    split_counts: dict = dataclasses.field(default_factory=lambda: {"split_by": "game"})
    train_players: list = dataclasses.field(default_factory=list)  # by player: every player of a training game
    listed_files: list = dataclasses.field(default_factory=list)  # every file the split saw (--train-games trains on some); [] if train + val


# -- from a replay folder, in memory ------------------------------------------


@dataclasses.dataclass
class PreparedData:
    """A replay folder split by game, read and windowed (`load_split`)."""

    train: Windows
    val: Windows
    train_report: LoadReport
    val_report: LoadReport
    train_files: list[str]
    val_files: list[str]
    split_counts: dict = dataclasses.field(default_factory=lambda: {"split_by": "game"})
    train_players: list = dataclasses.field(default_factory=list)
    listed_files: list = dataclasses.field(default_factory=list)


# Memory that reading replays into windows takes, per byte of .slp file: the
# growth of the resident set over `load_split` on ../shared/replays/games
# (198 MB for 59 MB of files on 2026-11-26), rounded up.
MEMORY_PER_REPLAY_BYTE = 3.5


def available_memory_bytes() -> int | None:
    """Memory the system can give this process now (Linux's MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size if path.is_file() else 0
    except OSError:  # unreadable entries are skipped (and named) later
        return 0


def training_memory_bytes(config) -> int:
    """A lower bound of the memory training `config` (a TrainConfig) takes,
    in bytes: each recurrent weight 4 times in float32 (the weight, its
    gradient, Adam's two slots), and for each frame of a batch's windows
    (the last --truncate-bptt of them) each layer's gates, state and output,
    kept for the backward pass."""
    model, optim = config.model, config.optim
    params = sum(
        recurrent_param_count(model.backbone, model.embed_size if i == 0 else model.hidden_size, model.hidden_size)
        for i in range(model.num_layers)
    )
    rows = optim.carried_streams if optim.carried_state else optim.batch_size
    frames = min(config.data.window_size, optim.truncate_bptt or config.data.window_size)
    per_unit = (4 if model.backbone == "lstm" else 3) + 2
    return 4 * (4 * params + rows * frames * model.num_layers * model.hidden_size * per_unit)


def check_training_fits_memory(config) -> None:
    """One-line ValueError, before anything is built, when training `config`
    needs more memory than the system has available now (`load_split` and
    `prepared_inputs` ask, beside the replays' own `check_fits_in_memory`)."""
    available = available_memory_bytes()
    need = training_memory_bytes(config)
    if available is not None and need > available:
        model, optim = config.model, config.optim
        rows = f"--carried-streams {optim.carried_streams}" if optim.carried_state else f"--batch-size {optim.batch_size}"
        raise ValueError(
            f"the model does not fit in memory: --hidden-size {model.hidden_size}, --num-layers {model.num_layers}, "
            f"--embed-size {model.embed_size}, {rows} and --window-size {config.data.window_size} need at least "
            f"{need / 1e9:,.1f} GB to train ({available / 1e9:,.1f} GB available); use smaller sizes"
        )


def check_fits_in_memory(folder, paths: list[Path], max_frames: int | None) -> None:
    """Before reading a replay folder into memory: one-line ValueError if it
    would need more than 80 % of the memory available, pointing to `prepare`."""
    if max_frames is not None:  # capped: it reads only what fits the cap
        return
    available = available_memory_bytes()
    need = MEMORY_PER_REPLAY_BYTE * sum(_size(p) for p in paths)
    if available is not None and need > 0.8 * available:
        raise ValueError(
            f"{folder}: {len(paths):,} replays would take ~{need / 1e9:.1f} GB of memory to train on from the folder "
            f"({available / 1e9:.1f} GB available); prepare a dataset once with `keras-lstm prepare --replays {folder} "
            f"--data-dir DATA` and train with --data-dir DATA (streamed), or use --max-replays / --max-frames"
        )


@dataclasses.dataclass
class ReadSplit:
    """A replay folder split (by game or by player) and read (`read_split`)."""

    train_report: LoadReport
    val_report: LoadReport
    train_files: list[str]
    val_files: list[str]
    split_counts: dict  # how the split went: by what, and (by player) the players on each side
    train_players: list[str]  # every player of a training game (by player; else [])
    cap_train: int | None = None  # the frames --max-frames let each side read
    cap_val: int | None = None
    listed_files: list = dataclasses.field(default_factory=list)  # every file the split saw


def split_files(config, paths: list[Path]) -> tuple[list[str], list[str], dict, list[str]]:
    """`(train_files, val_files, split_counts, train_players)` of a folder's
    files by `--split-by`, less, with `--train-games N`, all but a seeded
    sample of N training games (the validation games stay as they are)."""
    names = [str(p) for p in paths]
    d = config.data
    players_of = {n: read_player_keys(n) for n in names} if d.split_by == "player" else None
    found = split_by_player(players_of, d.val_fraction, config.split_seed) if players_of is not None else None
    train, val = (found.train_files, found.val_files) if found else split_by_game(names, d.val_fraction, config.split_seed)
    if d.train_games is not None and d.train_games < len(train):
        keep = set(np.random.default_rng([config.split_seed, len(train)]).choice(len(train), d.train_games, replace=False).tolist())
        train = [f for i, f in enumerate(train) if i in keep]
        if found:  # the players of the games kept
            found = dataclasses.replace(found, train_files=train, train_players=sorted({k for f in train for k in players_of[f]}))
    counts = found.counts() if found else {"split_by": "game"}
    counts["train_games"], counts["val_games"] = len(train), len(val)
    return train, val, counts, found.train_players if found else []


def read_split(config, on_skip: Callable[[str, str], None] | None = None) -> ReadSplit:
    """Find, split and read the replays (refusing, before reading, a folder
    too large for memory). One-line errors when nothing is left to train on."""
    paths = replay_paths(config)
    check_fits_in_memory(config.data.replays, paths, config.data.max_frames)
    check_training_fits_memory(config)  # the model too, before anything is read or built
    train_files, val_files, split_counts, train_players = split_files(config, paths)
    cap_train, cap_val = None, config.val_max_frames
    if config.data.max_frames is not None:
        share = max(1, int(config.data.max_frames * config.data.val_fraction))
        cap_val = share if cap_val is None else min(cap_val, share)
        cap_train = max(1, config.data.max_frames - cap_val)
    keep = config.replay_filter
    train_report = load_trajectories([Path(p) for p in train_files], max_frames=cap_train, on_skip=on_skip, replay_filter=keep)
    val_report = load_trajectories([Path(p) for p in val_files], max_frames=cap_val, on_skip=on_skip, replay_filter=keep)
    if not train_report.trajectories:
        skipped = train_report.replays_skipped + val_report.replays_skipped
        left_out = left_out_text({k: train_report.filtered[k] + val_report.filtered[k] for k in train_report.filtered})
        raise ValueError(
            f"{config.data.replays}: no usable replay for training ({skipped} of {len(paths)} files skipped, "
            f"{val_report.replays_used} usable file(s) held out for validation"
            + (f"; left out by the filters: {left_out})" if left_out else ")")
        )
    return ReadSplit(train_report, val_report, train_files, val_files, split_counts, train_players, cap_train, cap_val, [str(p) for p in paths])


def aligned(config, trajectories) -> list:
    """The trajectories as model inputs (`features.align`) at the run's
    delay, the game state hidden with `--hide-game-state`."""
    return [features.align(t, config.data.delay, hide_game_state=config.data.hide_game_state) for t in trajectories]


def load_split(config, on_skip: Callable[[str, str], None] | None = None) -> PreparedData:
    """Find, split, read and window the replays (`read_split`, then windows)."""
    read = read_split(config, on_skip)
    train_report, val_report = read.train_report, read.val_report

    def windows(report):
        return make_windows(aligned(config, report.trajectories), config.data.window_size, config.data.stride)

    train, val = windows(train_report), windows(val_report)
    if len(train) < config.optim.batch_size:
        longest = max(len(t) for t in train_report.trajectories)
        raise ValueError(f"{config.data.replays}: {too_few_windows(config, len(train), longest, read.cap_train)}")
    if val_report.trajectories and not len(val):  # else the run trains unvalidated, its summary blaming --val-fraction
        longest = max(len(t) for t in val_report.trajectories)
        cap_val = read.cap_val if read.cap_val is not None else longest
        raise ValueError(f"{config.data.replays}: {no_validation_window(config, len(val_report.trajectories), longest, cap_val)}")
    return PreparedData(train, val, train_report, val_report, read.train_files, read.val_files, read.split_counts, read.train_players, read.listed_files)


# -- what the messages say of the options that left too little data ---------------


def _shorter_than_a_window(config, games: str, longest: int) -> str:
    """Why `games` give no window, naming the option that makes them too short."""
    d = config.data
    need = config.window_frames
    if d.delay and longest >= need - d.delay:  # long enough for a window without the delay
        return f"--delay {d.delay} leaves {games} no window (the longest has {longest:,} frames; a window of --window-size {d.window_size} needs {need:,} with the delay)"
    return f"--window-size {d.window_size} is longer than {games} (the longest has {longest:,} frames; one window needs {need:,}{f' with --delay {d.delay}' if d.delay else ''})"


def too_few_windows(config, windows: int, longest: int, cap: int | None = None) -> str:
    """The line for training windows fewer than one batch, naming the options
    that decide their number (`longest`: frames of the longest training game
    read, `cap`: the frames --max-frames let it read)."""
    capped = f" within --max-frames {config.data.max_frames:,}" if cap is not None else ""
    if windows == 0:
        return f"no training window: {_shorter_than_a_window(config, f'every training game{capped}', longest)}"
    return (
        f"only {windows:,} training windows (--window-size {config.data.window_size}, --stride {config.data.stride}{capped}), "
        f"fewer than one batch of --batch-size {config.optim.batch_size}: lower either, or give more replays"
    )


def no_validation_window(config, games: int, longest: int, cap: int) -> str:
    """The line for validation games that give no window (`cap`: the frames
    they were cut to), naming the option that cut them or made them too short."""
    d = config.data
    if cap < config.window_frames:  # --val-max-frames itself is checked by TrainConfig.validate
        return (
            f"--max-frames {d.max_frames:,} leaves validation {cap:,} frames (x --val-fraction {d.val_fraction}), "
            f"fewer than one window needs ({config.window_frames:,}); raise --max-frames, or --val-fraction 0 to train unvalidated"
        )
    return f"no validation window: {_shorter_than_a_window(config, f'the {games} validation game(s)', longest)}"


def _split_inputs(data: PreparedData, make_train_dataset, steps_per_epoch: int) -> TrainInputs:
    """`TrainInputs` from a loaded split: its validation windows, the
    baselines fitted on its training windows, and its counts; the training
    batches come from `make_train_dataset`."""
    return TrainInputs(
        make_train_dataset=make_train_dataset,
        steps_per_epoch=steps_per_epoch,
        train_windows=len(data.train),
        val=data.val,
        stats=baselines.fit_baselines(data.train.predicted_targets(), data.train.previous_targets()),
        train_files=data.train_files,
        val_files=data.val_files,
        train_counts=data.train_report.counts(),
        counts=_combined_counts(data.train_report, data.val_report),
        skipped=data.train_report.skipped + data.val_report.skipped,
        split_counts=data.split_counts,
        train_players=data.train_players,
        listed_files=data.listed_files,
    )


def replay_inputs(config, on_skip: Callable[[str, str], None] | None = None) -> TrainInputs:
    """`TrainInputs` from a replay folder, all in memory (`load_split`)."""
    data = load_split(config, on_skip)
    steps = config.optim.steps_per_epoch or len(data.train) // config.optim.batch_size
    return _split_inputs(data, lambda skip_steps=0: training_batches(data.train, config, steps, skip_steps), steps)


def carried_inputs(config, on_skip: Callable[[str, str], None] | None = None) -> TrainInputs:
    """`TrainInputs` for carried-state training (the corpus recipe) from a
    replay folder: the training batches are segments of whole games in a
    fixed order (`carried_training.segment_dataset`); the validation games
    are evaluated in one pass, the state carried (`one_pass.Games`); the
    baselines are fitted on every training frame. Nothing is windowed, so
    memory is the aligned arrays, about 220 bytes a player-frame."""
    read = read_split(config, on_skip)
    counts, train_counts = _combined_counts(read.train_report, read.val_report), read.train_report.counts()
    by_player = set(read.train_players) if config.data.split_by == "player" else None
    inputs = _segment_inputs(config, read.train_report.trajectories, read.val_report.trajectories, by_player)
    read.train_report.trajectories = read.val_report.trajectories = []  # the aligned copies are what is kept
    return dataclasses.replace(
        inputs, train_files=read.train_files, val_files=read.val_files, train_counts=train_counts, counts=counts,
        skipped=read.train_report.skipped + read.val_report.skipped, split_counts=read.split_counts, train_players=read.train_players,
        listed_files=read.listed_files,
    )


def carried_prepared_inputs(config) -> TrainInputs:
    """The same from a dataset `keras-lstm prepare` wrote: its two splits
    (by game, as prepared) read into memory."""
    _check_prepared_options(config)
    check_training_fits_memory(config)  # before anything is read or built
    builder = prepared.load_builder(config.data.data_dir, config.data.val_fraction, config.split_seed)
    train = prepared.read_trajectories(builder, prepared.TRAIN)
    val = prepared.read_trajectories(builder, prepared.VALIDATION, max_frames=config.val_max_frames)
    if not train:
        raise ValueError(f"{config.data.data_dir}: the prepared dataset has no training trajectories")
    return dataclasses.replace(_segment_inputs(config, train, val, None), **_prepared_files_and_counts(builder))


def _prepared_files_and_counts(builder) -> dict:
    """The `TrainInputs` fields a prepared dataset's metadata gives: its
    files, counts and skipped files, and the release of its parts."""
    meta = builder.info.metadata
    root, counts = Path(meta["replays_dir"]), meta["counts"]
    return dict(
        train_files=[str(root / f) for f in meta["train_files"]],
        val_files=[str(root / f) for f in meta["val_files"]],
        train_counts=dict(counts[prepared.TRAIN]),
        counts={k: counts[prepared.TRAIN][k] + counts[prepared.VALIDATION][k] for k in counts[prepared.TRAIN]},
        skipped=[(str(root / name), reason) for name, reason in meta["skipped"]],
        release=builder.leases.release if getattr(builder, "leases", None) is not None else (lambda: None),
    )


def _segment_inputs(config, train_trajectories: list, val_trajectories: list, train_players: set | None) -> TrainInputs:
    """The segments, the one-pass validation games and the baselines of
    trajectories already read (file lists and counts left empty)."""
    arrays = aligned(config, train_trajectories)
    val = one_pass.Games.of(aligned(config, val_trajectories), val_trajectories, train_players)
    W, streams, piece = config.data.window_size, config.optim.carried_streams, config.optim.carried_piece_frames
    if not carried_training.cut_pieces(arrays, W, piece):
        longest = max(len(a) for a in arrays)
        where = config.data.data_dir or config.data.replays
        raise ValueError(f"{where}: --window-size {W} is longer than every training game (the longest has {longest:,} aligned frames)")
    accumulator = baselines.BaselineAccumulator()
    for a in arrays:
        if len(a) > 1:
            accumulator.add({h: v[1:] for h, v in a.targets.items()}, {h: v[:-1] for h, v in a.targets.items()})

    def make_train_dataset(skip_steps: int = 0):
        batches = carried_training.segment_dataset(arrays, W, streams, piece, config.run.seed, config.augmentations)
        return batches.skip(skip_steps) if skip_steps else batches

    return TrainInputs(
        make_train_dataset=make_train_dataset,
        steps_per_epoch=carried_training.steps_per_epoch(arrays, W, streams, piece),
        train_windows=int(sum(len(a) for a in arrays)),
        val=val,
        stats=accumulator.stats(),
        train_files=[], val_files=[], train_counts={}, counts={}, skipped=[],
        forget_training_frames=arrays.clear,  # the list the generator reads
    )


def training_batches(windows: Windows, config, steps_per_epoch: int, skip_steps: int = 0) -> tf.data.Dataset:
    """Every epoch's batches in a fixed order, less the first `skip_steps`.

    Epoch `e` takes the windows in the order of a permutation seeded by
    `(seed, e)` (an epoch longer than the windows, `--steps-per-epoch`, goes
    on with permutations seeded `(seed, e, k)`) and drops the last partial
    batch, and each batch is augmented
    from `(seed, its index)`; so the batch a resumed run starts at is the one
    the uninterrupted run would have trained next.
    """
    used = steps_per_epoch * config.optim.batch_size

    def epoch_order(epoch: int) -> np.ndarray:
        passes = [np.random.default_rng([config.run.seed, epoch]).permutation(len(windows))]
        while len(passes) * len(windows) < used:
            passes.append(np.random.default_rng([config.run.seed, epoch, len(passes)]).permutation(len(windows)))
        return np.concatenate(passes)[:used]

    order = np.concatenate([epoch_order(epoch) for epoch in range(config.epochs)])
    ordered = dataclasses.replace(windows, ends=windows.ends[order[skip_steps * config.optim.batch_size :]])
    batches = ordered.dataset(config.optim.batch_size, shuffle=False, drop_remainder=True, target_frames=config.loss_frames)
    return augment.augmented(batches, config.augmentations, config.run.seed, first_index=skip_steps)


def _combined_counts(*reports: LoadReport) -> dict:
    total = {}
    for report in reports:
        for k, v in report.counts().items():
            total[k] = total.get(k, 0) + v
    return total


# -- from a prepared dataset, streamed ----------------------------------------


@dataclasses.dataclass
class SplitScan:
    """What one pass over a split's targets gives."""

    windows_per_example: list  # [num_examples] windows in each trajectory
    frames: int  # per-frame rows stored (before alignment)
    trajectories_too_short: int
    stats: baselines.BaselineStats | None

    @property
    def windows(self) -> int:
        return int(sum(self.windows_per_example))

    def shard_windows(self, num_shards: int) -> list[int]:
        n = len(self.windows_per_example)
        return [
            int(sum(self.windows_per_example[slice(*pipeline.shard_bounds(n, k, num_shards))])) for k in range(num_shards)
        ]


def scan_split(builder, split: str, window_size: int, stride: int, delay: int, fit_stats: bool = True) -> SplitScan:
    """Count the windows of every trajectory and (optionally) fit the
    baselines, reading the targets only (the states are not decompressed)."""
    pipeline.check_window_options(window_size, stride, delay)
    skip = {"state_numeric": tfds.decode.SkipDecoding(), "state_categorical": tfds.decode.SkipDecoding()}
    ds = pipeline.read_examples(builder, split, decoders=skip)
    ds = ds.map(lambda ex: ex["targets"], num_parallel_calls=tf.data.AUTOTUNE)
    first = 1 + delay
    accumulator = baselines.BaselineAccumulator() if fit_stats else None
    counts, frames, too_short = [], 0, 0
    for targets in prepared.checked_examples(builder, tfds.as_numpy(ds)):  # damage: one line naming the dataset
        T = len(targets["main_x"])
        frames += T
        ends = pipeline.window_ends(T - first, window_size, stride)
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


def prepared_inputs(config, strategy: tf.distribute.Strategy | None = None, **window_options) -> TrainInputs:
    """`TrainInputs` from the dataset `keras-lstm prepare` wrote to
    `config.data.data_dir` (the config with `config.data.val_fraction` and `config.split_seed`).

    Training windows stream from disk, `strategy`'s workers each reading their
    own shard; the validation windows (15 % of the games by default) are read
    into memory, exactly as `load_split` makes them, so the evaluation is the
    same code on the same frames.
    """
    strategy = strategy or tf.distribute.get_strategy()
    _check_prepared_options(config)
    check_training_fits_memory(config)  # before anything is read or built
    builder = prepared.load_builder(config.data.data_dir, config.data.val_fraction, config.split_seed)
    W, stride, delay = config.data.window_size, config.data.stride, config.data.delay

    if prepared.TRAIN not in builder.info.splits:
        raise ValueError(f"{config.data.data_dir}: the prepared dataset has no training split")
    scan = scan_split(builder, prepared.TRAIN, W, stride, delay)
    if scan.windows < config.optim.batch_size:
        raise ValueError(
            f"{config.data.data_dir}: only {scan.windows:,} training windows (--window-size {W}, --stride {stride}, --delay {delay}), "
            f"fewer than one batch of --batch-size {config.optim.batch_size}: lower either, or prepare more replays"
        )
    replicas = strategy.num_replicas_in_sync
    if config.optim.batch_size % replicas:
        raise ValueError(f"batch-size ({config.optim.batch_size}) must be a multiple of the {replicas} replicas")
    workers = distribute.num_workers(strategy)
    if len(scan.windows_per_example) < workers or min(scan.shard_windows(workers)) == 0:
        raise ValueError(
            f"{config.data.data_dir}: {len(scan.windows_per_example)} training trajectories cannot give each of {workers} workers windows"
        )

    val_trajectories = prepared.read_trajectories(builder, prepared.VALIDATION, max_frames=config.val_max_frames)
    val = make_windows([features.align(t, delay) for t in val_trajectories], W, stride)

    def make_train_dataset(skip_steps: int = 0):
        train_fn = pipeline.dataset_fn(
            builder, prepared.TRAIN, config.optim.batch_size, W, stride, delay, config.run.seed, skip_steps,
            target_frames=config.loss_frames, augmentations=config.augmentations, **window_options,
        )
        return strategy.distribute_datasets_from_function(train_fn)

    return TrainInputs(
        make_train_dataset=make_train_dataset,
        steps_per_epoch=config.optim.steps_per_epoch or scan.windows // config.optim.batch_size,
        train_windows=scan.windows,
        val=val,
        stats=scan.stats,
        **_prepared_files_and_counts(builder),
    )


# -- what a run trains on, told apart without reading it -----------------------


@dataclasses.dataclass
class DataSource:
    """The data a run trains on, as `data_source` tells it apart without
    parsing a replay: `run.json` records it (`to_json`), and a run folder is
    resumed, or found finished, only on the same
    (`keras_lstm.training.run_folder.check_reuse`)."""

    option: str  # "--replays" or "--data-dir"
    path: str
    files: list[str]  # every file, named as run.json's train_files and val_files name them
    digest: str  # of each file's name, size and modification time (and the prepared dataset's options)

    def to_json(self) -> dict:
        return {"option": self.option, "path": self.path, "files": len(self.files), "digest": self.digest}


def replay_paths(config) -> list[Path]:
    """The replay files a run from `config.data.replays` reads (the first `max_replays`)."""
    paths = find_replays(config.data.replays)
    return paths if config.data.max_replays is None else paths[: config.data.max_replays]


def _check_prepared_options(config) -> None:
    for name in ("max_replays", "max_frames"):
        if getattr(config.data, name) is not None:
            flag = name.replace("_", "-")
            raise ValueError(f"--{flag} applies to --replays; with --data-dir, prepare a smaller folder instead")


def _digest(value) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(value).encode()).hexdigest()


def _stamp(path: Path) -> tuple[int, int]:
    """(size, modification time in ns); an entry that cannot be followed (a
    dangling link: skipped when read) by the link's own."""
    for stat in (path.stat, path.lstat):
        try:
            found = stat()
            return found.st_size, found.st_mtime_ns
        except OSError:
            pass
    return -1, -1  # gone since it was listed


def data_source(config) -> DataSource:
    """What a run of `config` would train on now: the replay files with their
    sizes and modification times, or the files a prepared dataset lists
    (`keras_lstm.data.prepared`'s manifest, which `prepare` rewrites when it
    changes the dataset). One-line errors for a missing folder or dataset."""
    if not config.data.data_dir:
        stamps = [(str(p), *_stamp(p)) for p in replay_paths(config)]
        return DataSource("--replays", config.data.replays, [s[0] for s in stamps], _digest(stamps))
    _check_prepared_options(config)
    # load_builder: the dataset's own checks and messages (and a dataset a killed prepare set aside, put back)
    builder = prepared.load_builder(config.data.data_dir, config.data.val_fraction, config.split_seed)
    manifest = prepared.read_manifest(builder.prepared_path)
    if getattr(builder, "leases", None) is not None:
        builder.leases.release()  # only the manifest was read: `prepared_inputs` loads the dataset it trains on
    root = Path(manifest["replays_dir"])
    stamps = [(str(root / name), split, size, mtime) for r in manifest["parts"] for name, split, size, mtime in r["files"]]
    return DataSource("--data-dir", config.data.data_dir, [s[0] for s in stamps], _digest([manifest["options"], stamps]))
