"""Training a policy on a folder of replays, under `model.fit`.

Everything a run makes goes to its run folder (`--output`; names and reading
it back: `keras_lstm.training.run_folder`). Starting again with the same `--output`
after a kill resumes from the newest complete backup (`keras_lstm.training.run_backup`),
at the batch where it was taken, in the same batch order: the run ends as if
never stopped. `backup/` is removed only after every other file is in place.
A run resumes only with the options and on the data it started with (`run.json`
records both); the same run given again once finished is left as it is, and
a folder holding any other run is refused (`run_folder.check_reuse`).

The data comes from a replay folder (`replays`, parsed at each run) or from a
dataset prepared once (`data_dir`, see `keras_lstm.data.tfds_dataset`; streamed by
`keras_lstm.data.pipeline`), as `keras_lstm.training.inputs.TrainInputs`. `strategy` picks the `tf.distribute` strategy
(`keras_lstm.training.distribute`): under `multi-worker` only the chief writes the run
folder; the other workers write to temporary folders, and each keeps its own
`backup-<task>` so a restarted cluster resumes.
"""

from __future__ import annotations

import contextlib
import math
import shutil
from pathlib import Path
from typing import Callable

import keras

from keras_lstm.config import TrainConfig
from keras_lstm.data import features
from keras_lstm.data.prepared import DamagedDatasetError
from keras_lstm.data.replays import find_replays, replays_or_default
from keras_lstm.data.trajectories import load_trajectories
from keras_lstm.data.windows import make_windows
from keras_lstm.evaluation import baselines, one_pass
from keras_lstm.evaluation.evaluate import evaluate_policy
from keras_lstm.evaluation.reliability_plot import check_plot_destination, write_reliability_plot
from keras_lstm.files import atomic
from keras_lstm.files.lock import FolderLock
from keras_lstm.model.backbone import build_backbone, check_positive
from keras_lstm.model.policy import build_policy, compile_for_fit, compile_optimizer
from keras_lstm.training import carried_training, distribute, run_backup
from keras_lstm.training.inputs import carried_inputs, carried_prepared_inputs, data_source, prepared_inputs, replay_inputs
from keras_lstm.training.run_folder import BEST_FILE, HISTORY_FILE, METRICS_FILE, MODEL_FILE, RUN_FILE, check_reuse, load_run


def config_from_options(
    replays: str | Path | None = None,
    data_dir: str | Path | None = None,
    *,
    temporal: bool = False,
    output: str | Path = "runs/latest",
    **options,
) -> TrainConfig:
    """The TrainConfig of `keras-lstm train`'s options (names as the config
    fields): `replays` defaults to $KERAS_LSTM_REPLAYS, then ~/Slippi, unless
    `data_dir` (a prepared dataset) is given; `temporal` trains on windows
    (the seed's recipe: `carried_state` off); backbone, strategy,
    matmul-dtype and mixed-precision names are case-insensitive, matmul-dtype
    float32 and mixed-precision off being the default (None). Raises
    ValueError for options that cannot go together; `TrainConfig.validate`
    checks the rest (`keras_lstm.config`)."""
    if data_dir is not None and replays is not None:
        raise ValueError("give --replays or --data-dir, not both (the prepared dataset remembers its replay folder)")
    if temporal:
        options["carried_state"] = False
    for name in ("backbone", "strategy", "matmul_dtype", "mixed_precision", "split_by"):
        if isinstance(options.get(name), str):
            options[name] = options[name].lower()
    if options.get("matmul_dtype") == "float32":
        options["matmul_dtype"] = None
    if options.get("mixed_precision") == "off":
        options["mixed_precision"] = None
    return TrainConfig.from_flat(
        replays=str(replays_or_default(replays)) if data_dir is None else "",
        data_dir=str(data_dir) if data_dir is not None else None,
        output=str(output),
        **options,
    )


