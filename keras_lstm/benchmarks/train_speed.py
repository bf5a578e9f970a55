"""Training speed and memory: stock Keras `fit` against our training path.

Three ways to train the same policy (frame encoder -> 2 x 256 LSTM/GRU ->
controller heads, loss on the last timestep) on the same random batches:

- `keras_fit`: the reference. A plain functional Keras model over the very
  same layers (`keras.layers.LSTM`/`GRU`), compiled with Keras losses that sum
  to `policy_loss`, trained by Keras' own `train_step` under `model.fit`.
- `ours_full`: `BehaviorCloningPolicy.train_step`, full BPTT.
- `ours_truncated`: the same with `truncate_bptt=K`.
- `ours_full_bf16`, `ours_truncated_bf16`: the same with
  `matmul_dtype="bfloat16"` (opt-in; numerics change at the 1e-3 level).

Speed: every variant is traced and warmed up first, then the variants take
turns (`rounds` rounds of `steps_per_round` steps each, the order rotated per
round) so that load from other processes on a shared machine falls on all of
them alike; each step is timed by a callback inside `model.fit`, and the
median step gives frames/s (frames = batch x window). Peak memory: each
variant trains a few steps in a fresh subprocess, which reports its peak RSS.
Loss curve: `keras_fit` and `ours_full` train from identical weights on
identical batches with dropout 0 and the per-step losses are compared.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import keras
import numpy as np
import tensorflow as tf

from keras_lstm.benchmarks.fit_speed import stock_keras_model
from keras_lstm.benchmarks.measure import StepTimer, machine_info, peak_rss_mb, rss_mb
from keras_lstm.config import CELL_TYPES, FIELD_CONCERN, TrainConfig, flat_settings
from keras_lstm.data import controller, features
from keras_lstm.model.policy import build_policy, compile_for_fit, compile_optimizer

VARIANTS = ("keras_fit", "ours_full", "ours_truncated", "ours_full_bf16", "ours_truncated_bf16")
VARIANT_LABELS = {
    "keras_fit": "(a) Keras LSTM/GRU, model.fit",
    "ours_full": "(b) ours, full BPTT",
    "ours_truncated": "(c) ours, truncate_bptt=K",
    "ours_full_bf16": "(b16) ours, full BPTT, bf16 matmuls",
    "ours_truncated_bf16": "(c16) ours, truncate_bptt=K, bf16 matmuls",
}
# (numerator, denominator, target): frames/s ratios printed under the table.
RATIOS = (
    ("ours_full", "keras_fit", 1.4),
    ("ours_truncated", "ours_full", 2.1),
    ("ours_truncated", "keras_fit", None),
    ("ours_full_bf16", "keras_fit", 1.4),
    ("ours_truncated_bf16", "ours_full_bf16", 2.1),
)
SHORT = {"keras_fit": "a", "ours_full": "b", "ours_truncated": "c", "ours_full_bf16": "b16", "ours_truncated_bf16": "c16"}
# Our train step with `recurrent_impl="keras"` (the Keras layers: cuDNN on a
# GPU): measured by `bench gpu`, not by the CPU benchmark.
KERAS_IMPL_VARIANTS = ("ours_keras_full", "ours_keras_truncated")
VARIANT_LABELS.update({
    "ours_keras_full": "(bk) ours, Keras layers, full BPTT",
    "ours_keras_truncated": "(ck) ours, Keras layers, truncate_bptt=K",
})
# Mixed precision (`--mixed-precision`): stock Keras under the
# `mixed_float16` policy, and our train step by the Keras layers in float16
# and bfloat16. Measured by `bench gpu` (on a CPU float16 is emulated).
MIXED_VARIANTS = ("keras_fit_f16", "ours_keras_full_f16", "ours_keras_truncated_f16", "ours_keras_full_mbf16")
MIXED_PRECISION_OF = {"_f16": "float16", "_mbf16": "bfloat16"}
VARIANT_LABELS.update({
    "keras_fit_f16": "(a16) Keras LSTM, model.fit, mixed_float16",
    "ours_keras_full_f16": "(bk16) ours, Keras layers, full BPTT, mixed float16",
    "ours_keras_truncated_f16": "(ck16) ours, Keras layers, truncate_bptt=K, mixed float16",
    "ours_keras_full_mbf16": "(bkb) ours, Keras layers, full BPTT, mixed bfloat16",
})


def mixed_precision_of(variant: str) -> str | None:
    return next((dtype for suffix, dtype in MIXED_PRECISION_OF.items() if variant.endswith(suffix)), None)


@dataclasses.dataclass
class TrainSpeedConfig:
    """`training`: the model and the batch shape (`keras_lstm.config`), with
    `truncate_bptt` the K of variant (c); the rest: how long and how often
    the variants are timed."""

    training: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig.from_flat(truncate_bptt=15))
    cells: tuple[str, ...] = ("lstm", "gru")
    warmup_steps: int = 3
    rounds: int = 6
    steps_per_round: int = 5
    loss_curve_steps: int = 20
    memory: bool = True
    memory_steps: int = 4

    @classmethod
    def from_options(cls, **options) -> "TrainSpeedConfig":
        """Options named as `TrainConfig` fields go to `training` (truncate_bptt
        15 unless given), the rest to the benchmark's own settings."""
        training = {"truncate_bptt": 15, **{k: v for k, v in options.items() if k in FIELD_CONCERN}}
        own = {k: v for k, v in options.items() if k not in FIELD_CONCERN}
        if "cells" in own:
            own["cells"] = tuple(own["cells"])
        return cls(training=TrainConfig.from_flat(**training), **own)

    @classmethod
    def quick(cls, **overrides) -> "TrainSpeedConfig":
        """Tiny sizes and few steps: checks that everything runs (CI)."""
        tiny = dict(
            batch_size=4, window_size=6, embed_size=8, hidden_size=8, truncate_bptt=2,
            warmup_steps=1, rounds=2, steps_per_round=2, loss_curve_steps=3, memory_steps=2,
        )
        return cls.from_options(**{**tiny, **overrides})

    def to_json(self) -> dict:
        return flat_settings(self)

    def validate(self) -> None:
        self.training.validate()
        for name in ("warmup_steps", "rounds", "steps_per_round", "memory_steps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.training.optim.truncate_bptt is None:
            raise ValueError("truncate-bptt must be given: it is the K of variant (c)")
        for cell in self.cells:
            if cell not in CELL_TYPES:
                raise ValueError(f"cell must be one of {CELL_TYPES}, got {cell!r}")

    @property
    def frames_per_step(self) -> int:
        return self.training.optim.batch_size * self.training.data.window_size


# --- data and models ---------------------------------------------------------------


def synthetic_batches(config: TrainSpeedConfig, num_batches: int = 8) -> tuple[dict, dict]:
    """Random frames and targets that depend on them (so the loss can fall):
    buttons copy the signs of the last frame's first numeric features, each
    class head buckets one numeric feature a few frames back."""
    rng = np.random.default_rng(config.training.run.seed)
    n, T = config.training.optim.batch_size * num_batches, config.training.data.window_size
    numeric = rng.normal(size=(n, T, features.NUMERIC_SIZE)).astype("float32")
    categorical = rng.integers(0, 8, size=(n, T, features.CATEGORICAL_SIZE)).astype("int32")
    x = {"numeric": numeric, "categorical": categorical}
    y = {"buttons": (numeric[:, -1, : len(controller.BUTTONS)] > 0).astype("float32")}
    for k, head in enumerate(controller.CLASS_HEADS):
        classes = controller.HEAD_CLASSES[head]
        value = numeric[:, max(0, T - 1 - 2 * k), len(controller.BUTTONS) + k]
        edges = np.quantile(value, np.linspace(0, 1, classes + 1)[1:-1])
        y[head] = np.digitize(value, edges).astype("int32")
    return x, y


def _dataset(config: TrainSpeedConfig, data) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices(data).batch(config.training.optim.batch_size, drop_remainder=True).cache().repeat()


def _policy(config: TrainSpeedConfig, cell: str, truncate_bptt: int | None, dropout: float):
    model = config.training.model
    keras.utils.set_random_seed(config.training.run.seed)
    return build_policy(cell, model.embed_size, model.hidden_size, model.num_layers, dropout, truncate_bptt)


def build_variant(variant: str, cell: str, config: TrainSpeedConfig, dropout: float | None = None) -> keras.Model:
    """A compiled model for one variant; every variant starts from the same
    weights (same seed, same layers)."""
    dropout = config.training.model.dropout if dropout is None else dropout
    reference_weights = _policy(config, cell, None, dropout).get_weights()
    mixed_precision = mixed_precision_of(variant)
    if variant in ("keras_fit", "keras_fit_f16"):
        def build():
            policy = _policy(config, cell, None, dropout)
            policy.set_weights(reference_weights)
            return policy

        optimizer = compile_optimizer(keras.optimizers.Adam(config.training.learning_rate), mixed_precision)
        return stock_keras_model(build, mixed_precision, optimizer, f"keras_{cell}")
    if variant not in VARIANTS + KERAS_IMPL_VARIANTS + MIXED_VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS + KERAS_IMPL_VARIANTS + MIXED_VARIANTS}, got {variant!r}")
    truncate = config.training.optim.truncate_bptt if "truncated" in variant else None
    policy = _policy(config, cell, truncate, dropout)
    policy.set_weights(reference_weights)
    if variant.endswith("_bf16"):
        policy.matmul_dtype = "bfloat16"
    if variant in KERAS_IMPL_VARIANTS + MIXED_VARIANTS:
        policy.recurrent_impl = "keras"  # read when the train step is traced
    policy.mixed_precision = mixed_precision
    compile_for_fit(policy, compile_optimizer(keras.optimizers.Adam(config.training.learning_rate), mixed_precision))
    return policy


