"""Per-frame features and targets, and the no-leakage alignment between them.

Per frame t of a trajectory we keep
- `state_numeric[t]`: the post-frame state of self and opponent, scaled to
  roughly unit range with fixed constants (no statistics from data, so any
  replay, seen or unseen, is featurised the same way);
- `state_categorical[t]`: ids fed through learned embeddings (action state of
  self and opponent, both characters, the stage);
- `targets[t]`: the player's controller at t (pre-frame inputs).

The policy predicts the controller at t from states up to t-1-delay and its
own controller up to t-1 (`align`). A post-frame state at t already shows the
effect of the input at t, so feeding it would leak the answer.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from keras_lstm.data import controller
from keras_lstm.data.replays import FIRST_PLAYABLE_FRAME, ReplayError, last_record_index

# Bumped whenever the features change, so a model never meets inputs it was not
# trained on.
FEATURE_VERSION = 1

# Categorical columns and their vocabulary sizes (ids at or above are clipped
# to the last id, which then means "other").
ACTION_STATES = 512  # Melee has ~400 common action states; character-specific ones run higher
CHARACTERS = 64
STAGES = 64
CATEGORICAL_COLUMNS = ("self_action", "opponent_action", "self_character", "opponent_character", "stage")
CATEGORICAL_SIZES = (ACTION_STATES, ACTION_STATES, CHARACTERS, CHARACTERS, STAGES)

# Post-frame fields per player and the scale each is divided by.
PLAYER_FIELDS = (
    ("x", 100.0),
    ("y", 100.0),
    ("percent", 100.0),
    ("shield", 60.0),
    ("stocks", 4.0),
    ("facing", 1.0),
    ("airborne", 1.0),
    ("jumps", 2.0),
    ("state_age", 60.0),
    ("hitlag", 10.0),
    ("self_x_air", 3.0),
    ("self_y", 3.0),
    ("knockback_x", 3.0),
    ("knockback_y", 3.0),
    ("self_x_ground", 3.0),
)
STATE_NUMERIC_SIZE = 2 * len(PLAYER_FIELDS)
NUMERIC_SIZE = STATE_NUMERIC_SIZE + controller.CONTROLLER_INPUT_SIZE
CATEGORICAL_SIZE = len(CATEGORICAL_COLUMNS)


@dataclasses.dataclass
class Trajectory:
    """One player's view of one game; every array has the same first dim T."""

    source: str
    port: int
    state_numeric: np.ndarray  # [T, STATE_NUMERIC_SIZE] float32
    state_categorical: np.ndarray  # [T, CATEGORICAL_SIZE] int32
    targets: dict  # head -> [T] int32 or [T, 8] float32

    def __len__(self) -> int:
        return len(self.state_numeric)

    def head(self, n: int) -> "Trajectory":
        return Trajectory(
            self.source,
            self.port,
            self.state_numeric[:n],
            self.state_categorical[:n],
            {k: v[:n] for k, v in self.targets.items()},
        )


def _column(arrow_or_none, index: np.ndarray, dtype=np.float32) -> np.ndarray:
    """A peppi column at `index`, or zeros when this Slippi version lacks it."""
    if arrow_or_none is None:
        return np.zeros(len(index), dtype=dtype)
    values = np.asarray(arrow_or_none.to_numpy(zero_copy_only=False), dtype=np.float64)[index]
    return np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0).astype(dtype)


