"""Training a policy on a folder of replays, under `model.fit`.

The run folder (`--output`) holds everything a run makes:

    model.keras      the trained policy (last epoch)
    best.keras       the policy with the best validation loss so far
    run.json         the configuration, the file split and the baselines' statistics
    metrics.json     the final summary (validation loss, accuracies, baselines, speed)
    history.json     per-epoch losses and accuracies
    logs/            TensorBoard logs
    backup/          BackupAndRestore state while a run is going (removed at the end)

Starting again with the same `--output` after a crash resumes from `backup/`.

The data comes from a replay folder (`replays`, parsed at each run) or from a
dataset prepared once (`data_dir`, see `keras_lstm.tfds_dataset`; streamed by
`keras_lstm.pipeline`). `strategy` picks the `tf.distribute` strategy
(`keras_lstm.distribute`): under `multi-worker` only the chief writes the run
folder; the other workers write to temporary folders, and each keeps its own
`backup-<task>` so a restarted cluster resumes.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from keras_lstm import baselines, distribute, features
from keras_lstm.backbone import CELL_TYPES, check_positive
from keras_lstm.data import Windows, make_windows, split_by_game
from keras_lstm.evaluate import evaluate_policy
from keras_lstm.pipeline import TrainInputs, prepared_inputs
from keras_lstm.policy import build_policy
from keras_lstm.replays import LoadReport, find_replays, load_trajectories

MODEL_FILE = "model.keras"
BEST_FILE = "best.keras"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.json"


@dataclasses.dataclass
class TrainConfig:
    replays: str
    output: str = "runs/latest"
    backbone: str = "lstm"
    embed_size: int = 128
    hidden_size: int = 256
    num_layers: int = 2
    dropout: float = 0.1
    window_size: int = 60
    truncate_bptt: int | None = None
    stride: int = 4
    delay: int = 0
    epochs: int = 3
    batch_size: int = 64
    learning_rate: float = 1e-3
    val_fraction: float = 0.15
    seed: int = 0
    max_replays: int | None = None
    max_frames: int | None = None
    backup_every_steps: int = 200
    matmul_dtype: str | None = None  # "bfloat16": faster recurrent matmuls on CPUs with AVX512_BF16
    data_dir: str | None = None  # a dataset from `keras-lstm prepare`, instead of `replays`
    strategy: str = "default"  # "default" | "mirrored" | "multi-worker"

    def validate(self) -> None:
        """Raise ValueError naming the first bad option."""
        for name in ("embed_size", "hidden_size", "num_layers", "window_size", "stride", "epochs", "batch_size", "learning_rate"):
            check_positive(**{name.replace("_", "-"): getattr(self, name)})
        if self.backbone not in CELL_TYPES:
            raise ValueError(f"backbone must be one of {CELL_TYPES}, got {self.backbone!r}")
        if self.matmul_dtype not in (None, "float32", "bfloat16"):
            raise ValueError(f"matmul-dtype must be float32 or bfloat16, got {self.matmul_dtype!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.delay < 0:
            raise ValueError(f"delay must be >= 0, got {self.delay}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.truncate_bptt is not None:
            check_positive(truncate_bptt=self.truncate_bptt)
            if self.truncate_bptt > self.window_size:
                raise ValueError(
                    f"truncate-bptt ({self.truncate_bptt}) must not exceed window-size ({self.window_size})"
                )
        for name in ("max_replays", "max_frames"):
            value = getattr(self, name)
            if value is not None:
                check_positive(**{name.replace("_", "-"): value})
        if self.strategy not in distribute.STRATEGIES:
            raise ValueError(f"strategy must be one of {distribute.STRATEGIES}, got {self.strategy!r}")
        if self.strategy == "multi-worker" and not self.data_dir:
            raise ValueError("--strategy multi-worker needs --data-dir: each worker streams its own shard of a prepared dataset")


@dataclasses.dataclass
class PreparedData:
    train: Windows
    val: Windows
    train_report: LoadReport
    val_report: LoadReport
    train_files: list[str]
    val_files: list[str]


def load_split(config: TrainConfig, on_skip: Callable[[str, str], None] | None = None) -> PreparedData:
    """Find, split (by file), read and window the replays."""
    paths = find_replays(config.replays)
    if config.max_replays is not None:
        paths = paths[: config.max_replays]
    train_files, val_files = split_by_game([str(p) for p in paths], config.val_fraction, config.seed)
    cap_train = cap_val = None
    if config.max_frames is not None:
        cap_val = max(1, int(config.max_frames * config.val_fraction))
        cap_train = max(1, config.max_frames - cap_val)
    train_report = load_trajectories([Path(p) for p in train_files], max_frames=cap_train, on_skip=on_skip)
    val_report = load_trajectories([Path(p) for p in val_files], max_frames=cap_val, on_skip=on_skip)
    if not train_report.trajectories:
        skipped = train_report.replays_skipped + val_report.replays_skipped
        raise ValueError(
            f"{config.replays}: no usable replay for training ({skipped} of {len(paths)} files skipped, "
            f"{val_report.replays_used} usable file(s) held out for validation)"
        )

    def windows(report):
        return make_windows([features.align(t, config.delay) for t in report.trajectories], config.window_size, config.stride)

    train, val = windows(train_report), windows(val_report)
    if len(train) < config.batch_size:
        raise ValueError(
            f"{config.replays}: only {len(train)} training windows of {config.window_size} frames, "
            f"fewer than one batch of {config.batch_size}"
        )
    return PreparedData(train, val, train_report, val_report, train_files, val_files)


def replay_inputs(config: TrainConfig, on_skip: Callable[[str, str], None] | None = None) -> TrainInputs:
    """`TrainInputs` from a replay folder, all in memory (`load_split`)."""
    data = load_split(config, on_skip)
    return TrainInputs(
        make_train_dataset=lambda: data.train.dataset(config.batch_size, shuffle=True, seed=config.seed, drop_remainder=True),
        steps_per_epoch=None,
        train_windows=len(data.train),
        val=data.val,
        stats=baselines.fit_baselines(data.train.predicted_targets(), data.train.previous_targets()),
        train_files=data.train_files,
        val_files=data.val_files,
        train_counts=data.train_report.counts(),
        counts=_combined_counts(data.train_report, data.val_report),
        skipped=data.train_report.skipped + data.val_report.skipped,
    )


def _combined_counts(*reports: LoadReport) -> dict:
    total = {}
    for report in reports:
        for k, v in report.counts().items():
            total[k] = total.get(k, 0) + v
    return total


class _EpochTimer(keras.callbacks.Callback):
    """Wall time spent in training epochs (validation excluded)."""

    def __init__(self):
        super().__init__()
        self.train_seconds = 0.0
        self.epochs_run = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_test_begin(self, logs=None):
        if hasattr(self, "_start"):
            self.train_seconds += time.perf_counter() - self._start
            del self._start

    def on_epoch_end(self, epoch, logs=None):
        if hasattr(self, "_start"):
            self.train_seconds += time.perf_counter() - self._start
            del self._start
        self.epochs_run += 1


# Options that may differ when a killed run is started again.
_RESUME_MAY_CHANGE = {"epochs", "output", "backup_every_steps"}


def _check_resumable(out: Path, config: TrainConfig) -> None:
    """Refuse to resume a backup made with other options: its weights would
    not fit, or would silently continue a different experiment."""
    if not (out / "backup").exists() or not (out / RUN_FILE).exists():
        return
    before = json.loads((out / RUN_FILE).read_text()).get("config", {})
    now = dataclasses.asdict(config)
    changed = sorted(k for k in now if k not in _RESUME_MAY_CHANGE and before.get(k) != now[k])
    if changed:
        raise ValueError(
            f"{out} holds an unfinished run with other options ({', '.join(changed)}); "
            f"use the same options to resume, another --output, or delete {out / 'backup'}"
        )


def train(
    config: TrainConfig,
    on_skip: Callable[[str, str], None] | None = None,
    callbacks: list | None = None,
    verbose: int | str = "auto",
) -> dict:
    """Train, save the run folder, and return the final summary (also written
    to `metrics.json`)."""
    config.validate()
    # First: a multi-worker strategy must exist before any other TF op runs.
    strategy = distribute.select_strategy(config.strategy)
    keras.utils.set_random_seed(config.seed)
    out = Path(config.output).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    _check_resumable(out, config)
    chief = distribute.is_chief(strategy)
    write_dir = distribute.write_dir(out, strategy)  # the run folder, or a temporary one for a non-chief worker

    data = prepared_inputs(config, strategy) if config.data_dir else replay_inputs(config, on_skip)
    stats = data.stats
    with strategy.scope():
        policy = build_policy(
            config.backbone,
            config.embed_size,
            config.hidden_size,
            config.num_layers,
            config.dropout,
            config.truncate_bptt,
            config.matmul_dtype,
        )
        policy.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
    distribute.prepare_for_fit(policy, strategy)

    train_ds = data.make_train_dataset()
    val_ds = data.val.dataset(config.batch_size * 4, shuffle=False) if len(data.val) else None
    timer = _EpochTimer()
    monitor = "val_loss" if val_ds is not None else "loss"
    fit_callbacks = [
        keras.callbacks.BackupAndRestore(str(distribute.backup_dir(out, strategy)), save_freq=config.backup_every_steps),
        keras.callbacks.ModelCheckpoint(str(write_dir / BEST_FILE), monitor=monitor, save_best_only=True),
        keras.callbacks.TensorBoard(str(write_dir / "logs")),
        keras.callbacks.TerminateOnNaN(),
        timer,
        *(callbacks or []),
    ]
    run_info = {
        "config": dataclasses.asdict(config),
        "feature_version": features.FEATURE_VERSION,
        "train_files": data.train_files,
        "val_files": data.val_files,
        "baseline_stats": stats.to_json(),
    }
    (write_dir / RUN_FILE).write_text(json.dumps(run_info, indent=1))

    history = policy.fit(
        train_ds,
        validation_data=val_ds,
        epochs=config.epochs,
        steps_per_epoch=data.steps_per_epoch,
        callbacks=fit_callbacks,
        verbose=verbose,
        shuffle=False,
    )
    policy.save(write_dir / MODEL_FILE)  # every worker saves (saving may all-reduce); only the chief's is kept
    (write_dir / HISTORY_FILE).write_text(json.dumps({k: [float(x) for x in v] for k, v in history.history.items()}, indent=1))

    steps = data.train_windows // config.batch_size
    trained_windows = steps * config.batch_size * timer.epochs_run
    summary = {
        "config": dataclasses.asdict(config),
        "parameters": int(policy.count_params()),
        "backbone_parameters": int(policy.backbone.count_params()),
        "epochs_run": timer.epochs_run,
        "train_seconds": timer.train_seconds,
        "train_windows_per_s": trained_windows / timer.train_seconds if timer.train_seconds else None,
        "train_frames_per_s": trained_windows * config.window_size / timer.train_seconds if timer.train_seconds else None,
        "train_windows": data.train_windows,
        "val_windows": len(data.val),
        **{f"train_{k}": v for k, v in data.train_counts.items()},
        **data.counts,
        "skipped": data.skipped,
        "output": str(out),
        "model_path": str(out / MODEL_FILE),
        "logs_path": str(out / "logs"),
    }
    if len(data.val) and chief:
        summary.update(evaluate_policy(distribute.local_model(policy), data.val, stats))
    else:
        summary["val_loss"] = None
    summary["strategy"] = {"name": config.strategy, "replicas": strategy.num_replicas_in_sync, "chief": chief}
    (write_dir / METRICS_FILE).write_text(json.dumps(summary, indent=1))
    distribute.cleanup(write_dir, out)
    return summary


def load_run(model_dir: str | Path):
    """`(policy, run_info)` from a run folder (or a `.keras` file inside one)."""
    path = Path(model_dir).expanduser()
    model_file = path if path.suffix == ".keras" else path / MODEL_FILE
    run_file = model_file.parent / RUN_FILE
    if not model_file.exists():
        raise FileNotFoundError(f"{model_file}: no trained model here (expected {MODEL_FILE} from keras-lstm train)")
    if not run_file.exists():
        raise FileNotFoundError(f"{run_file}: missing (written by keras-lstm train next to the model)")
    run_info = json.loads(run_file.read_text())
    if run_info.get("feature_version") != features.FEATURE_VERSION:
        raise ValueError(
            f"{run_file}: model trained on features version {run_info.get('feature_version')}, "
            f"this keras-lstm computes version {features.FEATURE_VERSION}; retrain it"
        )
    policy = keras.models.load_model(model_file)
    return policy, run_info


def evaluate_folder(
    model_dir: str | Path, replays: str | Path, on_skip=None, batch_size: int = 256, stride: int | None = None
) -> dict:
    """Evaluate a trained run on every usable replay in a folder, predicting
    every `stride`-th frame (default: the stride the run trained with)."""
    policy, run = load_run(model_dir)
    cfg = run["config"]
    report = load_trajectories(find_replays(replays), on_skip=on_skip)
    if not report.trajectories:
        raise ValueError(f"{replays}: no usable replay ({report.replays_skipped} skipped)")
    stride = cfg["stride"] if stride is None else stride
    windows = make_windows([features.align(t, cfg["delay"]) for t in report.trajectories], cfg["window_size"], stride)
    stats = baselines.BaselineStats.from_json(run["baseline_stats"])
    summary = evaluate_policy(policy, windows, stats, batch_size)
    summary.update(report.counts())
    summary["skipped"] = report.skipped
    summary["parameters"] = int(policy.count_params())
    summary["model_path"] = str(model_dir)
    return summary