# --- measurements -----------------------------------------------------------------


def measure_speed(config: TrainSpeedConfig, cell: str, log=print, variants: tuple[str, ...] = VARIANTS, on_error=None) -> dict:
    """`{variant: [[step seconds, ...] per round]}` with the variants taking turns.

    `on_error(variant, exception)`: a variant that fails to build or to take
    its first steps is reported there and left out (`bench gpu`: a kernel a
    device lacks); without it, the error propagates."""
    data = synthetic_batches(config)
    models = {}
    for variant in variants:  # build, trace and warm up
        try:
            model = build_variant(variant, cell, config)
            model.fit(_dataset(config, data), epochs=1, steps_per_epoch=config.warmup_steps, verbose=0, shuffle=False)
        except Exception as error:  # noqa: BLE001 - reported by on_error, whatever it is
            if on_error is None:
                raise
            on_error(variant, error)
            continue
        models[variant] = model
    variants = tuple(models)
    rounds = {v: [] for v in variants}
    for r in range(config.rounds):
        order = variants[r % len(variants):] + variants[: r % len(variants)]
        for variant in order:
            timer = StepTimer()
            models[variant].fit(
                _dataset(config, data), epochs=1, steps_per_epoch=config.steps_per_round, verbose=0, shuffle=False, callbacks=[timer]
            )
            rounds[variant].append(timer.step_s)
        log(f"  {cell} round {r + 1}/{config.rounds}: " + ", ".join(
            f"{v} {config.frames_per_step / np.median(rounds[v][-1]):,.0f} frames/s" for v in variants))
    return rounds


