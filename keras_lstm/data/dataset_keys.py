"""The names a prepared dataset is known by: its TFDS name, its splits, its
variants (one per `--val-fraction`/`--seed`), and the counts each split
records. Shared by the builder (`tfds_dataset`), the part builder (`parts`)
and the manifest (`prepared`), which import each other in that order only.
"""

from __future__ import annotations

from keras_lstm.data.filters import FILTERS
from keras_lstm.config import check_seed  # prepare checks its seed as train does

DATASET_NAME = "slippi_replays"
TRAIN, VALIDATION = "train", "validation"
DEFAULT_VAL_FRACTION = 0.15
DEFAULT_SEED = 0

COUNT_KEYS = (
    "replays_used",
    "replays_skipped",
    "replays_unreadable",
    "replays_not_1v1",
    "cpu_players_not_imitated",
    "trajectories",
    "frames_loaded",
    *(f"filtered_{name}" for name in FILTERS),
)


def config_name(val_fraction: float, seed: int) -> str:
    """`default` for the training defaults, else e.g. `val0.2-seed3`."""
    if val_fraction == DEFAULT_VAL_FRACTION and seed == DEFAULT_SEED:
        return "default"
    return f"val{val_fraction:g}-seed{seed}"


def check_split_options(val_fraction: float, seed: int) -> None:
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val-fraction must be in [0, 1), got {val_fraction}")
    check_seed(seed)
