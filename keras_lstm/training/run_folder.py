"""The run folder: what `keras-lstm train` writes, and reading it back.

    model.keras      the trained policy (last epoch)
    best.keras       the policy with the best validation loss so far
    run.json         the configuration, the file split, the data trained on (`data_source`) and the baselines' statistics
    metrics.json     the final summary (validation loss, accuracies, baselines, speed)
    history.json     per-epoch losses and accuracies
    logs/            TensorBoard logs
    backup/          backups while a run is going (`keras_lstm.training.run_backup`; removed at the end)
    .lock            held by the process training in this folder (`keras_lstm.files.lock`)

Every file is written under a temporary name and renamed into place
(`keras_lstm.files.atomic`). Export, play and evaluation read a run through
`load_run`, which checks run.json (`read_run_info`) and that it describes
model.keras. Before training into a folder, `check_reuse` says whether it
starts afresh, resumes a backup of the same run, or holds that run finished
already; it refuses a folder that holds another run (other options or data).
"""

from __future__ import annotations

import typing
from pathlib import Path

import keras

from keras_lstm.config import CONCERNS, TrainConfig
from keras_lstm.data import controller, features
from keras_lstm.data.replays import display_name
from keras_lstm.files import atomic
from keras_lstm.model import policy as _policy  # also registers the classes a .keras file names
from keras_lstm.training import run_backup

MODEL_FILE = "model.keras"
BEST_FILE = "best.keras"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.json"


# Options that may differ when a killed run is started again.
# Options that do not change the weights' path (validation only sees them).
# recurrent_impl: the same math by another implementation (tests/model/test_recurrent_forms.py).
RESUME_MAY_CHANGE = {"epochs", "output", "backup_every_steps", "val_max_frames", "recurrent_impl"}
# ... and when a finished run is given again: none that would change its
# files (more epochs, another validation) but where it is and how it ran.
FINISHED_MAY_CHANGE = {"output", "backup_every_steps", "recurrent_impl"}


def check_reuse(out: Path, backup: Path, config: dict, source) -> dict | None:
    """Before a run of `config` on `source` (`keras_lstm.training.inputs.DataSource`)
    trains into `out`: None to start afresh (nothing kept there) or to resume
    (a backup of the same options, but `RESUME_MAY_CHANGE`, and data); the
    summary (`metrics.json`) when `out` holds this very run finished (the
    same options, but `FINISHED_MAY_CHANGE`, and data): nothing to do.
    Anything else is refused (ValueError): resuming would continue another
    experiment, and training over a finished run would replace its files
    and mix two runs in `logs/`."""
    unfinished = run_backup.exists(backup)
    finished = not unfinished and any((out / name).exists() for name in (MODEL_FILE, BEST_FILE, METRICS_FILE))
    if not (unfinished or finished):
        return None
    if unfinished:
        what, keep = "an unfinished run", f"use the same options to resume, another --output, or delete {backup}"
    else:
        what, keep = "a finished run", f"use another --output, or delete {out} to train again"
    run_file = out / RUN_FILE
    if not run_file.is_file():
        raise ValueError(f"{out} holds {what} but no {RUN_FILE} to compare its options with; use another --output, or delete {out}")
    run_info = read_run_info(run_file)
    before = run_info["config"]
    may_change = RESUME_MAY_CHANGE if unfinished else FINISHED_MAY_CHANGE
    changed = sorted(k for k in config if k not in may_change and before.get(k) != config[k])
    if changed:
        raise ValueError(f"{out} holds {what} with other options ({', '.join(changed)}); {keep}")
    other_data = _data_difference(run_info, source)
    if other_data:
        keep = f"another --output, or delete {backup} to start again on this data" if unfinished else keep
        raise ValueError(f"{out} holds {what} on other data ({other_data}); {keep}")
    if unfinished:
        return None
    metrics_file = out / METRICS_FILE
    if not metrics_file.is_file():  # files of a run, neither to resume nor finished: not to be replaced unasked
        present = ", ".join(name for name in (MODEL_FILE, BEST_FILE) if (out / name).exists())
        raise ValueError(f"{out} holds a run's {present} but no {METRICS_FILE} (nor a backup to resume); {keep}")
    summary = atomic.read_json(metrics_file, METRICS_FILE)
    if not isinstance(summary, dict):
        raise ValueError(f"{metrics_file}: not a {METRICS_FILE} written by keras-lstm train; {keep}")
    return summary


def _data_difference(run_info: dict, source) -> str | None:
    """How `source` differs from the data `run_info` recorded, or None if it does not."""
    recorded = run_info.get("data_source")
    if recorded is None:  # a run.json from before runs recorded their data
        return None
    if (recorded["option"], recorded["path"], recorded["digest"]) == (source.option, source.path, source.digest):
        return None
    where = f"{source.option} {source.path}"
    before = set(run_info.get("train_files", [])) | set(run_info.get("val_files", []))
    now = set(source.files)
    added, removed = sorted(now - before), sorted(before - now)
    changes = [f"{len(names)} file(s) {verb}, e.g. {display_name(names[0])}" for names, verb in ((added, "added"), (removed, "removed")) if names]
    since = "prepared again since it started" if source.option == "--data-dir" else "changed since it started"
    return f"{where} {since}: " + ("; ".join(changes) if changes else "the same files, some of another size or modification time")