def learning_rate(config: TrainConfig, steps_per_epoch: int):
    """Adam's learning rate: a number, or a schedule over the optimizer's step
    (which a resumed run restores, so the schedule goes on where it was)."""
    optim = config.optim
    if optim.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=max(1, steps_per_epoch * config.epochs))
    return config.learning_rate


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite and `TerminateOnNaN` stopped the run."""


def train(
    config: TrainConfig,
    on_skip: Callable[[str, str], None] | None = None,
    callbacks: list | None = None,
    verbose: int | str = "auto",
    on_warning: Callable[[str], None] | None = None,
) -> dict:
    """Train, save the run folder, and return the final summary (also written
    to `metrics.json`).

    Resumes from the run folder's newest complete backup when there is one.
    A folder that holds this very run finished (the same options and data)
    is left as it is and its summary returned; one that holds another run is
    refused (`run_folder.check_reuse`). `on_warning(message)` hears of
    damaged backups passed over, and of a finished run found so. Raises
    `TrainingDiverged` when the loss became NaN, FolderBusyError when another
    process trains in the same folder.
    """
    config.validate()
    check_backend(config)
    # First: a multi-worker strategy must exist before any other TF op runs.
    strategy = distribute.select_strategy(config.run.strategy)
    out = Path(config.run.output).expanduser()
    chief = distribute.is_chief(strategy)
    backup = distribute.backup_dir(out, strategy)
    with FolderLock(out, "run folder", lock_file=".lock" if chief else f".lock-{backup.name}"):
        return _train_locked(config, strategy, out, backup, on_skip, callbacks, verbose, on_warning)


def check_backend(config) -> None:
    """ValueError unless this Keras backend can run `config`: under another
    backend than TensorFlow (`KERAS_BACKEND=jax`) the policy trains on
    windows (`--temporal`) on one device; the state carried across segments
    and `tf.distribute` are TensorFlow's."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return
    if config.optim.carried_state:
        raise ValueError(f"the corpus recipe (the state carried across segments) trains under TensorFlow; under KERAS_BACKEND={backend} add --temporal")
    if config.run.strategy != "default":
        raise ValueError(f"--strategy {config.run.strategy} is TensorFlow's tf.distribute; under KERAS_BACKEND={backend} train with --strategy default")