def _player_state(post, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`[T, len(PLAYER_FIELDS)]` scaled numeric state and `[T]` action-state ids."""
    vel = getattr(post, "velocities", None)
    raw = {
        "x": post.position.x,
        "y": post.position.y,
        "percent": post.percent,
        "shield": post.shield,
        "stocks": post.stocks,
        "facing": post.direction,
        "airborne": getattr(post, "airborne", None),
        "jumps": getattr(post, "jumps", None),
        "state_age": getattr(post, "state_age", None),
        "hitlag": getattr(post, "hitlag", None),
        "self_x_air": getattr(vel, "self_x_air", None),
        "self_y": getattr(vel, "self_y", None),
        "knockback_x": getattr(vel, "knockback_x", None),
        "knockback_y": getattr(vel, "knockback_y", None),
        "self_x_ground": getattr(vel, "self_x_ground", None),
    }
    cols = [_column(raw[name], index) / scale for name, scale in PLAYER_FIELDS]
    numeric = np.clip(np.stack(cols, axis=1), -10.0, 10.0)
    action = np.clip(_column(post.state, index, np.int64), 0, ACTION_STATES - 1).astype(np.int32)
    return numeric.astype(np.float32), action


def _controller_targets(pre, index: np.ndarray) -> dict[str, np.ndarray]:
    return controller.encode_targets(
        _column(pre.buttons_physical, index, np.int64),
        _column(pre.joystick.x, index),
        _column(pre.joystick.y, index),
        _column(pre.cstick.x, index),
        _column(pre.cstick.y, index),
        _column(pre.triggers, index),
    )


def game_to_trajectories(game, path) -> tuple[list[Trajectory], int]:
    """A parsed 1v1 game -> one Trajectory per human player, and the number of
    CPU players (not imitated). Raises ReplayError for games we do not use."""
    players = list(game.start.players)
    if len(players) != 2 or game.start.is_teams:
        kind = "teams" if game.start.is_teams else f"{len(players)} players"
        raise ReplayError(path, f"not a 1v1 game ({kind})")
    if game.frames is None or len(game.frames.ports) != 2:
        raise ReplayError(path, "replay has no frame data for both players")

    frame_ids = np.asarray(game.frames.id.to_numpy(zero_copy_only=False))
    index = last_record_index(frame_ids)
    index = index[frame_ids[index] >= FIRST_PLAYABLE_FRAME]
    if len(index) < 2:
        raise ReplayError(path, f"too short ({len(index)} playable frames)")

    states, actions, targets = [], [], []
    for port_data in game.frames.ports:
        s, a = _player_state(port_data.leader.post, index)
        states.append(s)
        actions.append(a)
        targets.append(_controller_targets(port_data.leader.pre, index))

    stage = int(game.start.stage)
    trajectories, n_cpu = [], 0
    for me, them in ((0, 1), (1, 0)):
        if players[me].type.name != "HUMAN":
            n_cpu += 1
            continue
        categorical = np.stack(
            [
                actions[me],
                actions[them],
                np.full(len(index), min(int(players[me].character), CHARACTERS - 1)),
                np.full(len(index), min(int(players[them].character), CHARACTERS - 1)),
                np.full(len(index), min(stage, STAGES - 1)),
            ],
            axis=1,
        ).astype(np.int32)
        trajectories.append(
            Trajectory(
                source=str(path),
                port=int(players[me].port.value),
                state_numeric=np.concatenate([states[me], states[them]], axis=1),
                state_categorical=categorical,
                targets=targets[me],
            )
        )
    return trajectories, n_cpu


@dataclasses.dataclass
class PolicyArrays:
    """Model inputs and targets for one trajectory, aligned so that row t's
    inputs never show anything the player could not have seen before acting."""

    numeric: np.ndarray  # [T', NUMERIC_SIZE] float32
    categorical: np.ndarray  # [T', CATEGORICAL_SIZE] int32
    targets: dict  # head -> [T'] or [T', 8]

    def __len__(self) -> int:
        return len(self.numeric)


def align(traj: Trajectory, delay: int = 0) -> PolicyArrays:
    """Inputs at row t: state at t-1-delay and own controller at t-1;
    target at row t: controller at t. Rows start at t = 1 + delay."""
    if delay < 0:
        raise ValueError(f"delay must be >= 0, got {delay}")
    first = 1 + delay
    n = len(traj) - first
    if n <= 0:
        return PolicyArrays(
            np.zeros((0, NUMERIC_SIZE), np.float32),
            np.zeros((0, CATEGORICAL_SIZE), np.int32),
            {k: v[:0] for k, v in traj.targets.items()},
        )
    prev_controller = controller.targets_as_input(traj.targets)[first - 1 : -1]
    numeric = np.concatenate([traj.state_numeric[: n], prev_controller], axis=1)
    return PolicyArrays(
        numeric=numeric.astype(np.float32),
        categorical=traj.state_categorical[:n],
        targets={k: v[first:] for k, v in traj.targets.items()},
    )
