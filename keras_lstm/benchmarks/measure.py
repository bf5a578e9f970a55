"""Measuring helpers every benchmark shares: the machine and the code measured,
this process's resident memory and its peak, timing calls and training steps,
and the default replay folder.

Peak memory is the process's `VmHWM` from `/proc/self/status` (Linux), which
`reset_peak_rss` can set back to the current RSS; `ru_maxrss` is only the
fallback where `/proc` is missing, as Linux carries it across `exec` (a child
would report its parent's peak).
"""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import time
from pathlib import Path
from typing import Callable

import keras
import numpy as np

# The files the training numbers depend on: `code_version` names those with
# uncommitted changes.
TRAINING_PATH_FILES = tuple(
    f"keras_lstm/{name}.py"
    for name in (
        "model/backbone", "model/recurrent", "model/tbptt", "model/policy", "training/train", "data/windows",
        "data/features", "evaluation/evaluate", "evaluation/deploy_eval", "training/carried_training",
    )
)


def default_replays() -> Path:
    """`../shared/replays/games` beside the repository (a source checkout),
    else relative to the working directory."""
    beside_repo = Path(__file__).resolve().parents[3] / "shared" / "replays" / "games"
    return beside_repo if beside_repo.is_dir() else Path("../shared/replays/games")


# ---------------------------------------------------------------------------
# The machine and the code


def code_version() -> dict:
    """The git commit of the checkout holding this package, and which files
    on the training path had uncommitted changes; `{}` without git."""
    package_dir = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=package_dir, capture_output=True, text=True, timeout=10).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain"], cwd=package_dir, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    changed = sorted(line[3:] for line in status.splitlines() if line[3:] in TRAINING_PATH_FILES)
    return {"commit": commit or None, "uncommitted": changed}


def load_average() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_features() -> list[str]:
    """The CPU's vector-instruction flags that change these figures (AVX2,
    FMA, AVX-512 and its bfloat16/fp16 parts, AMX), from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                return sorted(f for f in flags if f in ("avx2", "fma") or f.startswith(("avx512", "amx")))
    except OSError:
        pass
    return []


def machine_info() -> dict:
    """The CPU, the software (Keras, its backend and the backend's version;
    TensorFlow's thread settings under TensorFlow), the load average and the
    code version, for a results file."""
    info = {
        "code": code_version(),
        "cpu": cpu_name(),
        "cpu_features": cpu_features(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": load_average(),
        "keras": keras.__version__,
        "keras_backend": keras.backend.backend(),
    }
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        info.update(
            tensorflow=tf.__version__,
            intra_op_threads=tf.config.threading.get_intra_op_parallelism_threads(),
            inter_op_threads=tf.config.threading.get_inter_op_parallelism_threads(),
        )
    elif keras.backend.backend() == "jax":
        import jax
        import jaxlib

        info.update(jax=jax.__version__, jaxlib=jaxlib.__version__)
    return info


# ---------------------------------------------------------------------------
# Memory of this process


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_mb() -> float | None:
    """This process's resident memory now (MB); None without `/proc`."""
    kb = _status_kb("VmRSS")
    return None if kb is None else kb / 1024


def peak_rss_mb() -> float:
    """This process's peak resident memory (MB) since it started or since
    `reset_peak_rss`."""
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def reset_peak_rss() -> bool:
    """Set the peak (VmHWM) back to the current RSS (Linux >= 4.0); False
    if not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------
# Time


def time_calls(fn: Callable[[], object], iterations: int, warmup: int) -> tuple[np.ndarray, np.ndarray]:
    """Wall-clock and CPU time (all of this process's threads) of each of
    `iterations` calls, in ms, after `warmup` calls. On a shared machine the
    wall-clock tail is mostly time spent descheduled; the CPU time is what
    the code itself costs."""
    for _ in range(warmup):
        fn()
    wall, cpu = np.empty(iterations), np.empty(iterations)
    clock, cpu_clock = time.perf_counter, time.process_time
    for i in range(iterations):
        start, cpu_start = clock(), cpu_clock()
        fn()
        wall[i], cpu[i] = clock() - start, cpu_clock() - cpu_start
    return wall * 1e3, cpu * 1e3


def time_alternating(fn_a: Callable[[], object], fn_b: Callable[[], object], iterations: int, warmup: int) -> tuple[np.ndarray, np.ndarray]:
    """Wall-clock ms of `iterations` calls of each of `fn_a` and `fn_b`,
    called alternately (a, b, a, b...) so that both see the same load."""
    for _ in range(warmup):
        fn_a()
        fn_b()
    a, b = np.empty(iterations), np.empty(iterations)
    clock = time.perf_counter
    for i in range(iterations):
        start = clock()
        fn_a()
        middle = clock()
        fn_b()
        end = clock()
        a[i], b[i] = middle - start, end - middle
    return a * 1e3, b * 1e3


class StepTimer(keras.callbacks.Callback):
    """Seconds of each training step (`step_s`) and each epoch (`epoch_s`)
    of the `fit` calls it is passed to."""

    def __init__(self):
        super().__init__()
        self.step_s: list[float] = []
        self.epoch_s: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_s.append(time.perf_counter() - self._epoch_start)

    def on_train_batch_begin(self, batch, logs=None):
        self._step_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.step_s.append(time.perf_counter() - self._step_start)
