"""The training benchmark protocol behind `keras-lstm bench train`.

One fixed, small protocol (same replay split, seed, epochs, batch, window) run
for every configuration, each in its own subprocess so that its peak memory is
its own:

- backbones: LSTM and GRU at `hidden_size` x `num_layers`, full BPTT;
- truncated BPTT: the LSTM with full BPTT and with K = 20, 15, 10;
- the train/deploy gap: every trained model evaluated on the validation games
  as trained (windows from the zero state) and as deployed (each whole game
  stepped with the state carried from its first frame,
  `keras_lstm.deploy_eval`); then, if the LSTM's deployed loss is more than
  5 % above its windowed loss (or when asked), the LSTM trained with the
  state carried across consecutive segments (`keras_lstm.carried_training`).

Each worker trains with `keras_lstm.train.train` (or `train_carried`) exactly
as `keras-lstm train` does, timing every training step in a callback (the
median excludes the first steps, which trace the graph) and reading the
process's peak resident memory (VmHWM, reset just before `fit`), then
measures single-frame step latency on the trained weights.

Timings on a shared machine are noisy: compare ratios within one run.

    results = run_protocol(full_protocol("../shared/replays/games"), "bench/")
    print(format_markdown(results))
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from keras_lstm.controller import HEADS

SKIP_FIRST_STEPS = 3  # the first steps trace and compile the graph
RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
CARRIED_CHOICES = ("auto", "always", "never")
# A deployed loss more than 5 % above the windowed loss on the same frames is
# a gap worth closing (the carried-state training mode is then run).
GAP_THRESHOLD = 1.05
TRAINING_PATH_FILES = tuple(
    f"keras_lstm/{name}.py"
    for name in ("backbone", "recurrent", "tbptt", "policy", "train", "data", "features", "evaluate", "deploy_eval", "carried_training")
)


# ---------------------------------------------------------------------------
# The protocol (plain data)


@dataclasses.dataclass
class Protocol:
    """Everything every configuration shares. `truncations` lists K values
    (None = full BPTT) run with the LSTM at `window_size`."""

    replays: str
    name: str = "full"
    embed_size: int = 128
    hidden_size: int = 256
    num_layers: int = 2
    window_size: int = 60
    stride: int = 20
    epochs: int = 2
    batch_size: int = 64
    learning_rate: float = 1e-3
    seed: int = 0
    val_fraction: float = 0.15
    max_frames: int | None = None
    truncations: tuple = (None, 20, 15, 10)
    carried_state: str = "auto"  # "auto": only if the LSTM's deployed/windowed loss > GAP_THRESHOLD; "always"; "never"
    carried_streams: int = 32
    latency_steps: int = 300
    worker_timeout_s: float = 1800.0
    time_budget_s: float | None = 28 * 60  # runs that would start past it are skipped and reported

    def validate(self) -> None:
        """Raise ValueError naming the first bad setting."""
        from keras_lstm.backbone import check_positive

        for name in ("embed_size", "hidden_size", "num_layers", "window_size", "stride", "epochs", "batch_size", "carried_streams", "latency_steps"):
            check_positive(**{name.replace("_", "-"): getattr(self, name)})
        if self.max_frames is not None:
            check_positive(**{"max-frames": self.max_frames})
        for k in self.truncations:
            if k is not None and not 0 < k <= self.window_size:
                raise ValueError(f"truncation {k} must be between 1 and the window size ({self.window_size})")
        if self.carried_state not in CARRIED_CHOICES:
            raise ValueError(f"carried-state must be one of {CARRIED_CHOICES}, got {self.carried_state!r}")
        if None not in self.truncations:
            raise ValueError("the truncations must include None (full BPTT), the reference for the speed-ups")

    def runs(self) -> list[dict]:
        """The windowed configurations, in the order they run (the
        carried-state run, if any, comes after them: see `run_protocol`)."""
        runs = [{"name": "lstm_full" if k is None else f"lstm_k{k}", "backbone": "lstm", "truncate_bptt": k, "mode": "windows"} for k in self.truncations]
        runs.insert(1, {"name": "gru_full", "backbone": "gru", "truncate_bptt": None, "mode": "windows"})
        return runs

    def carried_run(self) -> dict:
        return {"name": "lstm_carried", "backbone": "lstm", "truncate_bptt": None, "mode": "carried"}

    def train_config(self, run: dict, output: str) -> dict:
        return {
            "replays": self.replays,
            "output": output,
            "backbone": run["backbone"],
            "embed_size": self.embed_size,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "window_size": self.window_size,
            "truncate_bptt": run["truncate_bptt"],
            "stride": self.stride,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "val_fraction": self.val_fraction,
            "seed": self.seed,
            "max_frames": self.max_frames,
        }


def default_replays() -> Path:
    """`../shared/replays/games` beside the repository (a source checkout),
    else relative to the working directory."""
    beside_repo = Path(__file__).resolve().parents[2].parent / "shared" / "replays" / "games"
    return beside_repo if beside_repo.is_dir() else Path("../shared/replays/games")


def full_protocol(replays: str, **overrides) -> Protocol:
    """The documented protocol: 2x256 LSTM/GRU, embed 128, window 60, batch 64,
    every usable game (a window every 20 frames), 2 epochs; sized to finish
    in well under 30 minutes on a busy 2-core machine."""
    return Protocol(replays=str(replays), **overrides)


def quick_protocol(replays: str, **overrides) -> Protocol:
    """A tiny protocol that checks the benchmark still runs (not its numbers)."""
    values = dict(
        name="quick",
        embed_size=16,
        hidden_size=16,
        num_layers=2,
        stride=16,
        epochs=1,
        batch_size=16,
        max_frames=4000,
        truncations=(None, 10),
        carried_state="always",
        carried_streams=8,
        latency_steps=20,
        worker_timeout_s=600.0,
    )
    values.update(overrides)
    return Protocol(replays=str(replays), **values)


# ---------------------------------------------------------------------------
# Machine description


def code_version() -> dict:
    """The git commit of this checkout, and which files on the training path
    (the ones the measured numbers depend on) had uncommitted changes."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    changed = sorted(line[3:] for line in status.splitlines() if line[3:] in TRAINING_PATH_FILES)
    return {"commit": commit or None, "uncommitted": changed}


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "code": code_version(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    try:
        import keras
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
        info["keras"] = keras.__version__
    except ImportError:  # pragma: no cover
        pass
    return info


# ---------------------------------------------------------------------------
# Inside a worker process


def _read_status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_memory() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    hwm = _read_status_kb("VmHWM")
    if hwm is not None:
        return hwm / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _make_probe():
    """A Keras callback timing each training step and the fit's peak memory."""
    import keras

    class Probe(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.step_seconds: list[float] = []
            self.rss_before_fit_mb = None
            self.peak_rss_fit_mb = None
            self.peak_is_fit_only = False

        def on_train_begin(self, logs=None):
            self.rss_before_fit_mb = (_read_status_kb("VmRSS") or 0) / 1024
            self.peak_is_fit_only = _reset_peak_memory()

        def on_train_batch_begin(self, batch, logs=None):
            self._t = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.step_seconds.append(time.perf_counter() - self._t)

        def on_train_end(self, logs=None):
            self.peak_rss_fit_mb = _peak_rss_mb()

    return Probe()


def _latency_ms(fn, steps: int) -> float:
    for _ in range(min(10, steps)):
        fn()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000)


def measure_step_latency(policy, steps: int) -> dict:
    """Median single-frame latency at batch 1 (ms): the backbone step of
    `keras_lstm.inference.step` (if present), the whole policy through
    `keras_lstm.inference.PolicyStepper` (if present), and a `tf.function` of
    encoder -> `backbone_unroll` with T=1 -> heads."""
    import tensorflow as tf

    from keras_lstm import features
    from keras_lstm.recurrent import backbone_unroll, zero_state

    out = {}
    backbone = policy.backbone
    rng = np.random.default_rng(0)
    numeric = rng.normal(size=(1, features.NUMERIC_SIZE)).astype(np.float32)
    categorical = np.zeros((1, features.CATEGORICAL_SIZE), np.int32)

    try:
        from keras_lstm import inference
    except ImportError:
        inference = None
    if inference is not None and hasattr(inference, "step") and hasattr(inference, "initial_hidden"):
        try:
            frame = rng.normal(size=(1, backbone.embed_size)).astype(np.float32)
            box = [inference.initial_hidden(1, backbone.hidden_size, backbone.num_layers, backbone.cell_type)]

            def numpy_step():
                _, box[0] = inference.step(backbone, frame, box[0])

            out["inference_step_ms"] = _latency_ms(numpy_step, steps)
            out["inference_step_what"] = "keras_lstm.inference.step (backbone only, numpy)"
        except Exception as err:  # noqa: BLE001 - another team's API may change; report, do not fail
            out["inference_step_error"] = f"{type(err).__name__}: {err}"
    if inference is not None and hasattr(inference, "PolicyStepper"):
        try:
            stepper = inference.PolicyStepper(policy)

            def policy_step():
                stepper.logits(numeric, categorical)

            out["policy_stepper_ms"] = _latency_ms(policy_step, steps)
            out["policy_stepper_what"] = "keras_lstm.inference.PolicyStepper.logits (whole policy, numpy)"
        except Exception as err:  # noqa: BLE001
            out["policy_stepper_error"] = f"{type(err).__name__}: {err}"

    state_spec = tf.nest.map_structure(lambda _: tf.TensorSpec([1, backbone.hidden_size], tf.float32), zero_state(backbone, 1))

    @tf.function(
        input_signature=[
            tf.TensorSpec([1, 1, features.NUMERIC_SIZE], tf.float32),
            tf.TensorSpec([1, 1, features.CATEGORICAL_SIZE], tf.int32),
            state_spec,
        ]
    )
    def graph_step(numeric_1x1xF, categorical_1x1xC, state):
        frames = policy.encode({"numeric": numeric_1x1xF, "categorical": categorical_1x1xC}, training=False)
        hidden, state = backbone_unroll(backbone, frames, state, training=False)
        return policy.apply_heads(hidden[:, -1]), state

    x_num, x_cat = tf.constant(numeric[:, None]), tf.constant(categorical[:, None])
    box = [zero_state(backbone, 1)]

    def tf_step():
        _, box[0] = graph_step(x_num, x_cat, box[0])

    out["tf_function_step_ms"] = _latency_ms(tf_step, steps)
    out["tf_function_step_what"] = "tf.function: encoder -> backbone_unroll (T=1) -> heads (whole policy)"
    return out


def run_worker(spec: dict) -> dict:
    """Train and measure one configuration in this process (see the module
    docstring); returns a JSON-able dict."""
    import keras

    from keras_lstm import backbone as backbone_module
    from keras_lstm import features
    from keras_lstm.deploy_eval import evaluate_deployed
    from keras_lstm.train import MODEL_FILE, TrainConfig, load_split, train

    config = TrainConfig(**spec["config"])
    probe = _make_probe()
    start = time.perf_counter()
    if spec["mode"] == "carried":
        from keras_lstm.carried_training import train_carried

        summary = train_carried(config, streams=spec.get("streams", 32), callbacks=[probe], verbose=0)
        frames_per_step = spec.get("streams", 32) * config.window_size
    else:
        summary = train(config, callbacks=[probe], verbose=0)
        frames_per_step = config.batch_size * config.window_size
    wall_train_s = time.perf_counter() - start

    steps = probe.step_seconds
    steady = steps[SKIP_FIRST_STEPS:] if len(steps) > SKIP_FIRST_STEPS else steps
    step_ms = float(np.median(steady) * 1000) if steady else None

    policy = keras.models.load_model(Path(config.output) / MODEL_FILE)
    data = load_split(config)
    arrays = [features.align(t, config.delay) for t in data.val_report.trajectories]
    from keras_lstm.baselines import BaselineStats

    run_info = json.loads((Path(config.output) / "run.json").read_text())
    stats = BaselineStats.from_json(run_info["baseline_stats"])
    gap = evaluate_deployed(policy, arrays, config.window_size, config.stride, stats) if arrays else None
    latency = measure_step_latency(policy, spec.get("latency_steps", 300))

    b = policy.backbone
    layer_params = []
    d = b.embed_size
    for _ in range(b.num_layers):
        layer_params.append(backbone_module.recurrent_param_count(b.cell_type, d, b.hidden_size))
        d = b.hidden_size
    return {
        "name": spec["name"],
        "backbone": spec["backbone"],
        "truncate_bptt": spec["truncate_bptt"],
        "mode": spec["mode"],
        "parameters": summary["parameters"],
        "backbone_parameters": summary["backbone_parameters"],
        "backbone_parameters_arithmetic": int(sum(layer_params)),
        "steps_timed": len(steady),
        "step_ms_median": step_ms,
        "step_ms_p90": float(np.percentile(steady, 90) * 1000) if steady else None,
        "frames_per_step": frames_per_step,
        "steady_frames_per_s": frames_per_step / (step_ms / 1000) if step_ms else None,
        "fit_frames_per_s": summary.get("train_frames_per_s"),
        "train_seconds": summary.get("train_seconds"),
        "wall_train_s": wall_train_s,
        "rss_before_fit_mb": probe.rss_before_fit_mb,
        "peak_rss_fit_mb": probe.peak_rss_fit_mb,
        "peak_is_fit_only": probe.peak_is_fit_only,
        "peak_extra_fit_mb": (probe.peak_rss_fit_mb - probe.rss_before_fit_mb) if probe.peak_is_fit_only else None,
        "val_loss": summary.get("val_loss"),
        "per_head_accuracy": summary.get("per_head_accuracy"),
        "per_head_loss": summary.get("per_head_loss"),
        "baseline_repeat_loss": summary.get("baseline_repeat_loss"),
        "baseline_repeat_accuracy": summary.get("baseline_repeat_accuracy"),
        "baseline_prior_loss": summary.get("baseline_prior_loss"),
        "val_frames": summary.get("frames"),
        "train_windows": summary.get("train_windows"),
        "epochs_run": summary.get("epochs_run"),
        "deploy": gap,
        "latency": latency,
        "run_dir": config.output,
    }


# ---------------------------------------------------------------------------
# The parent: run every configuration in its own process


def _run_in_subprocess(spec: dict, work: Path, timeout_s: float) -> dict:
    spec_path = work / f"{spec['name']}.spec.json"
    result_path = work / f"{spec['name']}.result.json"
    log_path = work / f"{spec['name']}.log"
    spec_path.write_text(json.dumps(spec, indent=1))
    result_path.unlink(missing_ok=True)
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    repo_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = repo_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    start = time.perf_counter()
    try:
        with open(log_path, "w") as log:
            proc = subprocess.run(
                [sys.executable, "-m", "keras_lstm.benchmarks.train_protocol", str(spec_path), str(result_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                timeout=timeout_s,
            )
        code = proc.returncode
    except subprocess.TimeoutExpired:
        code = "timeout"
    elapsed = time.perf_counter() - start
    if code == 0 and result_path.exists():
        result = json.loads(result_path.read_text())
        result["process_seconds"] = elapsed
        return result
    tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] if log_path.exists() else []
    reason = f"exit {code}" + (f": {tail[0].strip()}" if tail else "")
    return {"name": spec["name"], "backbone": spec["backbone"], "truncate_bptt": spec["truncate_bptt"], "mode": spec["mode"], "error": reason, "log": str(log_path), "process_seconds": elapsed}


def run_protocol(protocol: Protocol, out_dir: str | Path, log: Callable[[str], None] | None = None) -> dict:
    """Run every configuration of `protocol` (one subprocess each, one after
    another), then write `results.json`, `report.md` and the plots to
    `out_dir`. Returns the results."""
    from keras_lstm.replays import find_replays

    log = log or (lambda message: None)
    out = Path(out_dir).expanduser()
    if not Path(protocol.replays).is_dir():
        raise NotADirectoryError(f"{protocol.replays}: not a folder of replays")
    if not find_replays(protocol.replays):
        raise ValueError(f"{protocol.replays}: no .slp replays found")
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    results = {
        "protocol": dataclasses.asdict(protocol),
        "machine": machine_info(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "runs": [],
    }
    start = time.perf_counter()

    def run(spec):
        elapsed = time.perf_counter() - start
        longest = max((r.get("process_seconds", 0) for r in results["runs"]), default=0)
        if protocol.time_budget_s and elapsed + longest > protocol.time_budget_s:
            reason = f"skipped: {elapsed:.0f} s spent, the next run would pass the {protocol.time_budget_s:.0f} s budget"
            log(f"[{elapsed:6.0f} s] {spec['name']}: {reason}")
            results["runs"].append({**spec, "error": reason, "log": "-"})
            return
        spec = {
            **spec,
            "config": protocol.train_config(spec, str(out / "runs" / spec["name"])),
            "streams": protocol.carried_streams,
            "latency_steps": protocol.latency_steps,
        }
        log(f"[{time.perf_counter() - start:6.0f} s] {spec['name']}: training ...")
        timeout = protocol.worker_timeout_s
        if protocol.time_budget_s:
            timeout = min(timeout, max(60.0, protocol.time_budget_s - elapsed))
        result = _run_in_subprocess(spec, work, timeout)
        if "error" in result:
            log(f"[{time.perf_counter() - start:6.0f} s] {spec['name']}: FAILED ({result['error']}; log {result['log']})")
        else:
            gap = f", deployed/windowed {result['deploy']['gap_ratio']:.3f}x" if result.get("deploy") else ""
            log(
                f"[{time.perf_counter() - start:6.0f} s] {spec['name']}: val loss {result['val_loss']:.4f}, "
                f"step {result['step_ms_median']:.1f} ms, peak {result['peak_rss_fit_mb']:.0f} MB{gap}"
            )
        results["runs"].append(result)
        (out / RESULTS_FILE).write_text(json.dumps(results, indent=1, default=str))

    for spec in protocol.runs():
        run(spec)
    decision = carried_decision(protocol.carried_state, _by_name(results).get("lstm_full"))
    results["carried_decision"] = decision
    log(f"[{time.perf_counter() - start:6.0f} s] carried-state training: {decision['reason']}")
    if decision["run"]:
        run(protocol.carried_run())
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    results["total_seconds"] = time.perf_counter() - start
    results["machine"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    results["plots"] = write_plots(results, out)
    (out / RESULTS_FILE).write_text(json.dumps(results, indent=1, default=str))
    (out / REPORT_FILE).write_text(format_markdown(results))
    return results


def carried_decision(choice: str, lstm_full: dict | None) -> dict:
    """Whether to run the carried-state training mode, and why."""
    if choice == "never":
        return {"run": False, "reason": "not run (--carried-state never)"}
    if choice == "always":
        return {"run": True, "reason": "run (--carried-state always)"}
    if not _ok(lstm_full) or not lstm_full.get("deploy"):
        return {"run": False, "reason": "not run: no train/deploy gap measured for the LSTM"}
    ratio = lstm_full["deploy"]["gap_ratio"]
    if ratio > GAP_THRESHOLD:
        return {"run": True, "reason": f"run: the LSTM's deployed loss is {ratio:.3f}x its windowed loss (> {GAP_THRESHOLD}x)"}
    return {"run": False, "reason": f"not run: the LSTM's deployed loss is {ratio:.3f}x its windowed loss (threshold {GAP_THRESHOLD}x)"}


# ---------------------------------------------------------------------------
# Tables


def _separator(header: str) -> str:
    return "|" + "---|" * (header.count("|") - 1)


def _fmt(value, spec=".3f", missing="-") -> str:
    return missing if value is None else format(value, spec)


def _by_name(results: dict) -> dict:
    return {r["name"]: r for r in results["runs"]}


def _ok(run) -> bool:
    return run is not None and "error" not in run


def _mean_accuracy(run) -> float | None:
    acc = run.get("per_head_accuracy") if run else None
    return float(np.mean([acc[h] for h in HEADS])) if acc else None


def _label(run: dict) -> str:
    if run["mode"] == "carried":
        return f"{run['backbone'].upper()}, state carried across segments"
    k = run["truncate_bptt"]
    return f"{run['backbone'].upper()}, " + ("full BPTT" if k is None else f"truncate {k}")


def _latency_cell(run: dict) -> str:
    lat = run.get("latency") or {}
    parts = []
    if "inference_step_ms" in lat:
        parts.append(f"{lat['inference_step_ms']:.3f} (step)")
    if "policy_stepper_ms" in lat:
        parts.append(f"{lat['policy_stepper_ms']:.3f} (policy, numpy)")
    if "tf_function_step_ms" in lat:
        parts.append(f"{lat['tf_function_step_ms']:.3f} (policy, tf.function)")
    return " / ".join(parts) or "-"


def backbone_table(results: dict) -> str:
    runs = _by_name(results)
    rows = [runs.get("lstm_full"), runs.get("gru_full")]
    head = "| backbone | parameters (backbone) | parameters (policy) | train frames/s (steady) | train frames/s (fit, incl. tracing) | peak RSS during fit (MB) | extra over pre-fit RSS (MB) | val loss (nats) | " + " | ".join(f"acc {h}" for h in HEADS) + " | step latency, batch 1 (ms) |"
    lines = [head, _separator(head)]
    for run in rows:
        if run is None:
            continue
        if not _ok(run):
            lines.append(f"| {run['name']} | failed: {run['error']} |")
            continue
        acc = run["per_head_accuracy"] or {}
        lines.append(
            f"| {run['backbone'].upper()} | {run['backbone_parameters']:,} | {run['parameters']:,} | "
            f"{_fmt(run['steady_frames_per_s'], ',.0f')} | {_fmt(run['fit_frames_per_s'], ',.0f')} | "
            f"{_fmt(run['peak_rss_fit_mb'], ',.0f')} | {_fmt(run['peak_extra_fit_mb'], ',.0f')} | {_fmt(run['val_loss'], '.4f')} | "
            + " | ".join(_fmt(acc.get(h)) for h in HEADS)
            + f" | {_latency_cell(run)} |"
        )
    base = next((r for r in rows if _ok(r)), None)
    if base:
        lines.append(
            f"| *repeat previous input* | | | | | | | {_fmt(base['baseline_repeat_loss'], '.4f')} | "
            + " | ".join(_fmt((base.get("baseline_repeat_accuracy") or {}).get(h)) for h in HEADS)
            + " | |"
        )
    return "\n".join(lines)


def truncation_table(results: dict) -> str:
    runs = [r for r in results["runs"] if r["mode"] == "windows" and r["backbone"] == "lstm"]
    full = next((r for r in runs if r["truncate_bptt"] is None and _ok(r)), None)
    head = "| truncation | step time (ms, median) | speed-up vs full | peak RSS during fit (MB) | extra over pre-fit RSS (MB) | val loss (nats) | loss vs full | mean head accuracy | accuracy vs full (points) | " + " | ".join(f"acc {h}" for h in HEADS) + " |"
    lines = [head, _separator(head)]
    for run in runs:
        label = "full (60)" if run["truncate_bptt"] is None else str(run["truncate_bptt"])
        if not _ok(run):
            lines.append(f"| {label} | failed: {run['error']} |")
            continue
        acc = run["per_head_accuracy"] or {}
        speed = loss_change = acc_change = None
        if full:
            speed = full["step_ms_median"] / run["step_ms_median"] if run["step_ms_median"] else None
            loss_change = (run["val_loss"] / full["val_loss"] - 1) * 100
            acc_change = (_mean_accuracy(run) - _mean_accuracy(full)) * 100
        lines.append(
            f"| {label} | {_fmt(run['step_ms_median'], '.1f')} | {_fmt(speed, '.2f')}x | {_fmt(run['peak_rss_fit_mb'], ',.0f')} | "
            f"{_fmt(run['peak_extra_fit_mb'], ',.0f')} | {_fmt(run['val_loss'], '.4f')} | {_fmt(loss_change, '+.1f')} % | "
            f"{_fmt(_mean_accuracy(run))} | {_fmt(acc_change, '+.2f')} | " + " | ".join(_fmt(acc.get(h)) for h in HEADS) + " |"
        )
    return "\n".join(lines)


def gap_table(results: dict) -> str:
    head = "| model | windowed val loss (as trained) | deployed, same frames | deployed / windowed | deployed, every frame | repeat-previous baseline, same frames | train frames/s (steady) |"
    lines = [head, _separator(head)]
    for run in results["runs"]:
        if not _ok(run) or not run.get("deploy"):
            if not _ok(run):
                lines.append(f"| {_label(run)} | failed: {run['error']} |")
            continue
        d = run["deploy"]
        lines.append(
            f"| {_label(run)} | {d['windowed']['loss']:.4f} | {d['deployed_same_frames']['loss']:.4f} | "
            f"{d['gap_ratio']:.3f}x | {d['deployed_all_frames']['loss']:.4f} | {_fmt(d.get('baseline_repeat_same_frames'), '.4f')} | "
            f"{_fmt(run['steady_frames_per_s'], ',.0f')} |"
        )
    return "\n".join(lines)


def format_markdown(results: dict) -> str:
    p, m = results["protocol"], results["machine"]
    runs = _by_name(results)
    any_run = next((r for r in results["runs"] if _ok(r)), None)
    lines = [
        f"# Training benchmark ({p['name']} protocol)",
        "",
        f"Machine: {m.get('cpu')}, {m.get('cores')} cores; TensorFlow {m.get('tensorflow')}, Keras {m.get('keras')}, "
        f"Python {m.get('python')}. Load average at start {_loadavg(m.get('load_average'))}, at end {_loadavg(m.get('load_average_end'))}.",
        f"Started {results.get('started')}, took {_fmt(results.get('total_seconds'), '.0f')} s. "
        f"Code: commit {(m.get('code') or {}).get('commit') or '-'}"
        + (f", with uncommitted changes on the training path: {', '.join((m.get('code') or {}).get('uncommitted'))}" if (m.get("code") or {}).get("uncommitted") else "")
        + ".",
        "",
        f"Protocol: replays `{p['replays']}`, seed {p['seed']}, validation fraction {p['val_fraction']} (split by game), "
        f"embed {p['embed_size']}, {p['num_layers']} x {p['hidden_size']}, window {p['window_size']}, windows every "
        f"{p['stride']} frames, batch {p['batch_size']}, {p['epochs']} epoch(s), Adam {p['learning_rate']}, "
        f"max frames {p['max_frames'] or 'all'}."
        + (f" {any_run['train_windows']:,} training windows, {any_run['val_frames']:,} validation frames." if any_run else ""),
        "Each configuration ran in its own process, one after another. Step time = median over training steps "
        f"after the first {SKIP_FIRST_STEPS} (graph tracing); peak RSS = the process's VmHWM, reset just before `fit`.",
        "",
        "## Backbones",
        "",
        backbone_table(results),
        "",
        "## Truncated BPTT (LSTM)",
        "",
        truncation_table(results),
        "",
        "## Train/deploy gap",
        "",
        "Windowed: each validation frame predicted from a window starting at the zero state (as trained). "
        "Deployed: each whole validation game stepped from its first frame with the state carried; "
        "'same frames' are the windows' last frames, 'every frame' all aligned frames.",
        "",
        gap_table(results),
    ]
    if results.get("carried_decision"):
        lines += ["", f"Training with the state carried across segments (`keras_lstm.carried_training`): {results['carried_decision']['reason']}."]
    lstm = runs.get("lstm_full")
    if _ok(lstm) and lstm.get("deploy"):
        lines += [
            "",
            "By time since the start of the game (LSTM, full BPTT; windowed and deployed on the same frames, deployed also on every frame):",
            "",
            "| frames since start | frames compared | windowed | deployed | deployed / windowed | every frame: count | every frame: deployed |",
            "|---|---|---|---|---|---|---|",
        ]
        every = {b["from_frame"]: b for b in lstm["deploy"]["deployed_loss_by_position"]}
        for b in lstm["deploy"].get("gap_by_position", []):
            e = every.get(b["from_frame"], {})
            span = f"{b['from_frame']:,}-{b['to_frame']:,}" if b["to_frame"] is not None else f"{b['from_frame']:,}+"
            lines.append(
                f"| {span} | {b['frames']:,} | {b['windowed_loss']:.4f} | {b['deployed_loss']:.4f} | {b['ratio']:.3f}x | "
                f"{e.get('frames', 0):,} | {_fmt(e.get('loss'), '.4f')} |"
            )
    if any_run and any_run.get("latency"):
        lines += ["", "Latency: " + "; ".join(f"{v}" for k, v in any_run["latency"].items() if k.endswith("_what")) + "."]
    if results.get("plots"):
        lines += ["", *[f"![{Path(p).stem}]({Path(p).name})" for p in results["plots"]]]
    failed = [r for r in results["runs"] if not _ok(r)]
    if failed:
        lines += ["", "Failed: " + "; ".join(f"{r['name']} ({r['error']}, log {r['log']})" for r in failed)]
    return "\n".join(lines) + "\n"


def _loadavg(values) -> str:
    return "/".join(f"{v:.1f}" for v in values) if values else "-"


# ---------------------------------------------------------------------------
# Plots



def _save_figure(fig, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)

def write_plots(results: dict, out_dir: Path) -> list[str]:
    """`backbones.png`, `truncation.png`, `deploy_gap.png` in `out_dir`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    runs = _by_name(results)
    written = []

    pair = [r for r in (runs.get("lstm_full"), runs.get("gru_full")) if _ok(r)]
    if pair:
        fig, axes = plt.subplots(1, 4, figsize=(14, 3.2))
        names = [r["backbone"].upper() for r in pair]
        panels = [
            ("backbone parameters", [r["backbone_parameters"] for r in pair]),
            ("training frames/s (steady)", [r["steady_frames_per_s"] or 0 for r in pair]),
            ("peak RSS during fit (MB; hatched: above pre-fit RSS)", [r["peak_rss_fit_mb"] or 0 for r in pair]),
            ("validation loss (nats)", [r["val_loss"] or 0 for r in pair]),
        ]
        for ax, (title, values) in zip(axes, panels):
            ax.bar(names, values, color=["tab:blue", "tab:orange"][: len(values)])
            ax.set_title(title, fontsize=9)
        extra = [r.get("peak_extra_fit_mb") for r in pair]
        if all(e is not None for e in extra):
            axes[2].bar(names, extra, bottom=[p - e for p, e in zip(panels[2][1], extra)], fill=False, hatch="//")
        if "baseline_repeat_loss" in pair[0]:
            axes[3].axhline(pair[0]["baseline_repeat_loss"], color="gray", ls="--", lw=1, label="repeat previous")
            axes[3].legend(fontsize=7)
        written.append(_save_figure(fig, out_dir / "backbones.png"))

    trunc = [r for r in results["runs"] if r["mode"] == "windows" and r["backbone"] == "lstm" and _ok(r)]
    if trunc:
        fig, axes = plt.subplots(1, 4, figsize=(15, 3.2))
        labels = ["full" if r["truncate_bptt"] is None else f"K={r['truncate_bptt']}" for r in trunc]
        axes[3].bar(labels, [r.get("peak_extra_fit_mb") or 0 for r in trunc], color="tab:gray")
        axes[3].set_title("peak RSS above pre-fit RSS (MB)", fontsize=9)
        axes[0].bar(labels, [r["step_ms_median"] or 0 for r in trunc])
        axes[0].set_title("training step (ms, median)", fontsize=9)
        axes[1].bar(labels, [r["val_loss"] or 0 for r in trunc], color="tab:green")
        axes[1].set_title("validation loss (nats)", fontsize=9)
        axes[1].set_ylim(min(r["val_loss"] for r in trunc) * 0.95, max(r["val_loss"] for r in trunc) * 1.02)
        axes[2].bar(labels, [_mean_accuracy(r) or 0 for r in trunc], color="tab:purple")
        axes[2].set_title("mean head accuracy", fontsize=9)
        lo = min(_mean_accuracy(r) for r in trunc)
        axes[2].set_ylim(lo * 0.98, max(_mean_accuracy(r) for r in trunc) * 1.01)
        written.append(_save_figure(fig, out_dir / "truncation.png"))

    deployed = [r for r in results["runs"] if _ok(r) and r.get("deploy")]
    if deployed:
        fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
        labels = [r["name"] for r in deployed]
        x = np.arange(len(deployed))
        ratios = [r["deploy"]["gap_ratio"] for r in deployed]
        axes[0].bar(x, ratios, color=["tab:red" if v > GAP_THRESHOLD else "tab:blue" for v in ratios])
        axes[0].axhline(1.0, color="black", lw=1)
        axes[0].axhline(GAP_THRESHOLD, color="gray", ls="--", lw=1, label=f"{GAP_THRESHOLD}x threshold")
        axes[0].set_ylim(min(0.95, min(ratios) - 0.02), max(1.1, max(ratios) + 0.05))
        axes[0].set_xticks(x, labels, rotation=20, fontsize=8)
        axes[0].set_title("deployed / windowed validation loss, same frames", fontsize=9)
        axes[0].legend(fontsize=7)
        plotted = False
        for r in deployed:
            bins = r["deploy"].get("gap_by_position") or []
            centres = [b["from_frame"] * 1.5 + 1 if b["to_frame"] is None else (b["from_frame"] + b["to_frame"]) / 2 for b in bins]
            if bins:
                axes[1].plot(centres, [b["ratio"] for b in bins], marker="o", label=r["name"])
                plotted = True
        axes[1].axhline(1.0, color="black", lw=1)
        axes[1].axhline(GAP_THRESHOLD, color="gray", ls="--", lw=1)
        axes[1].set_ylim(axes[0].get_ylim())
        if plotted:
            axes[1].set_xscale("log")
        axes[1].set_xlabel("frames since the start of the game (bin centre)", fontsize=8)
        axes[1].set_title("deployed / windowed loss by time in game (1 = no gap)", fontsize=9)
        axes[1].legend(fontsize=7)
        written.append(_save_figure(fig, out_dir / "deploy_gap.png"))
    return written


# ---------------------------------------------------------------------------


def _worker_main(argv: list[str]) -> int:
    spec_path, result_path = argv
    spec = json.loads(Path(spec_path).read_text())
    result = run_worker(spec)
    Path(result_path).write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