def loss_curves(config: TrainSpeedConfig, cell: str) -> dict:
    """Per-step training loss of `keras_fit`, `ours_full` and
    `ours_full_bf16` from identical weights on identical batches, dropout 0
    (so each is deterministic)."""
    data = synthetic_batches(config)
    curves = {}
    for variant in ("keras_fit", "ours_full", "ours_full_bf16"):
        model = build_variant(variant, cell, config, dropout=0.0)
        history = model.fit(_dataset(config, data), epochs=config.loss_curve_steps, steps_per_epoch=1, verbose=0, shuffle=False)
        curves[variant] = [float(x) for x in history.history["loss"]]
    return curves


def peak_memory_mb(config: TrainSpeedConfig, cell: str, variant: str) -> dict:
    """Train a few steps in a fresh subprocess; its peak RSS, and the peak
    minus the RSS after building the model (what training added)."""
    payload = json.dumps({"config": config.to_json(), "cell": cell, "variant": variant})
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, "-m", "keras_lstm.benchmarks.train_speed", payload],
        capture_output=True, text=True, env=env, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"memory probe {cell}/{variant} failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _memory_probe(payload: str) -> dict:
    spec = json.loads(payload)
    config = TrainSpeedConfig.from_options(**spec["config"])
    data = synthetic_batches(config, num_batches=2)
    model = build_variant(spec["variant"], spec["cell"], config)
    before = rss_mb()
    model.fit(_dataset(config, data), epochs=1, steps_per_epoch=config.memory_steps, verbose=0, shuffle=False)
    peak = peak_rss_mb()
    return {"peak_rss_mb": peak, "training_mb": peak - before}


