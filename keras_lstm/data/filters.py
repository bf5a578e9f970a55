"""Which games and players to learn from, beyond "a readable 1v1".

Large collections hold games a user may not want to imitate: short ones
(handwarmers, quits), old Slippi versions, games against a CPU, other
characters or stages. `ReplayFilter` holds the choices (all off by
default); `load_trajectories` applies them while reading, and each game or
trajectory left out is counted under its filter (`FILTERS`), never silently.

- game filters (the whole game is left out): `min_frames` (playable
  frames), `min_slippi_version`, `humans_only` (no CPU player), `stages`;
- player filters (that player's trajectory is left out): `characters` (the
  imitated player's), `opponents` (the other player's).

Characters and stages are given by name (`keras_lstm.data.melee_ids`, case
and punctuation ignored) or by Melee's external id.
"""

from __future__ import annotations

import dataclasses
import re

from keras_lstm.data import features
from keras_lstm.data.melee_ids import CHARACTER_ALIASES, CHARACTER_ID_RANGE, EXTERNAL_CHARACTER_IDS, STAGE_IDS, VERSUS_STAGE_IDS

# Each filter's name in the counts (`filtered_<name>`), game filters first.
GAME_FILTERS = ("min_frames", "min_slippi_version", "humans_only", "stages")
PLAYER_FILTERS = ("characters", "opponents")
FILTERS = GAME_FILTERS + PLAYER_FILTERS

_CHARACTERS = {**EXTERNAL_CHARACTER_IDS, **CHARACTER_ALIASES}
_SELF_CHARACTER = features.CATEGORICAL_COLUMNS.index("self_character")
_OPPONENT_CHARACTER = features.CATEGORICAL_COLUMNS.index("opponent_character")


def _key(name: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", name.upper())


# Which ids each option takes, and how its message says so.
_KNOWN_IDS = {
    "stages": (VERSUS_STAGE_IDS, "stage", "versus stages have ids 2-32, 21 excepted"),
    "characters": (CHARACTER_ID_RANGE, "character", "characters have ids 0-32"),
    "opponents": (CHARACTER_ID_RANGE, "character", "characters have ids 0-32"),
}


def _ids(option: str, text: str | None, table: dict) -> frozenset[int] | None:
    """A comma-separated list of names or ids -> ids; ValueError names the
    option, for an unknown name and for an id no game can have alike."""
    if text is None or not text.strip():
        return None
    by_key = {_key(name): i for name, i in table.items()}
    known, what, ids_are = _KNOWN_IDS[option]
    out = set()
    for part in text.split(","):
        part = part.strip()
        if part.isdigit():
            if int(part) not in known:
                raise ValueError(f"--{option}: no {what} has id {part} ({ids_are}; or give a name)")
            out.add(int(part))
        elif _key(part) in by_key:
            out.add(by_key[_key(part)])
        else:
            known = ", ".join(sorted({name.lower() for name in table}))
            raise ValueError(f"--{option}: unknown name {part!r} (an id, or one of: {known})")
    return frozenset(out)


def parse_version(text: str | None) -> tuple[int, int, int] | None:
    if text is None or not text.strip():
        return None
    parts = text.strip().split(".")
    if not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"--min-slippi-version must look like 3.0.0, got {text!r}")
    return tuple(int(p) for p in parts) + (0,) * (3 - len(parts))


@dataclasses.dataclass(frozen=True)
class ReplayFilter:
    min_frames: int = 0
    min_slippi_version: tuple[int, int, int] | None = None
    humans_only: bool = False
    stages: frozenset[int] | None = None
    characters: frozenset[int] | None = None
    opponents: frozenset[int] | None = None

    @classmethod
    def from_options(cls, min_frames=0, min_slippi_version=None, humans_only=False, stages=None, characters=None, opponents=None):
        """From the command-line forms (comma-separated names, "3.0.0")."""
        if min_frames is None or min_frames < 0:
            raise ValueError(f"--min-frames must be >= 0, got {min_frames}")
        return cls(
            min_frames=min_frames,
            min_slippi_version=parse_version(min_slippi_version),
            humans_only=bool(humans_only),
            stages=_ids("stages", stages, STAGE_IDS),
            characters=_ids("characters", characters, _CHARACTERS),
            opponents=_ids("opponents", opponents, _CHARACTERS),
        )

    @property
    def active(self) -> bool:
        return self != ReplayFilter()

    def describe(self) -> str:
        """A stable text of the choices (for fingerprints and metadata)."""
        def show(v):
            return sorted(v) if isinstance(v, frozenset) else v

        return repr({f.name: show(getattr(self, f.name)) for f in dataclasses.fields(self)})

    def game_filter(self, game, frames: int, cpu_players: int) -> str | None:
        """The first game filter that leaves `game` out, or None."""
        if frames < self.min_frames:
            return "min_frames"
        if self.min_slippi_version is not None:
            version = tuple(getattr(getattr(game.start, "slippi", None), "version", None) or (0, 0, 0))
            if version < self.min_slippi_version:
                return "min_slippi_version"
        if self.humans_only and cpu_players:
            return "humans_only"
        if self.stages is not None and int(game.start.stage) not in self.stages:
            return "stages"
        return None

    def player_filter(self, trajectory) -> str | None:
        """The player filter that leaves `trajectory` out, or None."""
        if len(trajectory) == 0:
            return None
        if self.characters is not None and int(trajectory.state_categorical[0, _SELF_CHARACTER]) not in self.characters:
            return "characters"
        if self.opponents is not None and int(trajectory.state_categorical[0, _OPPONENT_CHARACTER]) not in self.opponents:
            return "opponents"
        return None


def left_out_text(filtered: dict) -> str | None:
    """What the filters left out, each by its option ("--characters: 3
    players, --min-frames: 2 games"), from counts by filter (`FILTERS`); None
    when they left nothing out."""
    parts = [
        f"--{name.replace('_', '-')}: {n:,} {'players' if name in PLAYER_FILTERS else 'games'}"
        for name, n in ((name, filtered.get(name, 0)) for name in FILTERS) if n
    ]
    return ", ".join(parts) or None
