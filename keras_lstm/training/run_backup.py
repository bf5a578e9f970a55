"""Backups a killed run resumes from, at the batch where they were taken.

Keras' `BackupAndRestore` restarts an interrupted epoch from its first batch,
and a kill while it writes leaves a backup that cannot be opened. Here:

- a backup holds every variable that decides what training does next (the
  model's weights and its dropout seed generators, the optimizer's slots and
  step count, the running sums of the epoch's metrics) and the run's
  progress (epoch, batches of it done, the history of finished epochs, the
  best validation loss, time spent): `variables.npz` + `progress.json`;
- each backup is written to a temporary folder and renamed to
  `<backup dir>/<global step>`; older ones are removed only once the new one
  is in place, so a kill at any instant leaves at least one complete backup;
- `load_latest` restores the newest backup that loads, and says which
  damaged one it passed over.

With the training batches in a fixed order per epoch (`train` skips the
batches a backup had already seen), a resumed run repeats exactly what the
uninterrupted run would have done.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
import zipfile
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from keras_lstm.files import atomic

VARIABLES_FILE = "variables.npz"
PROGRESS_FILE = "progress.json"


@dataclasses.dataclass
class Progress:
    """Where a run stands: `step` batches of epoch `epoch` are done (0-based
    epoch; `step == 0` at an epoch's start), `history` holds each finished
    epoch's logs once."""

    epoch: int = 0
    step: int = 0
    history: dict = dataclasses.field(default_factory=dict)
    best: float | None = None  # best monitored value so far (best.keras)
    train_seconds: float = 0.0

    def global_step(self, steps_per_epoch: int) -> int:
        return self.epoch * steps_per_epoch + self.step


class BackupError(ValueError):
    """No backup in the folder can be loaded."""


def _variable_groups(model) -> dict[str, list]:
    groups = {"model": list(model.variables), "metrics": [v for m in model.metrics for v in m.variables]}
    if model.optimizer is not None:
        groups["optimizer"] = list(model.optimizer.variables)
    carried = list(getattr(model, "carried_state_variables", []))  # carried-state training
    if carried:
        groups["carried"] = carried
    return groups


def save(folder: str | os.PathLike, model, progress: Progress, steps_per_epoch: int) -> Path:
    """Write a complete backup `<folder>/<global step>` and remove older ones."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{progress.global_step(steps_per_epoch):012d}"
    arrays = {f"{group}/{i}": np.asarray(v.numpy()) for group, vs in _variable_groups(model).items() for i, v in enumerate(vs)}
    try:
        with atomic.atomic_path(final) as tmp:
            tmp.mkdir()
            np.savez(tmp / VARIABLES_FILE, **arrays)
            (tmp / PROGRESS_FILE).write_text(json.dumps(dataclasses.asdict(progress), indent=1))
    except atomic.DiskError as err:  # a full disk: the older backup stays, whole
        _say_backup_kept(err, folder)
        raise
    for old in complete_backups(folder):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _say_backup_kept(err: atomic.DiskError, folder: str | os.PathLike | None) -> None:
    kept = complete_backups(folder) if folder is not None else []
    if kept:
        err.advice = f"backup {kept[0].name} is kept: make room and run the same command again to resume from it"


def complete_backups(folder: str | os.PathLike) -> list[Path]:
    """Backups renamed into place, newest first (temporaries are not backups)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name), reverse=True)


def exists(folder: str | os.PathLike) -> bool:
    return bool(complete_backups(folder))


def _restore(path: Path, model) -> Progress:
    progress_data = json.loads((path / PROGRESS_FILE).read_text())
    progress = Progress(**progress_data)
    with np.load(path / VARIABLES_FILE) as saved:
        arrays = {k: saved[k] for k in saved.files}
    groups = _variable_groups(model)
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
        groups = _variable_groups(model)
    expected = {f"{g}/{i}": tuple(v.shape) for g, vs in groups.items() for i, v in enumerate(vs)}
    got = {k: tuple(a.shape) for k, a in arrays.items()}
    if expected != got:
        raise ValueError("its variables do not match this model")
    for group, variables in groups.items():
        for i, variable in enumerate(variables):
            variable.assign(arrays[f"{group}/{i}"])
    return progress


