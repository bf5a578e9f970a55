"""Per-frame inference latency, every way of stepping side by side in one run.

`keras-lstm bench inference` (batch 1; default hidden 256, 2 layers, embed
128) times, in one process one after the other:

- `step` (numpy, fused gates) on the backbone;
- the Keras `stateful=True` twin, called through a `tf.function`;
- the exported SavedModel, loaded with `tf.saved_model.load`: each signature;
- the whole policy per frame: libmelee `GameState` -> features -> encoder ->
  backbone step -> heads -> decoded controller (numpy `PolicyStepper`);
- the naive approach: re-running the windowed backbone on the last 60 frames
  every frame (`tf.function`);
- what the NaN/inf input checks cost: each checked path (numpy `step`,
  `PolicyStepper.act`, SavedModel `serving_default` and `step`) against the
  same path without them (`inference.unchecked_finite()`, a SavedModel
  exported with `check_inputs=False`), called alternately so that both see
  the same load;

and reports median and p99 in milliseconds, the window/step ratio, the
checks' overhead and the targets. Latency does not depend on the weights'
values, so by default the policy is freshly initialised; `--model` times a
trained run instead. The machine is shared, so numbers are noisy: compare
medians within one run.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from keras_lstm.benchmarks.measure import time_alternating, time_calls
from keras_lstm.config import TrainConfig, flat_settings
from keras_lstm.data import features
from keras_lstm.data.replays import FIRST_PLAYABLE_FRAME, default_replays_dir
from keras_lstm.model.backbone import check_positive
from keras_lstm.model.policy import build_policy
from keras_lstm.serving import export, inference
from keras_lstm.serving.melee_state import FrameFeaturizer
from keras_lstm.training.run_folder import load_run

TARGETS_MS = {
    "step (numpy)": ("median", 0.15),
    "whole policy per frame": ("p99", 2.0),
    "SavedModel serving_default": ("median", 0.5),
}
MIN_WINDOW_OVER_STEP = 30.0
MAX_CHECK_OVERHEAD = 0.10  # the NaN/inf input checks may add at most 10 % to a call


@dataclasses.dataclass
class BenchConfig:
    """`training`: the policy's sizes, its window and the seed
    (`keras_lstm.config`); the rest: what is timed, how often."""

    training: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    iterations: int = 2000
    window_iterations: int = 200
    warmup: int = 50
    replay: str | None = None
    model: str | None = None  # a run folder to time instead of a fresh policy
    tf_threads: int = 0  # TF intra- and inter-op threads; 0 leaves TensorFlow's default

    def validate(self) -> None:
        self.training.validate()
        check_positive(**{"iterations": self.iterations, "window-iterations": self.window_iterations})
        if self.tf_threads < 0:
            raise ValueError(f"--tf-threads must be >= 0, got {self.tf_threads}")
        if self.replay is not None and not Path(self.replay).is_file():
            raise FileNotFoundError(f"{self.replay}: no such replay file")

    def to_json(self) -> dict:
        return flat_settings(self)


def _alternate_numpy_checks(fn: Callable[[], object], iterations: int, warmup: int):
    """`time_alternating` of `fn` with and without the numpy NaN/inf checks
    (the module flag that `inference.unchecked_finite` sets, set the same way
    before both calls so that neither pays more for the switch)."""

    def with_checks(on: bool):
        def call():
            inference._CHECK_FINITE = on
            fn()

        return call

    try:
        return time_alternating(with_checks(True), with_checks(False), iterations, warmup)
    finally:
        inference._CHECK_FINITE = True


def _overhead_row(name: str, checked_unchecked_ms: tuple[np.ndarray, np.ndarray]) -> dict:
    checked, unchecked = (float(np.median(t)) for t in checked_unchecked_ms)
    overhead = checked / unchecked - 1.0 if unchecked > 0 else None
    return {
        "name": name,
        "checked_median_ms": checked,
        "unchecked_median_ms": unchecked,
        "overhead": overhead,
        "target": f"< {MAX_CHECK_OVERHEAD:.0%}",
        "meets_target": overhead is not None and overhead < MAX_CHECK_OVERHEAD,
        "calls": int(checked_unchecked_ms[0].size),
    }


def _row(name: str, times_ms: tuple[np.ndarray, np.ndarray], note: str = "") -> dict:
    wall, cpu = times_ms
    row = {
        "name": name,
        "median_ms": float(np.median(wall)),
        "p99_ms": float(np.percentile(wall, 99)),
        "cpu_median_ms": float(np.median(cpu)),
        "cpu_p99_ms": float(np.percentile(cpu, 99)),
        "calls": int(wall.size),
        "note": note,
    }
    if name in TARGETS_MS:
        stat, limit = TARGETS_MS[name]
        row["target"] = f"{stat} <= {limit} ms"
        row["meets_target"] = row[f"{stat}_ms"] <= limit
    return row


def _gamestates(replay: Path, n: int) -> list:
    import melee  # libmelee: only for the whole-policy row, which needs a replay

    console = melee.Console(is_dolphin=False, path=str(replay), allow_old_version=True)
    console.connect()
    states = []
    while len(states) < n:
        gamestate = console.step()
        if gamestate is None:
            break
        if gamestate.frame >= FIRST_PLAYABLE_FRAME and len(gamestate.players) == 2:
            states.append(gamestate)
    return states


def _default_replay() -> Path | None:
    root = default_replays_dir()
    if not root.is_dir():
        return None
    return next(iter(sorted(root.rglob("*.slp"))), None)


def run(config: BenchConfig, on_row: Callable[[dict], None] | None = None) -> dict:
    """Time every path; returns `{"config", "rows", "window_over_step", ...}`."""
    config.validate()
    if config.tf_threads:
        # Must happen before TensorFlow runs its first op in this process.
        tf.config.threading.set_intra_op_parallelism_threads(config.tf_threads)
        tf.config.threading.set_inter_op_parallelism_threads(config.tf_threads)
    rows, check_rows = [], []

    def add(row):
        rows.append(row)
        if on_row is not None:
            on_row(row)

    def add_check(row):
        check_rows.append(row)
        if on_row is not None:
            on_row({"name": f"input checks: {row['name']}", "median_ms": row["checked_median_ms"]})

    if config.model:
        policy, _ = load_run(config.model)
    else:
        keras.utils.set_random_seed(config.training.run.seed)
        network = config.training.model
        policy = build_policy(network.backbone, network.embed_size, network.hidden_size, network.num_layers)
    backbone = policy.backbone
    E, U, L = backbone.embed_size, backbone.hidden_size, backbone.num_layers
    rng = np.random.default_rng(config.training.run.seed)
    frame_1xE = rng.normal(size=(1, E)).astype(np.float32)
    n, w = config.iterations, config.warmup

    # 1. step: numpy, fused gates.
    with inference.frame_loop():
        hidden = [inference.initial_hidden(1, U, L, backbone.cell_type)]

        def numpy_step():
            _, hidden[0] = inference.step(backbone, frame_1xE, hidden[0])

        add(_row("step (numpy)", time_calls(numpy_step, n, w), "keras_lstm.serving.inference.step"))

        add_check(_overhead_row("step (numpy)", _alternate_numpy_checks(numpy_step, n, w)))

    # 2. the stateful=True twin, through a tf.function (never eager or predict()).
    twin = inference.stateful_twin(backbone)
    twin_fn = tf.function(lambda x: twin(x, training=False), input_signature=[tf.TensorSpec([1, 1, E], tf.float32)])
    x_1x1xE = tf.constant(frame_1xE[:, None, :])
    add(_row("stateful twin (tf.function)", time_calls(lambda: twin_fn(x_1x1xE), n, w), "Keras LSTM(stateful=True)"))

    # 3. the SavedModel, loaded as a server would.
    with tempfile.TemporaryDirectory() as tmp:
        path = export.export_policy(policy, tmp, "bench", 1)
        loaded = tf.saved_model.load(str(path))
        sig = loaded.signatures
        numeric_1xF = tf.constant(rng.normal(size=(1, features.NUMERIC_SIZE)).astype(np.float32))
        categorical_1xC = tf.constant(np.zeros((1, features.CATEGORICAL_SIZE), np.int32))
        serving = sig["serving_default"]
        add(_row("SavedModel serving_default", time_calls(lambda: serving(numeric=numeric_1xF, categorical=categorical_1xC), n, w), "whole policy, state held in the model"))
        state = {k: tf.constant(v) for k, v in export.zeros_state(export.read_metadata(path)).items()}
        stateless = sig["step"]

        def saved_step():
            out = stateless(numeric=numeric_1xF, categorical=categorical_1xC, **state)
            for k in state:
                state[k] = out[k]

        add(_row("SavedModel step (explicit h/c)", time_calls(saved_step, n, w), "whole policy, stateless"))
        reset = sig["reset"]
        add(_row("SavedModel reset", time_calls(lambda: reset(), n, w), "once per game"))

        # The same SavedModel without the NaN/inf (and batch) input checks.
        unchecked_module = export.PolicyServingModule(policy, check_inputs=False)
        unchecked_path = Path(tmp) / "unchecked"
        tf.saved_model.save(unchecked_module, str(unchecked_path), signatures=unchecked_module.signatures())
        unchecked = tf.saved_model.load(str(unchecked_path))
        serving_unchecked = unchecked.signatures["serving_default"]
        add_check(_overhead_row("SavedModel serving_default", time_alternating(
            lambda: serving(numeric=numeric_1xF, categorical=categorical_1xC),
            lambda: serving_unchecked(numeric=numeric_1xF, categorical=categorical_1xC), n, w)))
        step_unchecked = unchecked.signatures["step"]
        state_unchecked = dict(state)

        def saved_step_unchecked():
            out = step_unchecked(numeric=numeric_1xF, categorical=categorical_1xC, **state_unchecked)
            for k in state_unchecked:
                state_unchecked[k] = out[k]

        add_check(_overhead_row("SavedModel step (explicit h/c)", time_alternating(saved_step, saved_step_unchecked, n, w)))
        del unchecked, unchecked_module, serving_unchecked, step_unchecked
        T = config.training.data.window_size
        win_numeric = tf.constant(rng.normal(size=(1, T, features.NUMERIC_SIZE)).astype(np.float32))
        win_categorical = tf.constant(np.zeros((1, T, features.CATEGORICAL_SIZE), np.int32))
        window_sig = sig["window"]
        add(_row(f"SavedModel window ({T} frames)", time_calls(lambda: window_sig(numeric=win_numeric, categorical=win_categorical), config.window_iterations, 5), "whole policy re-run on the window"))
        del loaded, sig, serving, stateless, reset, window_sig

    # 4. the whole policy per frame, from a libmelee GameState.
    replay = Path(config.replay).expanduser() if config.replay else _default_replay()
    if replay is not None and replay.is_file():
        states = _gamestates(replay, n + w)
        ports = sorted(states[0].players)
        featurizer = FrameFeaturizer(ports[0])
        stepper = inference.PolicyStepper(policy)
        it = iter(states * 2)

        def whole_frame():
            numeric, categorical, _ = featurizer.row(next(it))
            stepper.act(numeric, categorical)

        with inference.frame_loop():
            add(_row("whole policy per frame", time_calls(whole_frame, min(n, len(states) - w), w), f"features + encoder + backbone + heads + decode ({replay.name})"))
            it2 = iter(states * 2)
            add(_row("features only (libmelee GameState)", time_calls(lambda: featurizer.row(next(it2)), min(n, len(states) - w), w), "keras_lstm.serving.melee_state"))
    else:
        add({"name": "whole policy per frame", "median_ms": None, "p99_ms": None, "cpu_median_ms": None, "cpu_p99_ms": None,
             "calls": 0, "note": "skipped: no replay (--replay FILE.slp)"})

    # The whole policy per frame without features, for the checks' overhead
    # (random frames: the cost does not depend on the values).
    act_stepper = inference.PolicyStepper(policy)
    act_numeric = rng.normal(size=(1, features.NUMERIC_SIZE)).astype(np.float32)
    act_categorical = np.zeros((1, features.CATEGORICAL_SIZE), np.int32)
    with inference.frame_loop():
        add_check(_overhead_row("PolicyStepper.act", _alternate_numpy_checks(
            lambda: act_stepper.act(act_numeric, act_categorical), n, w)))

    # 5. the naive way: re-run the windowed backbone on the last window every frame.
    window_fn = tf.function(lambda x: backbone(x, training=False), input_signature=[tf.TensorSpec([1, config.training.data.window_size, E], tf.float32)])
    window_x = tf.constant(rng.normal(size=(1, config.training.data.window_size, E)).astype(np.float32))
    add(_row(f"window re-run ({config.training.data.window_size} frames, tf.function)", time_calls(lambda: window_fn(window_x), config.window_iterations, 5), "backbone only, what step replaces"))

    by_name = {r["name"]: r for r in rows}
    step_ms = by_name["step (numpy)"]["median_ms"]
    window_ms = by_name[f"window re-run ({config.training.data.window_size} frames, tf.function)"]["median_ms"]
    ratio = window_ms / step_ms if step_ms else None
    return {
        "config": config.to_json(),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "cpu_count": os.cpu_count(),
        "rows": rows,
        "input_checks": check_rows,
        "input_checks_meet_target": all(r["meets_target"] for r in check_rows),
        "window_over_step": ratio,
        "window_over_step_target": MIN_WINDOW_OVER_STEP,
        "window_over_step_meets_target": ratio is not None and ratio >= MIN_WINDOW_OVER_STEP,
        "parameters": int(policy.count_params()),
        "backbone_parameters": int(backbone.count_params()),
    }


def format_table(result: dict) -> str:
    """The rows as a Markdown table, then the ratio line."""
    c = result["config"]
    lines = [
        f"batch 1, {c['backbone']} {c['num_layers']} x {c['hidden_size']}, embed {c['embed_size']}, "
        f"{result['parameters']:,} parameters; {c['iterations']} calls per row ({c['window_iterations']} for windows); "
        f"TF threads: {c['tf_threads'] or 'default'}",
        f"{result['cpu_count']} CPUs, 1-minute load average at the end: {result['load_average_1min']}",
        "",
        "| path | median ms | p99 ms | CPU median ms | CPU p99 ms | target | |",
        "|---|---:|---:|---:|---:|---|---|",
    ]

    def ms(value):
        return "-" if value is None else f"{value:.3f}"

    for r in result["rows"]:
        ok = "" if "meets_target" not in r else ("met" if r["meets_target"] else "MISSED")
        lines.append(
            f"| {r['name']} | {ms(r['median_ms'])} | {ms(r['p99_ms'])} | {ms(r['cpu_median_ms'])} | {ms(r['cpu_p99_ms'])} "
            f"| {r.get('target', '')} | {ok} |"
        )
    ratio = result["window_over_step"]
    ok = "met" if result["window_over_step_meets_target"] else "MISSED"
    lines.append("")
    lines.append(f"window re-run / step (medians): {ratio:.0f}x (target >= {MIN_WINDOW_OVER_STEP:.0f}x: {ok})")
    lines += [
        "",
        "NaN/inf input checks, checked vs unchecked, called alternately:",
        "",
        "| path | checked median ms | unchecked median ms | overhead | target | |",
        "|---|---:|---:|---:|---|---|",
    ]
    for r in result.get("input_checks", []):
        overhead = "-" if r["overhead"] is None else f"{r['overhead']:+.1%}"
        lines.append(
            f"| {r['name']} | {ms(r['checked_median_ms'])} | {ms(r['unchecked_median_ms'])} | {overhead} "
            f"| {r['target']} | {'met' if r['meets_target'] else 'MISSED'} |"
        )
    return "\n".join(lines)
