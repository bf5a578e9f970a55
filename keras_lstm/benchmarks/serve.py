"""How many games one exported policy serves: `keras-lstm bench serve`.

Exports the policy (a fresh one of the given sizes, or `--model`'s run) as
`keras-lstm export` does, plain and with `--xla`, then times each export in
its own process that loads it with `tf.saved_model.load` and imports
nothing of this project (`serve_worker.py`), as TF Serving or a user's
client would: the stateless `step` signature at each batch (games per
call), and the held-state `serving_default` at batch 1. Beside them, in
this process, the numpy `PolicyStepper` (many games in one process without
a server) at the same batches, and the numpy backbone step at batch 1.

Per row: median and p99 ms per call, game-frames per second (batch /
median), and the games that fit at 60 frames a second (game-frames/s / 60);
the best batch of each. Latency does not depend on the weights' values, so
a fresh policy is timed unless `--model` is given. The figures depend on
the machine's load: the result records the load average before and after.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from keras_lstm.benchmarks.measure import load_average, machine_info, time_calls
from keras_lstm.config import TrainConfig
from keras_lstm.data import features

FPS = 60
TARGET_GAMES = 1200
TARGET_DEFAULT_MS = 0.3
TARGET_NUMPY_STEP_MS = 0.14
WORKER = Path(__file__).with_name("serve_worker.py")


@dataclasses.dataclass
class ServeBenchConfig:
    """`training`: the policy's sizes (`keras_lstm.config`); `model`: a run
    folder to time instead; what is timed and for how long."""

    training: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    model: str | None = None
    batches: tuple[int, ...] = (1, 8, 64, 256, 1024)
    budget_s: float = 1.0
    min_calls: int = 30
    default_calls: int = 3000
    # TensorFlow's thread pools in the timing processes, as TF Serving's
    # --tensorflow_intra_op_parallelism / --tensorflow_inter_op_parallelism
    # set them; 0: TensorFlow's choice (one thread per core).
    intra_op_threads: int = 0
    inter_op_threads: int = 0


def _policy(config: ServeBenchConfig):
    if config.model is not None:
        from keras_lstm.training.run_folder import load_run

        return load_run(config.model)[0]
    from keras_lstm.model.policy import build_policy

    m = config.training.model
    return build_policy(m.backbone, embed_size=m.embed_size, hidden_size=m.hidden_size, num_layers=m.num_layers)


def _time_export(path: Path, config: ServeBenchConfig) -> dict:
    with tempfile.TemporaryDirectory(prefix="keras-lstm-serve-") as tmp:
        spec, result = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec.write_text(json.dumps({"batches": list(config.batches), "budget_s": config.budget_s,
                                    "min_calls": config.min_calls, "default_calls": config.default_calls,
                                    "intra_op_threads": config.intra_op_threads, "inter_op_threads": config.inter_op_threads}))
        done = subprocess.run([sys.executable, str(WORKER), str(path), str(spec), str(result)], capture_output=True, text=True,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"bench serve: timing {path} failed: {last}")
        return json.loads(result.read_text())


def _rate(row: dict) -> dict:
    frames = row["batch"] / row["median_ms"] * 1e3
    return {**row, "game_frames_per_s": frames, "games_at_60fps": frames / FPS}


def _time_numpy(policy, config: ServeBenchConfig) -> tuple[list, dict]:
    from keras_lstm.serving.inference import NumpyBackbone, PolicyStepper

    rng = np.random.default_rng(0)
    rows = []
    for batch in config.batches:
        stepper = PolicyStepper(policy, batch=batch)
        numeric = rng.normal(size=(batch, features.NUMERIC_SIZE)).astype(np.float32)
        categorical = np.zeros((batch, features.CATEGORICAL_SIZE), np.int32)
        first, _ = time_calls(lambda: stepper.act(numeric, categorical), 3, 2)
        calls = max(config.min_calls, int(config.budget_s * 1e3 / max(np.median(first), 1e-3)))
        wall, _ = time_calls(lambda: stepper.act(numeric, categorical), calls, 5)
        rows.append({"batch": batch, "median_ms": float(np.median(wall)), "p99_ms": float(np.percentile(wall, 99)), "calls": calls})
    backbone = NumpyBackbone(policy.backbone)
    state = backbone.initial_state(1)
    frame = rng.normal(size=(1, backbone.embed_size)).astype(np.float32)
    wall, _ = time_calls(lambda: backbone.step(frame, state), config.default_calls, 50)
    return rows, {"median_ms": float(np.median(wall)), "p99_ms": float(np.percentile(wall, 99)), "calls": config.default_calls}


def run(config: ServeBenchConfig, log: Callable[[str], None] = lambda line: None) -> dict:
    from keras_lstm.serving import export

    load_before = load_average()
    policy = _policy(config)
    result = {"machine": machine_info(), "config": {"model": config.model, "batches": list(config.batches),
                                                    "sizes": dataclasses.asdict(config.training.model),
                                                    "intra_op_threads": config.intra_op_threads, "inter_op_threads": config.inter_op_threads}}
    with tempfile.TemporaryDirectory(prefix="keras-lstm-serve-") as tmp:
        for variant, jit in (("plain", False), ("xla", True)):
            log(f"export ({variant}) and time it in a fresh process ...")
            path = export.export_policy(policy, tmp, variant, jit_compile=jit)
            timed = _time_export(path, config)
            if timed["project_modules"]:
                raise RuntimeError(f"bench serve: the timing process imported {timed['project_modules']}")
            result[variant] = {"step": [_rate(r) for r in timed["step"]], "serving_default": timed["serving_default"],
                               **{k: timed[k] for k in ("empty_signature", "weights_signature", "numpy_weights", "weight_bytes", "threads")}}
    log("numpy PolicyStepper ...")
    rows, numpy_step = _time_numpy(policy, config)
    result["numpy_stepper"] = {"step": [_rate(r) for r in rows]}
    result["numpy_backbone_step"] = numpy_step
    result["load_average_before_after"] = [load_before, load_average()]
    for variant in ("plain", "xla", "numpy_stepper"):
        best = max(result[variant]["step"], key=lambda r: r["game_frames_per_s"])
        result[variant]["best"] = {"batch": best["batch"], "games_at_60fps": best["games_at_60fps"]}
    backbone = policy.backbone
    result["judged"] = (backbone.cell_type, backbone.num_layers, backbone.hidden_size) == ("lstm", 2, 256)
    result["targets"] = {
        "games_at_60fps": {"target": TARGET_GAMES, "measured": max(result[v]["best"]["games_at_60fps"] for v in ("plain", "xla"))},
        "serving_default_median_ms": {"target": TARGET_DEFAULT_MS, "measured": min(result[v]["serving_default"]["median_ms"] for v in ("plain", "xla"))},
        "numpy_step_median_ms": {"target": TARGET_NUMPY_STEP_MS, "measured": numpy_step["median_ms"]},
    }
    return result


def format_table(result: dict) -> str:
    m, c = result["machine"], result["config"]
    threads = ", ".join(f"{name} {c.get(key, 0) or 'default'}" for name, key in (("intra-op", "intra_op_threads"), ("inter-op", "inter_op_threads")))
    lines = [
        f"{m['cpu']}, {m['cores']} cores, TensorFlow {m['tensorflow']}; load average before/after "
        f"{result['load_average_before_after'][0]} / {result['load_average_before_after'][1]}; exports timed with TF threads: {threads}",
        "",
        "step signature (plain export, XLA export) and the numpy PolicyStepper: ms per call (median / p99), game-frames/s, games at 60 FPS",
        "| batch | plain ms | plain frames/s | plain games | xla ms | xla frames/s | xla games | numpy ms | numpy frames/s | numpy games |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for plain, xla, num in zip(result["plain"]["step"], result["xla"]["step"], result["numpy_stepper"]["step"]):
        cells = [f"{r['median_ms']:.3f} / {r['p99_ms']:.3f} | {r['game_frames_per_s']:,.0f} | {r['games_at_60fps']:,.0f}" for r in (plain, xla, num)]
        lines.append(f"| {plain['batch']:,} | " + " | ".join(cells) + " |")
    lines.append("best batch: " + ", ".join(f"{v} {result[v]['best']['batch']:,} ({result[v]['best']['games_at_60fps']:,.0f} games)"
                                            for v in ("plain", "xla", "numpy_stepper")))
    lines += [
        "",
        "batch 1, ms per call (median / p99): serving_default plain "
        + " / ".join(f"{result['plain']['serving_default'][k]:.3f}" for k in ("median_ms", "p99_ms"))
        + ", xla " + " / ".join(f"{result['xla']['serving_default'][k]:.3f}" for k in ("median_ms", "p99_ms"))
        + "; numpy backbone step " + " / ".join(f"{result['numpy_backbone_step'][k]:.3f}" for k in ("median_ms", "p99_ms")),
        "a saved signature that only returns its input (the cost of any call): "
        + ", ".join(f"{result[v]['empty_signature']['median_ms']:.3f}" for v in ("plain", "xla")) + " ms (in each timing process)",
        f"a saved signature that only multiplies a row by each weight matrix ({result['plain']['weight_bytes'] / 1e6:.2f} MB of float32, "
        "the least a batch-1 call reads): "
        + ", ".join(f"{result[v]['weights_signature']['median_ms']:.3f}" for v in ("plain", "xla"))
        + " ms; numpy doing the same: " + ", ".join(f"{result[v]['numpy_weights']['median_ms']:.3f}" for v in ("plain", "xla")) + " ms",
        "",
        "targets (issue 13, for a 2x256 LSTM export):" if result["judged"] else "targets: for a 2x256 LSTM export; not judged at these sizes",
    ]
    t = result["targets"]
    if not result["judged"]:
        return "\n".join(lines)
    lines.append(f"  games at 60 FPS through step, best batch: {t['games_at_60fps']['measured']:,.0f} (target >= {TARGET_GAMES:,}: "
                 f"{'met' if t['games_at_60fps']['measured'] >= TARGET_GAMES else 'NOT met'})")
    lines.append(f"  serving_default median: {t['serving_default_median_ms']['measured']:.3f} ms (target <= {TARGET_DEFAULT_MS}: "
                 f"{'met' if t['serving_default_median_ms']['measured'] <= TARGET_DEFAULT_MS else 'NOT met'})")
    lines.append(f"  numpy step median: {t['numpy_step_median_ms']['measured']:.3f} ms (target <= {TARGET_NUMPY_STEP_MS}: "
                 f"{'met' if t['numpy_step_median_ms']['measured'] <= TARGET_NUMPY_STEP_MS else 'NOT met'})")
    return "\n".join(lines)