def load_latest(folder: str | os.PathLike, model, on_warning: Callable[[str], None] | None = None) -> Progress | None:
    """Restore the newest backup in `folder` that loads; None when there is
    none. Raises BackupError when every backup there is damaged."""
    folder = Path(folder)
    atomic.remove_stale_temporaries(folder)
    backups = complete_backups(folder)
    problems = []
    for path in backups:
        try:
            progress = _restore(path, model)
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as err:
            reason = " ".join(str(err).split())[:100] or type(err).__name__
            problems.append(f"{path.name}: {type(err).__name__}: {reason}")
            continue
        if problems and on_warning is not None:
            on_warning(f"{folder}: passed over damaged backup(s) ({'; '.join(problems)}); resumed from {path.name}")
        return progress
    if problems:
        raise BackupError(
            f"{folder}: every backup is damaged ({'; '.join(problems)}); delete {folder} to start the run over"
        )
    return None


class RunProgress(keras.callbacks.Callback):
    """Keeps a run's `Progress` while `fit` runs: counts batches, records each
    epoch's logs once, times the training part of each epoch, saves the best
    model atomically and writes a backup every `every_steps` batches and at
    the end of every epoch.

    Args:
        progress: where the run stands (from `load_latest`, or a new one).
        steps_per_epoch: batches in a full epoch.
        backup_dir: where backups go (None: no backups).
        every_steps: batches between backups.
        best_path: where to save the best model (None: not saved).
        monitor: the log that decides "best" (lower is better).
        metric_state: the metrics' running sums to put back at the start of
            a resumed epoch (Keras zeroes them at every epoch's start).
        saveable: the model as it is saved (e.g. the plain policy of a
            carried-state one); the trained model itself by default.
        validate: `validate(model) -> logs` run at each epoch's end, off the
            training clock, its logs added to the epoch's (for the callbacks
            after this one too): validation that is not Keras' windowed
            `validation_data` (`one_pass.one_pass_loss`).
    """

    def __init__(
        self,
        progress: Progress,
        steps_per_epoch: int,
        backup_dir: str | os.PathLike | None,
        every_steps: int,
        best_path: str | os.PathLike | None = None,
        monitor: str = "val_loss",
        metric_state: list | None = None,
        saveable: Callable | None = None,
        validate: Callable | None = None,
    ):
        super().__init__()
        self.progress = progress
        self.steps_per_epoch = steps_per_epoch
        self.backup_dir = backup_dir
        self.every_steps = every_steps
        self.best_path = Path(best_path) if best_path is not None else None
        self.monitor = monitor
        self._metric_state = metric_state
        self._saveable = saveable or (lambda model: model)
        self._validate = validate
        self._since_backup = 0
        self._start = None

    # -- timing ----------------------------------------------------------------

    def _stop_clock(self):
        if self._start is not None:
            self.progress.train_seconds += time.perf_counter() - self._start
            self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.progress.step and self._metric_state is not None:
            # A resumed epoch: its logged loss covers the batches trained
            # before the kill too.
            for variable, value in zip([v for m in self.model.metrics for v in m.variables], self._metric_state):
                variable.assign(value)
        self._metric_state = None
        self._start = time.perf_counter()

    def on_test_begin(self, logs=None):
        self._stop_clock()

    # -- batches and epochs ------------------------------------------------------

    def on_train_batch_end(self, batch, logs=None):
        self.progress.step += 1
        self._since_backup += 1
        due = self._since_backup >= self.every_steps and self.progress.step < self.steps_per_epoch
        if due and not self.model.stop_training:  # never back up weights TerminateOnNaN stopped on
            self._stop_clock()
            self.backup()
            self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self._stop_clock()
        if self._validate is not None and logs is not None and not self.model.stop_training:
            logs.update(self._validate(self.model))  # the same dict reaches the callbacks after this one
        logs = {k: float(v) for k, v in (logs or {}).items()}
        for key, value in logs.items():
            self.progress.history.setdefault(key, []).append(value)
        value = logs.get(self.monitor)
        if value is not None and math.isfinite(value) and (self.progress.best is None or value < self.progress.best):
            self.progress.best = value
            if self.best_path is not None:
                try:
                    with atomic.atomic_path(self.best_path) as tmp:
                        self._saveable(self.model).save(tmp)
                except atomic.DiskError as err:
                    _say_backup_kept(err, self.backup_dir)
                    raise
        self.progress.epoch += 1
        self.progress.step = 0
        if not self.model.stop_training:
            self.backup()

    def backup(self):
        self._since_backup = 0
        if self.backup_dir is None:
            return
        save(self.backup_dir, self.model, self.progress, self.steps_per_epoch)