def _train_locked(config, strategy, out, backup, on_skip, callbacks, verbose, on_warning) -> dict:
    keras.utils.set_random_seed(config.run.seed)
    source = data_source(config)  # what the run would train on, before anything is read or written
    finished = check_reuse(out, backup, config.flat(), source)
    if finished is not None:
        if on_warning is not None:
            on_warning(f"{out}: finished already, with these options and data; nothing trained or written (another --output, or delete it, to train again)")
        return finished
    chief = distribute.is_chief(strategy)
    write_dir = distribute.write_dir(out, strategy)  # the run folder, or a temporary one for a non-chief worker
    atomic.remove_stale_temporaries(write_dir)

    model, optim = config.model, config.optim
    if config.data.data_dir:
        data = carried_prepared_inputs(config) if optim.carried_state else prepared_inputs(config, strategy)
    else:
        data = (carried_inputs if optim.carried_state else replay_inputs)(config, on_skip)
    if sorted(data.listed_files or data.train_files + data.val_files) != sorted(source.files):  # changed while this run started
        raise ValueError(f"{source.option} {source.path}: changed while the run was starting; start it again")
    stats = data.stats
    steps = data.steps_per_epoch
    with strategy.scope():
        if optim.carried_state:
            backbone = build_backbone(model.backbone, model.embed_size, model.hidden_size, model.num_layers, model.dropout)
            policy = carried_training.CarriedStatePolicy(
                backbone, streams=optim.carried_streams, previous_input_heads=model.previous_input_heads,
                relative_features=model.relative_features, recurrent_impl=model.recurrent_impl,
                mixed_precision=model.mixed_precision,
            )
        else:
            policy = build_policy(**model.policy_args(), truncate_bptt=optim.truncate_bptt, loss_frames=config.loss_frames)
        compile_for_fit(policy, compile_optimizer(keras.optimizers.Adam(learning_rate(config, steps)), model.mixed_precision))
        progress = run_backup.load_latest(backup, policy, on_warning) or run_backup.Progress()
        metric_state = [v.numpy() for m in policy.metrics for v in m.variables] if progress.step else None
    distribute.prepare_for_fit(policy, strategy)

    # Windows validate through Keras' validation_data; segments in one pass
    # over each validation game, the state carried (the recorder runs it).
    val_ds = data.val.dataset(optim.batch_size * 4, shuffle=False) if len(data.val) and not optim.carried_state else None
    validate = (lambda model: one_pass.one_pass_loss(model, data.val)) if len(data.val) and optim.carried_state else None
    monitor = "val_loss" if len(data.val) else "loss"

    def saveable(trained):  # what model.keras and best.keras hold: always a plain policy
        return trained.to_policy() if optim.carried_state else trained

    recorder = run_backup.RunProgress(
        progress, steps, backup, config.run.backup_every_steps, write_dir / BEST_FILE, monitor, metric_state, saveable, validate
    )
    fit_callbacks = [
        keras.callbacks.TerminateOnNaN(),  # before the recorder: it never backs up a NaN model
        recorder,
        keras.callbacks.TensorBoard(str(write_dir / "logs")),
        *(callbacks or []),
    ]
    run_info = {
        "config": config.flat(),
        "feature_version": features.FEATURE_VERSION,
        "train_files": data.train_files,
        "val_files": data.val_files,
        "baseline_stats": stats.to_json(),
        "data_source": source.to_json(),
        "split": data.split_counts,
        "train_players": data.train_players,
    }
    atomic.write_json(write_dir / RUN_FILE, run_info)

    def fit(first_epoch: int, last_epoch: int, steps_per_epoch: int) -> None:
        with _dataset_errors_named(config):
            policy.fit(
                data.make_train_dataset(progress.global_step(steps)),
                validation_data=val_ds,
                initial_epoch=first_epoch,
                epochs=last_epoch,
                steps_per_epoch=steps_per_epoch,
                callbacks=fit_callbacks,
                verbose=verbose,
                shuffle=False,
            )

    # A run resumed mid-epoch first finishes that epoch (Keras cannot run a
    # shorter first epoch), then goes on with whole ones.
    try:
        if progress.step and progress.epoch < config.epochs:
            fit(progress.epoch, progress.epoch + 1, steps - progress.step)
        if progress.epoch < config.epochs and not policy.stop_training:
            fit(progress.epoch, config.epochs, steps)
    finally:
        data.release()  # a prepare may now remove the parts this run read
        data.forget_training_frames()
    losses = progress.history.get("loss", [])
    if losses and not math.isfinite(losses[-1]):  # TerminateOnNaN stopped it
        raise TrainingDiverged(
            f"{out}: training stopped in epoch {len(losses)}: the loss became NaN or infinite "
            f"(try a lower --learning-rate); {MODEL_FILE} was not written"
        )

    epochs_run = len(next(iter(progress.history.values()), []))
    history = {k: list(v) for k, v in progress.history.items()}
    atomic.write_json(write_dir / HISTORY_FILE, history)
    final = saveable(policy)
    with atomic.atomic_path(write_dir / MODEL_FILE) as tmp:
        final.save(tmp)  # every worker saves (saving may all-reduce); only the chief's is kept

    rows_per_step = optim.carried_streams if optim.carried_state else optim.batch_size
    trained_windows = steps * rows_per_step * epochs_run
    seconds = progress.train_seconds
    summary = {
        "config": config.flat(),
        "parameters": int(final.count_params()),
        "backbone_parameters": int(final.backbone.count_params()),
        "epochs_run": epochs_run,
        "train_seconds": seconds,
        "train_windows_per_s": trained_windows / seconds if seconds else None,
        "train_frames_per_s": trained_windows * config.data.window_size / seconds if seconds else None,
        "train_windows": data.train_windows,
        "val_windows": len(data.val),  # segments: the validation frames scored
        "split": data.split_counts,
        **{f"train_{k}": v for k, v in data.train_counts.items()},
        **data.counts,
        "skipped": data.skipped,
        "output": str(out),
        "model_path": str(out / MODEL_FILE),
        "logs_path": str(out / "logs"),
    }
    if len(data.val) and chief and optim.carried_state:
        summary.update(one_pass.evaluate_games(final, data.val, stats))
    elif len(data.val) and chief:
        summary.update(evaluate_policy(distribute.local_model(final), data.val, stats))
    else:
        summary["val_loss"] = None
    summary["strategy"] = {"name": config.run.strategy, "replicas": strategy.num_replicas_in_sync, "chief": chief}
    atomic.write_json(write_dir / METRICS_FILE, summary)
    # Last: only now is everything the backup stands for in place.
    shutil.rmtree(backup, ignore_errors=True)
    distribute.cleanup(write_dir, out)
    return summary


