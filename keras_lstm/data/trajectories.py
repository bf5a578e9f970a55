"""A list of replay files -> trajectories, and a report of what was skipped.

A trajectory is one human player's view of one 1v1 game. Which players count:

- a 1v1 game (two players, not teams) gives one trajectory per HUMAN player;
  a CPU player is never imitated (it is still the opponent in the other
  player's trajectory), and counted as `cpu_players`;
- doubles, free-for-alls and any game with other than two players are skipped
  whole and counted as `not_1v1`;
- a file that cannot be read (`keras_lstm.data.replays.read_game` refuses it) is
  skipped, named with its reason, and counted as `unreadable`; nothing else
  in the folder is lost;
- with a `keras_lstm.data.filters.ReplayFilter`, a usable game or player it
  leaves out is counted under that filter (`filtered_<filter>`).

This module sits above `keras_lstm.data.replays` (reading files) and
`keras_lstm.data.features` (a parsed game -> arrays) because it is the only code
that needs both, so imports go one way: replays <- features <- trajectories.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Iterable

from keras_lstm.data.features import game_to_trajectories
from keras_lstm.data.filters import FILTERS, ReplayFilter
from keras_lstm.data.replays import ReplayError, iter_games


@dataclasses.dataclass
class LoadReport:
    """What came out of a folder: trajectories, and what was skipped and why."""

    trajectories: list = dataclasses.field(default_factory=list)
    replays_used: int = 0
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (path, reason)
    not_1v1: int = 0
    cpu_players: int = 0
    frames: int = 0
    # games (game filters) or trajectories (player filters) left out, by filter
    filtered: dict = dataclasses.field(default_factory=lambda: {name: 0 for name in FILTERS})

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
            **{f"filtered_{name}": n for name, n in self.filtered.items()},
        }


def load_trajectories(
    paths: Iterable[Path],
    max_replays: int | None = None,
    max_frames: int | None = None,
    on_skip: Callable[[str, str], None] | None = None,
    replay_filter: ReplayFilter | None = None,
) -> LoadReport:
    """Read replays into trajectories, skipping (and reporting) what cannot be used.

    `max_replays` counts replays actually used; `max_frames` stops once that
    many frames are loaded (the last trajectory is cut to fit);
    `replay_filter` leaves out (and counts) games and players.
    """
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
        if replay_filter is not None and trajs:
            left_out = replay_filter.game_filter(game, len(trajs[0]), n_cpu)
            if left_out is not None:
                report.filtered[left_out] += 1
                continue
        report.replays_used += 1
        report.cpu_players += n_cpu
        for traj in trajs:
            left_out = replay_filter.player_filter(traj) if replay_filter is not None else None
            if left_out is not None:
                report.filtered[left_out] += 1
                continue
            if max_frames is not None:
                room = max_frames - report.frames
                if room <= 0:
                    break
                traj = traj.head(room)
            report.trajectories.append(traj)
            report.frames += len(traj)
    return report
