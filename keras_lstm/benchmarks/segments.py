"""`keras-lstm bench segments`: training frames/s of the corpus recipe
(segments of whole games with the state carried,
`keras_lstm.training.carried_training`) at several batch rows and segment
lengths, side by side.

Every shape trains the same policy sizes on the same synthetic games, fed
through the recipe's own input (`segment_dataset`), the shapes taking turns
(`rounds` rounds of `steps_per_round` steps, the order rotated each round) so
that load from other processes falls on all of them alike; each step is
timed inside `model.fit` and the median step gives frames/s (frames = rows x
segment). Also reported: the steps an epoch of `epoch_frames` frames takes
at each shape, which with frames/s is what chooses `train`'s defaults
(docs/QUALITY.md).
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from keras_lstm.benchmarks.measure import StepTimer, machine_info
from keras_lstm.data import controller, features
from keras_lstm.data.features import PolicyArrays
from keras_lstm.model.backbone import build_backbone
from keras_lstm.model.policy import compile_for_fit
from keras_lstm.training import carried_training

CORPUS_TRAIN_FRAMES = 4_110_000  # player-frames of the corpus's training games split by player (85 % of 4.83 M)


@dataclasses.dataclass
class SegmentsBenchConfig:
    streams: tuple[int, ...] = (32, 64, 128, 256)
    segment_frames: tuple[int, ...] = (60,)
    embed_size: int = 128
    hidden_size: int = 256
    num_layers: int = 2
    warmup_steps: int = 3
    rounds: int = 4
    steps_per_round: int = 8
    games: int = 24
    game_frames: int = 6000
    epoch_frames: int = CORPUS_TRAIN_FRAMES
    seed: int = 0

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def quick(cls) -> "SegmentsBenchConfig":
        return cls(streams=(2, 4), segment_frames=(6,), embed_size=8, hidden_size=8, num_layers=1, warmup_steps=1,
                   rounds=2, steps_per_round=2, games=4, game_frames=200)


def synthetic_games(config: SegmentsBenchConfig) -> list[PolicyArrays]:
    rng = np.random.default_rng(config.seed)
    games = []
    for _ in range(config.games):
        T = config.game_frames
        targets = {"buttons": (rng.random((T, len(controller.BUTTONS))) < 0.1).astype(np.float32)}
        for head in controller.CLASS_HEADS:
            targets[head] = rng.integers(0, controller.HEAD_CLASSES[head], T).astype(np.int32)
        games.append(PolicyArrays(
            rng.normal(size=(T, features.NUMERIC_SIZE)).astype(np.float32),
            rng.integers(0, 8, (T, features.CATEGORICAL_SIZE)).astype(np.int32),
            targets,
        ))
    return games


def run(config: SegmentsBenchConfig, log=print) -> dict:
    games = synthetic_games(config)
    shapes = [(s, w) for w in config.segment_frames for s in config.streams]
    models, datasets = {}, {}
    for streams, segment in shapes:
        keras.utils.set_random_seed(config.seed)
        backbone = build_backbone("lstm", config.embed_size, config.hidden_size, config.num_layers, 0.1)
        policy = carried_training.CarriedStatePolicy(backbone, streams=streams)
        compile_for_fit(policy, keras.optimizers.Adam(1e-3))
        data = carried_training.segment_dataset(games, segment, streams, seed=config.seed)
        policy.fit(data, epochs=1, steps_per_epoch=config.warmup_steps, verbose=0)
        models[(streams, segment)], datasets[(streams, segment)] = policy, data
    steps = {shape: [] for shape in shapes}
    for r in range(config.rounds):
        for shape in shapes[r % len(shapes):] + shapes[: r % len(shapes)]:
            timer = StepTimer()
            models[shape].fit(datasets[shape], epochs=1, steps_per_epoch=config.steps_per_round, verbose=0, callbacks=[timer])
            steps[shape].extend(timer.step_s)
        log(f"  round {r + 1}/{config.rounds}: " + ", ".join(
            f"{s}x{w} {s * w / np.median(steps[(s, w)]):,.0f} frames/s" for s, w in shapes))
    rows = []
    for (streams, segment), times in steps.items():
        median = float(np.median(times))
        rows.append({
            "streams": streams, "segment_frames": segment, "median_step_ms": 1e3 * median, "frames_per_s": streams * segment / median,
            "iqr_step_ms": [1e3 * float(q) for q in np.percentile(times, [25, 75])], "steps_timed": len(times),
            "steps_per_epoch": -(-config.epoch_frames // (streams * segment)),
        })
    return {"benchmark": "segments", "config": config.to_json(), "machine": machine_info(), "shapes": rows}


def format_table(result: dict) -> str:
    m = result["machine"]
    lines = [
        f"| rows | segment | frames/s | median step ms (IQR) | steps an epoch of {result['config']['epoch_frames']:,} frames |",
        "|---:|---:|---:|---|---:|",
    ]
    for r in result["shapes"]:
        q1, q3 = r["iqr_step_ms"]
        lines.append(f"| {r['streams']} | {r['segment_frames']} | {r['frames_per_s']:,.0f} | {r['median_step_ms']:.0f} ({q1:.0f}-{q3:.0f}) | {r['steps_per_epoch']:,} |")
    lines.append(f"machine: {m['cpu']} ({', '.join(m['cpu_features']) or 'no listed vector flags'}), {m['cores']} cores, TensorFlow {m['tensorflow']}")
    return "\n".join(lines)


__all__ = ["SegmentsBenchConfig", "format_table", "run"]
