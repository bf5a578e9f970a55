"""Choosing a `tf.distribute` strategy, and who writes what under it.

- `default`: no distribution (one device; what a laptop wants);
- `mirrored`: `MirroredStrategy`, one replica per local GPU (the CPU when
  there is none), gradients all-reduced every step;
- `multi-worker`: `MultiWorkerMirroredStrategy`, one process per machine (or
  several on one), the cluster and this process's place in it read from the
  `TF_CONFIG` environment variable, e.g.

      {"cluster": {"worker": ["host1:12345", "host2:12345"]},
       "task": {"type": "worker", "index": 0}}

  The chief (worker 0, or the task of type `chief`) writes the run's files;
  the other workers write theirs to temporary folders that are removed at the
  end (every worker must still save: saving may read variables that are
  all-reduced across workers). A multi-worker strategy must be created before
  any other TensorFlow op runs in the process: `train` selects it first.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from keras_lstm.config import STRATEGIES


def tf_config() -> dict | None:
    """The parsed `TF_CONFIG`, or None when unset; ValueError when malformed."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"TF_CONFIG is not valid JSON ({err})") from None
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ValueError('TF_CONFIG needs "cluster" and "task": {"type": ..., "index": ...}')
    tasks = cluster.get(task["type"])
    if not isinstance(tasks, list) or not 0 <= int(task["index"]) < len(tasks):
        raise ValueError(f"TF_CONFIG task {task['type']}:{task['index']} is not in its cluster {cluster}")
    return config


def select_strategy(name: str = "default") -> tf.distribute.Strategy:
    """The strategy for `--strategy NAME` (see the module docstring)."""
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if tf_config() is None:
        raise ValueError("--strategy multi-worker needs TF_CONFIG set on every worker (see docs/DATA.md)")
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.AUTO
    )
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def task(strategy: tf.distribute.Strategy) -> tuple[str | None, int]:
    """`(task_type, task_id)` of this process: `(None, 0)` without a cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return None, 0
    return resolver.task_type, int(resolver.task_id or 0)


def num_workers(strategy: tf.distribute.Strategy) -> int:
    """Processes that each run one input pipeline."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return 1
    spec = resolver.cluster_spec()
    return sum(spec.num_tasks(job) for job in ("chief", "worker") if job in spec.jobs) or 1


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    task_type, task_id = task(strategy)
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    has_chief = "chief" in strategy.cluster_resolver.cluster_spec().jobs
    return task_type == "worker" and task_id == 0 and not has_chief


def write_dir(output: str | os.PathLike, strategy: tf.distribute.Strategy) -> Path:
    """Where this process writes its run files: `output` for the chief, a new
    temporary folder for any other worker (remove it with `cleanup`)."""
    if is_chief(strategy):
        return Path(output)
    task_type, task_id = task(strategy)
    return Path(tempfile.mkdtemp(prefix=f"keras-lstm-{task_type}{task_id}-"))


def backup_dir(output: str | os.PathLike, strategy: tf.distribute.Strategy) -> Path:
    """`BackupAndRestore`'s folder: `output/backup` for the chief,
    `output/backup-<task><id>` for the others. Every worker keeps its own
    backup (their weights are identical at every step), so a restarted
    cluster resumes whether or not `output` is on a shared disk."""
    if is_chief(strategy):
        return Path(output) / "backup"
    task_type, task_id = task(strategy)
    return Path(output) / f"backup-{task_type}{task_id}"


def cleanup(path: str | os.PathLike, output: str | os.PathLike) -> None:
    """Remove a non-chief worker's temporary folder (never the run folder)."""
    if Path(path).resolve() != Path(output).resolve():
        shutil.rmtree(path, ignore_errors=True)


def prepare_for_fit(model, strategy: tf.distribute.Strategy) -> None:
    """Work around two failures of Keras 3.15's `fit` under a strategy.

    Before the first step `fit` peeks one batch and reduces it with
    `strategy.reduce`, which fails for a batch of nested PerReplica values
    such as the policy's `(x dict, y dict)`; the peek only serves to build
    what is not built yet. Our model is built at construction and compiled
    without compiled losses or metrics, so the optimizer is all that is left:
    build it here, under the strategy, and skip the peek.
    """
    if not tf.distribute.has_strategy() and strategy is tf.distribute.get_strategy():
        return
    if not all(layer.built for layer in model._flatten_layers()) or model._compile_loss or model._compile_metrics:
        return  # needs the data batch after all: leave Keras's path alone
    with strategy.scope():
        model._symbolic_build(data_batch=None)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        # Keras reduces each step's logs across workers with a mean over
        # axis 0, which scalar metrics do not have: give them one.
        for name in ("train_step", "test_step"):
            step = getattr(model, name)
            setattr(model, name, lambda data, step=step: {k: tf.reshape(v, [1]) for k, v in step(data).items()})


def local_model(model: keras.Model) -> keras.Model:
    """The model itself, or, when it was built under a strategy with more
    than one replica or worker, a copy outside any strategy with the same
    weights. Keras's `predict_on_batch` under such a strategy hands every
    replica the whole batch and concatenates their outputs (N times the
    rows, and a collective op every worker must join); evaluating a local
    copy on the chief alone avoids both."""
    strategy = getattr(model, "distribute_strategy", None)  # TensorFlow's trainer alone has one
    if strategy is None or (strategy.num_replicas_in_sync == 1 and num_workers(strategy) == 1):
        return model
    copy = model.__class__.from_config(model.get_config())
    copy.set_weights(model.get_weights())
    return copy
