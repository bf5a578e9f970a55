"""Which replay files are held out for validation.

- by game (`split_by_game`): by a hash of the file's name and the seed, so a
  file's side never depends on reading it;
- by player (`split_by_player`): whole players held out, so validation
  measures how the policy plays like people it has never seen.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

from keras_lstm.data.players import anonymous_key, is_anonymous


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


SPLITS = ("game", "player")


@dataclasses.dataclass
class PlayerSplit:
    """A split of replay files by player (`split_by_player`)."""

    train_files: list[str]
    val_files: list[str]
    val_players: list[str]  # the players held out: none of their games is trained on
    train_players: list[str]  # every player of a training game

    def counts(self) -> dict:
        """Players on each side (anonymous players, one per game, apart)."""
        named = lambda keys: [k for k in keys if not is_anonymous(k)]  # noqa: E731
        return {
            "split_by": "player",
            "train_players": len(named(self.train_players)),
            "val_players": len(named(self.val_players)),
            "train_anonymous_players": len(self.train_players) - len(named(self.train_players)),
            "val_anonymous_players": len(self.val_players) - len(named(self.val_players)),
        }


def split_by_player(players_of: dict[str, list[str]], val_fraction: float, seed: int) -> PlayerSplit:
    """Deterministic train/validation split of replay files that puts no
    validation player in any training game.

    `players_of` maps each file to its players' keys
    (`keras_lstm.data.players`; `[]` for a file that cannot be read, which
    counts as one anonymous player). Players are taken in the order of a
    hash of their key and the seed; each is held out, with every game it
    played, while the validation games stay within `val_fraction` of the
    files, until they reach it. So a player in more games than the
    validation share (one collector's own games) always trains, and
    validation holds players the training games never show. The other
    player of a validation game may have trained in other games: evaluation
    tells those frames apart (seen and unseen players).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    keys_of = {p: (list(keys) or [anonymous_key(p, 0)]) for p, keys in players_of.items()}
    paths = sorted(keys_of)
    target = min(len(paths) - 1, max(1, round(val_fraction * len(paths)))) if val_fraction and len(paths) > 1 else 0
    games_of: dict[str, set] = {}
    for path in paths:
        for key in keys_of[path]:
            games_of.setdefault(key, set()).add(path)
    val_games: set = set()
    val_players: list = []
    for key in sorted(games_of, key=lambda k: (split_score(k, seed), k)):
        if len(val_games) >= target:
            break
        added = games_of[key] - val_games
        if len(val_games) + len(added) <= target:
            val_players.append(key)
            val_games |= added
    train = [p for p in paths if p not in val_games]
    train_players = sorted({k for p in train for k in keys_of[p]})
    return PlayerSplit(train, sorted(val_games), sorted(val_players), train_players)