# --- run.json, checked on reading --------------------------------------------------

# What evaluate, play and export feed the model by, which model.keras cannot
# tell; every other option a run.json from an older keras-lstm may lack
# (`TrainConfig.from_flat` gives it its default).
REQUIRED_CONFIG = ("window_size", "delay")
# ... and what evaluation needs besides.
EVALUATION_CONFIG = ("stride",)
_FIELD_TYPES = {name: hint for concern in CONCERNS.values() for name, hint in typing.get_type_hints(concern).items()}


def _is_a(value, hint) -> bool:
    """Whether a JSON value has a config field's type (`int`, `float`, `str`, `bool`, `X | None`)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    fits = {type(None): value is None, bool: isinstance(value, bool), str: isinstance(value, str),
            int: number and isinstance(value, int), float: number}
    return any(fits.get(kind, False) for kind in typing.get_args(hint) or (hint,))


def _not_null(hint):
    """`X | None` -> `X`; any other hint as it is."""
    kinds = [kind for kind in typing.get_args(hint) if kind is not type(None)]
    return kinds[0] if len(kinds) == 1 and len(typing.get_args(hint)) == 2 else hint


def _type_name(hint) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "null"}
    return " or ".join(names.get(kind, str(kind)) for kind in typing.get_args(hint) or (hint,))


def run_config(run_file: Path, run_info: dict, required: tuple = REQUIRED_CONFIG) -> TrainConfig:
    """run.json's `config` as a TrainConfig, every option it holds of its
    field's type and passing its checks (`keras_lstm.config`), the
    `required` ones present; else ValueError naming run.json and the key."""
    cfg = run_info["config"]
    missing = [key for key in required if cfg.get(key) is None]  # null would take today's default, not the run's
    if missing:
        raise ValueError(f"{run_file}: config.{missing[0]} is missing (hand-edited?); restore the run's own {RUN_FILE} or train again")
    known = {key: value for key, value in cfg.items() if key in _FIELD_TYPES}  # options of older versions are ignored
    for key, value in known.items():
        hint = _not_null(_FIELD_TYPES[key]) if key in required else _FIELD_TYPES[key]
        if not _is_a(value, hint):
            raise ValueError(f"{run_file}: config.{key} must be {_type_name(hint)}, got {value!r}")
    try:
        config = TrainConfig.from_flat(**known)
        config.validate()
    except ValueError as err:
        raise ValueError(f"{run_file}: config: {err}") from None
    return config


def _check_baseline_stats(run_file: Path, stats) -> None:
    """What `keras_lstm.evaluation.baselines` reads: a probability per button,
    a distribution per class head, a change rate per head (per button)."""
    key = f"{run_file}: baseline_stats"
    if not isinstance(stats, dict) or set(stats) != {"button_prior", "class_prior", "change_rate"}:
        raise ValueError(f"{key} must hold button_prior, class_prior and change_rate; restore the run's own {RUN_FILE} or train again")

    def rates(name: str, value, size: int) -> None:
        if not (isinstance(value, list) and len(value) == size and all(_is_a(v, float) and 0 <= v <= 1 for v in value)):
            raise ValueError(f"{key}.{name} must be a list of {size} numbers in [0, 1]")

    rates("button_prior", stats["button_prior"], len(controller.BUTTONS))
    for part, heads in (("class_prior", controller.CLASS_HEADS), ("change_rate", controller.HEADS)):
        if not isinstance(stats[part], dict) or set(stats[part]) != set(heads):
            raise ValueError(f"{key}.{part} must have the heads {', '.join(heads)}")
    for head in controller.CLASS_HEADS:
        rates(f"class_prior.{head}", stats["class_prior"][head], controller.HEAD_CLASSES[head])
        rates(f"change_rate.{head}", [stats["change_rate"][head]], 1)
    rates("change_rate.buttons", stats["change_rate"]["buttons"], len(controller.BUTTONS))


def read_run_info(run_file: Path, evaluation: bool = False) -> dict:
    """run.json, checked where it is read (train, evaluate, export, play):
    ValueError naming it and the key that is missing or wrong. With
    `evaluation`, what evaluating needs is required too (the stride and
    the baselines' statistics)."""
    run_info = atomic.read_json(run_file, "run.json")
    if not isinstance(run_info, dict) or "config" not in run_info:
        raise ValueError(f"{run_file}: not a run.json written by keras-lstm train (no config)")
    if not isinstance(run_info["config"], dict):
        raise ValueError(f"{run_file}: config must be an object of options, got {run_info['config']!r}")
    if run_info.get("feature_version") != features.FEATURE_VERSION:
        raise ValueError(
            f"{run_file}: model trained on features version {run_info.get('feature_version')}, "
            f"this keras-lstm computes version {features.FEATURE_VERSION}; retrain it"
        )
    run_config(run_file, run_info, REQUIRED_CONFIG + (EVALUATION_CONFIG if evaluation else ()))
    for key, what in (("train_files", "file names"), ("val_files", "file names"), ("train_players", "player keys")):
        if key in run_info and not (isinstance(run_info[key], list) and all(isinstance(f, str) for f in run_info[key])):
            raise ValueError(f"{run_file}: {key} must be a list of {what}")
    if "baseline_stats" in run_info or evaluation:
        if "baseline_stats" not in run_info:
            raise ValueError(f"{run_file}: baseline_stats is missing (evaluation compares with the baselines); restore the run's own {RUN_FILE} or train again")
        _check_baseline_stats(run_file, run_info["baseline_stats"])
    source = run_info.get("data_source")
    if source is not None:
        kinds = {"option": str, "path": str, "files": int, "digest": str}
        if not isinstance(source, dict) or any(not isinstance(source.get(k), kind) for k, kind in kinds.items()):
            raise ValueError(f"{run_file}: data_source must hold {', '.join(kinds)}; restore the run's own {RUN_FILE}")
    return run_info


def _check_matches_model(run_file: Path, model_file: Path, config: TrainConfig, cfg: dict, policy) -> None:
    """run.json must describe the policy in model.keras: the sizes and kinds
    it was built with (those run.json gives), and for window training its
    truncation and the frames its loss was on (by default a share of
    window_size). (Carried-state training saves a plain policy without those two.)"""
    backbone = policy.backbone
    held = {
        "backbone": backbone.cell_type, "embed_size": backbone.embed_size, "hidden_size": backbone.hidden_size,
        "num_layers": backbone.num_layers, "dropout": backbone.dropout,
        "previous_input_heads": policy.previous_input is not None, "relative_features": policy.encoder.relative_features,
    }
    if cfg.get("carried_state") is False:
        held["truncate_bptt"] = policy.truncate_bptt
    for key, value in held.items():
        if key in cfg and cfg[key] != value:
            raise ValueError(
                f"{run_file} and {model_file}: disagree on {key}: {RUN_FILE} says {cfg[key]!r}, {model_file.name} holds {value!r}; "
                f"not this model's {RUN_FILE}: restore the run's own or train again"
            )
    if cfg.get("carried_state") is False and "loss_frames" in cfg and policy.loss_frames != config.loss_frames:
        key = "window_size" if cfg["loss_frames"] is None else "loss_frames"
        raise ValueError(
            f"{run_file} and {model_file}: disagree on {key}: {RUN_FILE}'s {key} {cfg[key]} puts the loss on the last "
            f"{config.loss_frames} frames of a window, {model_file.name} was trained with it on {policy.loss_frames}; "
            f"not this model's {RUN_FILE}: restore the run's own or train again"
        )


def load_run(model_dir: str | Path, evaluation: bool = False):
    """`(policy, run_info)` from a run folder (or a `.keras` file inside one),
    run.json checked (`read_run_info`; `evaluation`: what evaluating needs
    too) and against the model. A run that trained with the game state
    hidden is only evaluated: what plays, exports or serves it would show it
    the state (ValueError)."""
    path = Path(model_dir).expanduser()
    model_file = path if path.suffix == ".keras" else path / MODEL_FILE
    run_file = model_file.parent / RUN_FILE
    if not model_file.exists():
        raise FileNotFoundError(f"{model_file}: no trained model here (expected {MODEL_FILE} from keras-lstm train)")
    if not run_file.exists():
        raise FileNotFoundError(f"{run_file}: missing (written by keras-lstm train next to the model)")
    run_info = read_run_info(run_file, evaluation)
    if not evaluation and run_info["config"].get("hide_game_state"):
        raise ValueError(
            f"{run_file}: trained with --hide-game-state (the ablation that sees only its own previous inputs): "
            "evaluate it; it does not play, export or serve"
        )
    if not model_file.is_file():
        raise ValueError(f"{model_file}: not a file (expected {MODEL_FILE} from keras-lstm train)")
    try:
        policy = keras.models.load_model(model_file)
    except Exception as err:  # noqa: BLE001 - Keras raises many kinds for a damaged archive
        reason = " ".join(str(err).split())[:160] or type(err).__name__
        raise ValueError(f"{model_file}: damaged or not a Keras model ({type(err).__name__}: {reason}); train again or restore it") from None
    if not isinstance(policy, _policy.BehaviorCloningPolicy):
        raise ValueError(f"{model_file}: a Keras model, but not a policy written by keras-lstm train ({type(policy).__name__})")
    _check_matches_model(run_file, model_file, run_config(run_file, run_info), run_info["config"], policy)
    return policy, run_info
