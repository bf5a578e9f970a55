"""Reading Slippi replays with peppi-py, and turning a folder into trajectories.

A trajectory is one human player's view of one 1v1 game. Which players count:

- a 1v1 game (two players, not teams) gives one trajectory per HUMAN player;
  a CPU player is never imitated (it is still the opponent in the other
  player's trajectory), and counted as `cpu_players`;
- doubles, free-for-alls and any game with other than two players are skipped
  whole and counted as `not_1v1`;
- a file that cannot be read is skipped, named with its reason, and counted
  as `unreadable`; nothing else in the folder is lost.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from keras_lstm.stderr import quiet_stderr

# Melee's first frame in which players may act ("GO!" appears at frame 0, but
# inputs are read from -39 on); earlier countdown frames carry no decisions.
FIRST_PLAYABLE_FRAME = -39

DEFAULT_REPLAYS_DIR = "~/Slippi"
REPLAYS_ENV_VAR = "KERAS_LSTM_REPLAYS"


class ReplayError(Exception):
    """A replay that cannot be used, with a one-line reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def default_replays_dir() -> Path:
    """`$KERAS_LSTM_REPLAYS`, else `~/Slippi` (where the Slippi launcher saves)."""
    return Path(os.environ.get(REPLAYS_ENV_VAR) or DEFAULT_REPLAYS_DIR).expanduser()


def find_replays(folder: str | os.PathLike) -> list[Path]:
    """All `.slp` files below `folder`, sorted, so runs are deterministic.

    Raises ReplayError for a missing folder or one without any `.slp` file.
    """
    root = Path(folder).expanduser()
    if not root.exists():
        raise ReplayError(root, "no such folder")
    if root.is_file():
        if root.suffix.lower() != ".slp":
            raise ReplayError(root, "not a .slp replay")
        return [root]
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() == ".slp" and p.is_file())
    if not paths:
        raise ReplayError(root, "folder holds no .slp replays")
    return paths


def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_game(path: str | os.PathLike):
    """Parse one replay with peppi-py; any parser failure becomes ReplayError.

    peppi-py reports some corrupt files with a Rust panic, which surfaces as
    `pyo3_runtime.PanicException`, a BaseException: catch it too, but never
    swallow KeyboardInterrupt or SystemExit.
    """
    import peppi_py

    try:
        if os.path.getsize(path) == 0:
            raise ReplayError(path, "empty file")
        with quiet_stderr():
            return peppi_py.read_slippi(str(path))
    except ReplayError:
        raise
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except BaseException as err:  # noqa: BLE001 - see docstring
        kind = type(err).__name__
        raise ReplayError(path, f"unreadable replay ({kind}: {_one_line(err)})") from None


def last_record_index(frame_ids: np.ndarray) -> np.ndarray:
    """Indices that keep the last record of each frame id, ordered by frame id.

    Netplay replays repeat a frame id after every rollback; the last record is
    the one the game actually kept.
    """
    frame_ids = np.asarray(frame_ids)
    reversed_ids = frame_ids[::-1]
    _, first_in_reversed = np.unique(reversed_ids, return_index=True)
    # np.unique sorts by id, so the result is in frame order even if a
    # record of an earlier frame was written after a later one.
    return len(frame_ids) - 1 - first_in_reversed


@dataclasses.dataclass
class LoadReport:
    """What came out of a folder: trajectories, and what was skipped and why."""

    trajectories: list = dataclasses.field(default_factory=list)
    replays_used: int = 0
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (path, reason)
    not_1v1: int = 0
    cpu_players: int = 0
    frames: int = 0

    @property
    def replays_skipped(self) -> int:
        return len(self.skipped)

    def counts(self) -> dict:
        return {
            "replays_used": self.replays_used,
            "replays_skipped": self.replays_skipped,
            "replays_unreadable": self.replays_skipped - self.not_1v1,
            "replays_not_1v1": self.not_1v1,
            "cpu_players_not_imitated": self.cpu_players,
            "trajectories": len(self.trajectories),
            "frames_loaded": self.frames,
        }


def iter_games(paths: Iterable[Path]) -> Iterator[tuple[Path, object | None, ReplayError | None]]:
    for path in paths:
        try:
            yield path, read_game(path), None
        except ReplayError as err:
            yield path, None, err


def load_trajectories(
    paths: Iterable[Path],
    max_replays: int | None = None,
    max_frames: int | None = None,
    on_skip: Callable[[str, str], None] | None = None,
) -> LoadReport:
    """Read replays into trajectories, skipping (and reporting) what cannot be used.

    `max_replays` counts replays actually used; `max_frames` stops once that
    many frames are loaded (the last trajectory is cut to fit).
    """
    from keras_lstm.features import game_to_trajectories

    report = LoadReport()
    for path, game, err in iter_games(paths):
        if max_replays is not None and report.replays_used >= max_replays:
            break
        if max_frames is not None and report.frames >= max_frames:
            break
        if err is None:
            try:
                trajs, n_cpu = game_to_trajectories(game, path)
            except ReplayError as e:
                err = e
        if err is not None:
            report.skipped.append((str(path), err.reason))
            if err.reason.startswith("not a 1v1 game"):
                report.not_1v1 += 1
            if on_skip:
                on_skip(str(path), err.reason)
            continue
        report.replays_used += 1
        report.cpu_players += n_cpu
        for traj in trajs:
            if max_frames is not None:
                room = max_frames - report.frames
                if room <= 0:
                    break
                traj = traj.head(room)
            report.trajectories.append(traj)
            report.frames += len(traj)
    return report