def run_train_speed(config: TrainSpeedConfig, log=print) -> dict:
    """Every measurement for every cell type; see the module docstring."""
    config.validate()
    results = {"config": config.to_json(), "machine": machine_info(), "cells": {}}
    for cell in config.cells:
        rounds = measure_speed(config, cell, log)
        step_s = {v: [s for r in rounds[v] for s in r] for v in VARIANTS}
        per_round_ms = {v: [1e3 * float(np.median(r)) for r in rounds[v]] for v in VARIANTS}
        rows = {}
        for variant in VARIANTS:
            median = float(np.median(step_s[variant]))
            rows[variant] = {
                "median_step_ms": 1e3 * median,
                "frames_per_s": config.frames_per_step / median,
                "steps_timed": len(step_s[variant]),
                "iqr_step_ms": [1e3 * float(q) for q in np.percentile(step_s[variant], [25, 75])],
            }
        if config.memory:
            for variant in VARIANTS:
                rows[variant].update(peak_memory_mb(config, cell, variant))
        curves = loss_curves(config, cell)
        ratios = {}
        for num, den, target in RATIOS:
            ratios[f"{SHORT[num]}/{SHORT[den]}"] = {
                "ratio": rows[num]["frames_per_s"] / rows[den]["frames_per_s"],
                # The same ratio within each round (neighbours in time, so less
                # exposed to load that changes during the run), then the median.
                "by_round": float(np.median(np.array(per_round_ms[den]) / np.array(per_round_ms[num]))),
                "target": target,
            }
        reference = np.array(curves["keras_fit"])
        results["cells"][cell] = {
            "variants": rows,
            "ratios": ratios,
            "median_step_ms_by_round": per_round_ms,
            "loss_curve": curves,
            "loss_curve_max_abs_diff": {v: float(np.max(np.abs(np.array(c) - reference))) for v, c in curves.items() if v != "keras_fit"},
        }
    return results


def format_table(results: dict) -> str:
    """The results as a Markdown table and the ratios."""
    config = results["config"]
    memory = config["memory"]
    head = "| cell | variant | frames/s | median step ms (IQR) |" + (" peak RSS MB | training MB |" if memory else "")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for cell, res in results["cells"].items():
        for variant, row in res["variants"].items():
            label = VARIANT_LABELS[variant].replace("=K", f"={config['truncate_bptt']}")
            q1, q3 = row["iqr_step_ms"]
            line = f"| {cell} | {label} | {row['frames_per_s']:,.0f} | {row['median_step_ms']:.1f} ({q1:.1f}-{q3:.1f}) |"
            if memory:
                line += f" {row['peak_rss_mb']:,.0f} | {row['training_mb']:,.0f} |"
            lines.append(line)
    lines.append("")
    for cell, res in results["cells"].items():
        parts = []
        for name, r in res["ratios"].items():
            target = f", target >= {r['target']}x" if r["target"] else ""
            parts.append(f"({name.replace('/', ')/(')}) = {r['ratio']:.2f}x (per-round median {r['by_round']:.2f}x{target})")
        lines.append(f"{cell}: " + "; ".join(parts))
        curve = res["loss_curve"]["keras_fit"]
        diffs = ", ".join(f"{SHORT[v]} {d:.1e}" for v, d in res["loss_curve_max_abs_diff"].items())
        lines.append(
            f"{cell}: loss curve over {len(curve)} steps from the same weights and batches, dropout 0: "
            f"(a) {curve[0]:.3f} -> {curve[-1]:.3f}; max |loss - loss(a)|: {diffs}"
        )
    m = results["machine"]
    lines.append(f"machine: {m['cpu']}, {m['cores']} cores, TensorFlow {m['tensorflow']}, Keras {m['keras']}")
    return "\n".join(lines)


if __name__ == "__main__":  # the memory probe's subprocess
    print(json.dumps(_memory_probe(sys.argv[1])))
