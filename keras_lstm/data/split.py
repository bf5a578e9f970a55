"""Which replay files are held out for validation: by game, by a hash of the
file's name and the seed, so a file's side never depends on reading it."""

from __future__ import annotations

import hashlib
import os


def split_by_game(paths: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Deterministic train/validation split of replay files.

    Windows of one game are near copies of each other, so the split is by
    file. Each file's side depends only on its name and the seed (a hash), so
    adding files to a folder does not move the others. At least one file goes
    to each side when there are two or more. A name is hashed as its bytes on
    disk (`os.fsencode`), so one that is not UTF-8 splits like any other.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    paths = sorted(set(paths))
    if val_fraction == 0 or len(paths) < 2:
        return paths, []
    ranked = sorted(paths, key=lambda path: split_score(path, seed))
    n_val = min(len(paths) - 1, max(1, round(val_fraction * len(paths))))
    val = sorted(ranked[:n_val])
    held_out = set(val)
    return [p for p in paths if p not in held_out], val


def split_score(path: str, seed: int) -> float:
    """Where a file falls in [0, 1) for the split: a hash of its name (the
    last path component, as bytes) and the seed."""
    name = path.rsplit("/", 1)[-1]
    digest = hashlib.sha256(f"{seed}:".encode() + os.fsencode(name)).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def held_out_alone(path: str, val_fraction: float, seed: int) -> bool:
    """The split of a file added to a folder already split: validation when
    its score is below `val_fraction`, whatever else is in the folder. (On a
    large folder `split_by_game` converges to this rule.)"""
    return split_score(path, seed) < val_fraction
