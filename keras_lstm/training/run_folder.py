"""The run folder: what `keras-lstm train` writes, and reading it back.

    model.keras      the trained policy (last epoch)
    best.keras       the policy with the best validation loss so far
    run.json         the configuration, the file split and the baselines' statistics
    metrics.json     the final summary (validation loss, accuracies, baselines, speed)
    history.json     per-epoch losses and accuracies
    logs/            TensorBoard logs
    backup/          backups while a run is going (`keras_lstm.training.run_backup`; removed at the end)
    .lock            held by the process training in this folder (`keras_lstm.files.lock`)

Every file is written under a temporary name and renamed into place
(`keras_lstm.files.atomic`). Export, play and evaluation read a run through
`load_run`; the trainer checks a backup still fits with `check_resumable`.
"""

from __future__ import annotations

from pathlib import Path

import keras

from keras_lstm.data import features
from keras_lstm.files import atomic
from keras_lstm.model import policy as _policy  # noqa: F401 - registers the classes a .keras file names
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


def check_resumable(out: Path, backup: Path, config: dict) -> None:
    """Refuse to resume a backup made with other options: its weights would
    not fit, or would silently continue a different experiment."""
    if not run_backup.exists(backup) or not (out / RUN_FILE).exists():
        return
    before = atomic.read_json(out / RUN_FILE, "run.json").get("config", {})
    now = config
    changed = sorted(k for k in now if k not in RESUME_MAY_CHANGE and before.get(k) != now[k])
    if changed:
        raise ValueError(
            f"{out} holds an unfinished run with other options ({', '.join(changed)}); "
            f"use the same options to resume, another --output, or delete {backup}"
        )


def load_run(model_dir: str | Path):
    """`(policy, run_info)` from a run folder (or a `.keras` file inside one)."""
    path = Path(model_dir).expanduser()
    model_file = path if path.suffix == ".keras" else path / MODEL_FILE
    run_file = model_file.parent / RUN_FILE
    if not model_file.exists():
        raise FileNotFoundError(f"{model_file}: no trained model here (expected {MODEL_FILE} from keras-lstm train)")
    if not run_file.exists():
        raise FileNotFoundError(f"{run_file}: missing (written by keras-lstm train next to the model)")
    run_info = atomic.read_json(run_file, "run.json")
    if not isinstance(run_info, dict) or "config" not in run_info:
        raise ValueError(f"{run_file}: not a run.json written by keras-lstm train (no config)")
    if run_info.get("feature_version") != features.FEATURE_VERSION:
        raise ValueError(
            f"{run_file}: model trained on features version {run_info.get('feature_version')}, "
            f"this keras-lstm computes version {features.FEATURE_VERSION}; retrain it"
        )
    if not model_file.is_file():
        raise ValueError(f"{model_file}: not a file (expected {MODEL_FILE} from keras-lstm train)")
    try:
        policy = keras.models.load_model(model_file)
    except Exception as err:  # noqa: BLE001 - Keras raises many kinds for a damaged archive
        reason = " ".join(str(err).split())[:160] or type(err).__name__
        raise ValueError(f"{model_file}: damaged or not a Keras model ({type(err).__name__}: {reason}); train again or restore it") from None
    return policy, run_info
