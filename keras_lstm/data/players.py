"""Who played a game: one key per player, so that a split can keep every
game of a player on one side (`keras_lstm.data.split.split_by_player`).

A player's key is the first of these the replay holds:

- the netplay connect code (`CODE#123`), from the game's start block or,
  in replays from Slippi versions that put it there, its metadata;
- the netplay display name from the metadata (netplay before connect codes);
- the in-game name tag;
- else the game itself (`game:<file>:<port>`): a player nobody can tell
  apart, who is then only ever in that one game.

Two people sharing a display name or a tag ("Player") get one key: that
only ever keeps them on the same side, never one person on both.
"""

from __future__ import annotations

import os
from pathlib import Path

from keras_lstm.data.replays import ReplayError, read_game

ANONYMOUS_PREFIX = "game:"


def anonymous_key(path: str | os.PathLike, port: int) -> str:
    """The key of a player the replay does not name: unique to its game."""
    return f"{ANONYMOUS_PREFIX}{Path(path).name}:{port}"


def is_anonymous(key: str) -> bool:
    return key.startswith(ANONYMOUS_PREFIX)


def player_key(game, index: int, path: str | os.PathLike) -> str:
    """The key of `game.start.players[index]` (see the module docstring)."""
    player = game.start.players[index]
    port = int(player.port.value)
    netplay = getattr(player, "netplay", None)
    code = (getattr(netplay, "code", None) or "").strip()
    if code:
        return code
    names = (((game.metadata or {}).get("players") or {}).get(str(port)) or {}).get("names") or {}
    for field in ("code", "netplay"):
        value = names.get(field)
        if isinstance(value, str) and value.strip():
            return value.strip()
    tag = (getattr(player, "name_tag", None) or "").strip()
    if tag:
        return tag
    return anonymous_key(path, port)


def read_player_keys(path: str | os.PathLike) -> list[str]:
    """The keys of a replay's players, in port order, from its start block
    alone (no frames are parsed). A file that cannot be read gives `[]`: its
    game is put on a side by its name and skipped, with its reason, when read."""
    try:
        game = read_game(path, skip_frames=True)
    except ReplayError:
        return []
    return [player_key(game, i, path) for i in range(len(game.start.players))]


__all__ = ["anonymous_key", "is_anonymous", "player_key", "read_player_keys"]