@contextlib.contextmanager
def _dataset_errors_named(config):
    """A prepared dataset's record file damaged or gone while training reads
    it (TensorFlow's error names no file): one line naming the dataset. The
    last backup stays, so the same command resumes once `prepare` repaired it."""
    import tensorflow as tf

    try:
        yield
    except (tf.errors.DataLossError, tf.errors.NotFoundError) as err:
        if not config.data.data_dir:
            raise
        first = (err.message or type(err).__name__).strip().splitlines()[0][:200]
        raise DamagedDatasetError(
            f"{config.data.data_dir}: a record file of the prepared dataset is damaged or gone ({first}); run prepare again "
            "to repair it, then the same train command to resume from the last backup"
        ) from None


def evaluate_folder(
    model_dir: str | Path,
    replays: str | Path | None,
    on_skip=None,
    batch_size: int = 256,
    stride: int | None = None,
    reliability_plot: str | Path | None = None,
    run_games: str = "validation",
    one_pass_evaluation: bool | None = None,
) -> dict:
    """Evaluate a trained run on every usable replay in a folder (`replays`
    None: on the run's own `run_games`, "validation" or "training", as
    `run.json` lists them). `one_pass_evaluation`: each game in one pass
    with the state carried (`keras_lstm.evaluation.one_pass`), or on windows
    predicting every `stride`-th frame (default: the stride the run trained
    with); by default as the run validated (segments: one pass). With
    `reliability_plot`, also draw each head's calibration to that PNG."""
    check_positive(**{"batch-size": batch_size})
    if stride is not None:
        check_positive(stride=stride)
    if reliability_plot is not None:
        check_plot_destination(reliability_plot)  # before an evaluation that may take minutes
    policy, run = load_run(model_dir, evaluation=True)
    cfg = run["config"]
    if one_pass_evaluation is None:
        one_pass_evaluation = bool(cfg.get("carried_state", False))
    if one_pass_evaluation and stride is not None:
        raise ValueError("--stride applies to windows; one pass scores every frame (give --windows to evaluate on windows)")
    if replays is None:
        key = {"validation": "val_files", "training": "train_files"}[run_games]
        paths, where = [Path(p) for p in run.get(key, [])], f"{model_dir}: the run's {run_games} games"
    else:
        paths, where = find_replays(replays), str(replays)
    report = load_trajectories(paths, on_skip=on_skip)
    if not report.trajectories:
        raise ValueError(f"{where}: no usable replay ({report.replays_skipped} skipped)")
    arrays = [features.align(t, cfg["delay"], hide_game_state=cfg.get("hide_game_state", False)) for t in report.trajectories]
    stats = baselines.BaselineStats.from_json(run["baseline_stats"])
    if one_pass_evaluation:
        split_by_player = (run.get("split") or {}).get("split_by") == "player"
        games = one_pass.Games.of(arrays, report.trajectories, set(run.get("train_players", [])) if split_by_player else None)
        summary = one_pass.evaluate_games(policy, games, stats)
    else:
        stride = cfg["stride"] if stride is None else stride
        summary = evaluate_policy(policy, make_windows(arrays, cfg["window_size"], stride), stats, batch_size)
    summary.update(report.counts())
    summary["skipped"] = report.skipped
    summary["parameters"] = int(policy.count_params())
    summary["model_path"] = str(model_dir)
    if reliability_plot is not None:
        write_reliability_plot(summary, reliability_plot)
    return summary
