"""The data benchmark behind `keras-lstm bench data`.

On one replay folder (by default `../shared/replays/games`), in one process:

1. replay parsing and feature extraction (`trajectories.load_trajectories`
   on every file, skips included) in game frames per second, beside
   peppi-py's parse alone on the same files. A game frame is one distinct
   playable frame of a used game (rollback duplicates removed); one 1v1
   human game gives two trajectory frames per game frame. Target: >= 300k
   game frames/s.
2. `prepared.prepare` of the folder into a temporary data dir: its time
   and its size on disk per hour of play (60 game frames per second); and
   the arrays prepare stores, compressed at each zlib level (size, seconds
   to compress and to decompress): the measurement behind
   `tfds_dataset.ZLIB_LEVEL`.
3. the prepared dataset's read throughput: the training stream
   (`pipeline.window_dataset`, shuffled and repeated, batched and
   prefetched), in windows per second.
4. training consumption: windows per second that `model.fit` consumes at the
   default model (2 x 256 LSTM, embed 128, window 60, batch 64, full BPTT) on
   batches already in memory; the ratio (3) / (4). Target: >= 10 (training
   never waits for data).

Every figure is the median of `repeats` measurements; the machine is shared,
so they are noisy. (3) and (4) are measured one after the other, not while
competing for the same cores.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import zlib
from pathlib import Path
from typing import Callable

import keras

from keras_lstm.benchmarks.measure import StepTimer, default_replays, time_calls
from keras_lstm.data import pipeline, prepared, tfds_dataset
from keras_lstm.data.replays import find_replays, iter_games
from keras_lstm.data.trajectories import load_trajectories
from keras_lstm.model.policy import build_policy, compile_for_fit

FRAMES_PER_S = 60
PARSE_TARGET_FRAMES_PER_S = 300_000
RATIO_TARGET = 10.0


def _median_s(fn: Callable[[], object], repeats: int) -> float:
    """The median seconds of `repeats` calls (no warm-up)."""
    return statistics.median(time_calls(fn, repeats, warmup=0)[0]) / 1e3


def _game_frames(report) -> int:
    """Distinct game frames of the games that gave trajectories."""
    per_game = {}
    for traj in report.trajectories:
        per_game[traj.source] = len(traj)
    return sum(per_game.values())


def bench_parse(replays: str | Path, repeats: int = 5) -> dict:
    paths = find_replays(replays)
    last = {}

    def parse():
        last["report"] = load_trajectories(paths)

    seconds = _median_s(parse, repeats)
    peppi_seconds = _median_s(lambda: [g for _, g, _ in iter_games(paths)], repeats)
    report = last["report"]
    game_frames = _game_frames(report)
    return {
        "files": len(paths),
        "game_frames": game_frames,
        "trajectory_frames": report.frames,
        "parse_features_s": seconds,
        "parse_features_game_frames_per_s": game_frames / seconds,
        "parse_features_trajectory_frames_per_s": report.frames / seconds,
        "peppi_only_s": peppi_seconds,
        "peppi_only_game_frames_per_s": game_frames / peppi_seconds,
    }


ZLIB_LEVELS = (1, 3, 6, 9)  # 6 is zlib's (and TFDS') default


def bench_compression(report, repeats: int = 3) -> dict:
    """The per-frame arrays of `report`'s trajectories (what prepare stores,
    one zlib stream per array) compressed at each of `ZLIB_LEVELS`."""
    arrays = []
    for t in report.trajectories:
        arrays += [t.state_numeric.tobytes(), t.state_categorical.tobytes()]
        arrays += [t.targets[h].astype("uint8" if h == "buttons" else t.targets[h].dtype).tobytes() for h in t.targets]
    raw = sum(map(len, arrays))
    levels = {}
    for level in ZLIB_LEVELS:
        packed = [zlib.compress(a, level) for a in arrays]
        levels[str(level)] = {
            "bytes": sum(map(len, packed)),
            "compress_s": _median_s(lambda: [zlib.compress(a, level) for a in arrays], repeats),
            "decompress_s": _median_s(lambda: [zlib.decompress(p) for p in packed], repeats),
        }
    return {"compression_raw_bytes": raw, "compression_levels": levels, "compression_level_used": tfds_dataset.ZLIB_LEVEL}


def bench_prepare(replays: str | Path, data_dir: str | Path, game_frames: int) -> dict:
    start = time.perf_counter()
    summary = prepared.prepare(replays, data_dir)
    seconds = time.perf_counter() - start
    hours = game_frames / FRAMES_PER_S / 3600
    return {
        "prepare_s": seconds,
        "prepare_game_frames_per_s": game_frames / seconds,
        "dataset_bytes": summary["size_bytes"],
        "hours_of_play": hours,
        "dataset_mb_per_hour_of_play": summary["size_bytes"] / 1e6 / hours,
        "examples": summary["examples"],
    }


def bench_read(data_dir: str | Path, window_size: int, stride: int, batch_size: int, repeats: int, batches: int) -> dict:
    builder = prepared.load_builder(data_dir)
    stream = pipeline.batched(
        pipeline.window_dataset(builder, prepared.TRAIN, window_size, stride, shuffle=True, repeat=True), batch_size
    )
    iterator = iter(stream)
    for _ in range(20):  # warm up: buffers filled, functions traced
        next(iterator)

    def read():
        for _ in range(batches):
            next(iterator)

    seconds = _median_s(read, repeats)
    return {"read_windows_per_s": batches * batch_size / seconds, "read_batches": batches}


def bench_training(data_dir: str | Path, window_size: int, batch_size: int, repeats: int, steps: int) -> dict:
    builder = prepared.load_builder(data_dir)
    batches = pipeline.batched(pipeline.window_dataset(builder, prepared.TRAIN, window_size, 4, shuffle=True), batch_size)
    in_memory = batches.take(8).cache().repeat()
    policy = build_policy()  # the defaults: LSTM 2 x 256, embed 128
    compile_for_fit(policy, keras.optimizers.Adam(1e-3))
    timer = StepTimer()
    policy.fit(in_memory, steps_per_epoch=steps, epochs=repeats + 1, callbacks=[timer], verbose=0, shuffle=False)
    seconds = statistics.median(timer.epoch_s[1:])  # the first epoch traces the step
    return {
        "train_windows_per_s": steps * batch_size / seconds,
        "train_frames_per_s": steps * batch_size * window_size / seconds,
        "train_steps": steps,
        "model_parameters": int(policy.count_params()),
    }


def run(
    replays: str | Path | None = None,
    data_dir: str | Path | None = None,
    repeats: int = 5,
    window_size: int = 60,
    stride: int = 4,
    batch_size: int = 64,
    read_batches: int = 100,
    train_steps: int = 15,
    log: Callable[[str], None] = lambda line: None,
) -> dict:
    """All four measurements; `data_dir` defaults to a temporary folder."""
    replays = Path(replays) if replays is not None else default_replays()
    results = {"replays": str(replays), "repeats": repeats, "window_size": window_size, "stride": stride, "batch_size": batch_size}
    log("parsing + features ...")
    results.update(bench_parse(replays, repeats))
    log("compression levels ...")
    results.update(bench_compression(load_trajectories(find_replays(replays))))
    with tempfile.TemporaryDirectory(prefix="keras-lstm-bench-") as tmp:
        data_dir = Path(data_dir) if data_dir is not None else Path(tmp)
        log("prepare ...")
        results.update(bench_prepare(replays, data_dir, results["game_frames"]))
        log("reading the prepared dataset ...")
        results.update(bench_read(data_dir, window_size, stride, batch_size, repeats, read_batches))
        log("training consumption at the default model ...")
        results.update(bench_training(data_dir, window_size, batch_size, repeats, train_steps))
    results["pipeline_to_training_ratio"] = results["read_windows_per_s"] / results["train_windows_per_s"]
    results["targets"] = {
        "parse_features_game_frames_per_s": {
            "target": PARSE_TARGET_FRAMES_PER_S,
            "met": results["parse_features_game_frames_per_s"] >= PARSE_TARGET_FRAMES_PER_S,
        },
        "pipeline_to_training_ratio": {"target": RATIO_TARGET, "met": results["pipeline_to_training_ratio"] >= RATIO_TARGET},
    }
    return results


def format_report(r: dict) -> str:
    def met(key):
        return "met" if r["targets"][key]["met"] else "MISSED"

    return "\n".join(
        [
            f"data benchmark on {r['replays']} ({r['files']} files, {r['game_frames']:,} game frames = "
            f"{r['hours_of_play'] * 60:.1f} min of play; medians of {r['repeats']}, shared machine: noisy)",
            f"parsing + features : {r['parse_features_game_frames_per_s']:>12,.0f} game frames/s "
            f"({r['parse_features_trajectory_frames_per_s']:,.0f} trajectory frames/s)   target >= {PARSE_TARGET_FRAMES_PER_S:,}: "
            f"{met('parse_features_game_frames_per_s')}",
            f"peppi-py alone     : {r['peppi_only_game_frames_per_s']:>12,.0f} game frames/s",
            f"prepare (once)     : {r['prepare_s']:>12.1f} s   ({r['prepare_game_frames_per_s']:,.0f} game frames/s)",
            f"dataset on disk    : {r['dataset_bytes'] / 1e6:>12.1f} MB = {r['dataset_mb_per_hour_of_play']:.1f} MB per hour of play",
            f"arrays, zlib level : {r['compression_raw_bytes'] / 1e6:.1f} MB raw; "
            + "; ".join(
                f"{level}{' (used)' if int(level) == r['compression_level_used'] else ''}: {v['bytes'] / 1e6:.1f} MB, "
                f"{v['compress_s']:.2f} s / {v['decompress_s']:.2f} s"
                for level, v in r["compression_levels"].items()
            )
            + " (compress / decompress)",
            f"read (train stream): {r['read_windows_per_s']:>12,.0f} windows/s  (window {r['window_size']}, stride {r['stride']}, "
            f"batch {r['batch_size']}, shuffled)",
            f"training consumes  : {r['train_windows_per_s']:>12,.0f} windows/s  (default model, {r['model_parameters']:,} parameters, "
            f"{r['train_frames_per_s']:,.0f} frames/s)",
            f"pipeline / training: {r['pipeline_to_training_ratio']:>12.1f} x   target >= {RATIO_TARGET:g}: {met('pipeline_to_training_ratio')}",
        ]
    )
