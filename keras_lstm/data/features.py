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
from keras_lstm.data.melee_ids import EXTERNAL_OF_INTERNAL
from keras_lstm.data.players import player_key
from keras_lstm.data.replays import FIRST_PLAYABLE_FRAME, ReplayError, last_record_index

# Bumped whenever the features change, so a model never meets inputs it was not
# trained on. 2: percent, action frame and hitlag in whole units, as the
# championship's arena sends them (`keras_lstm.data.umi_frames`).
FEATURE_VERSION = 2

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
# Fields every source gives in whole units: the UMI frame (the arena's form of
# the game) carries percent floored and the action's frame count and hitlag
# as integers, so replays and libmelee are rounded the same way here.
WHOLE_FIELDS = {"percent": np.floor, "state_age": np.trunc, "hitlag": np.trunc}
_WHOLE_COLUMNS = [(i, WHOLE_FIELDS[name]) for i, (name, _) in enumerate(PLAYER_FIELDS) if name in WHOLE_FIELDS]
_SCALES = np.array([scale for _, scale in PLAYER_FIELDS])
NUMERIC_SIZE = STATE_NUMERIC_SIZE + controller.CONTROLLER_INPUT_SIZE
CATEGORICAL_SIZE = len(CATEGORICAL_COLUMNS)


_FIELD_NAMES = [name for name, _ in PLAYER_FIELDS]
RELATIVE_SIZE = 5




def relative_columns(numeric, ops):
    """`[..., NUMERIC_SIZE]` -> `[..., RELATIVE_SIZE]`: where the opponent is
    from the player (dx, dy and the distance, in the features' units of 100
    game units) and whether each faces the other (+1 facing, -1 turned away,
    0 at the same x). Both players' raw columns hold this, but only through
    differences and products the encoder's one ReLU layer can merely
    approximate (`--relative-features`). `ops` is `keras.ops`, `tf` or `np`: the same math for the
    layer and its two fast forms."""

    def column(offset, name):
        return numeric[..., offset + _FIELD_NAMES.index(name)]

    dx = column(len(_FIELD_NAMES), "x") - column(0, "x")
    dy = column(len(_FIELD_NAMES), "y") - column(0, "y")
    toward = ops.sign(dx)
    return ops.stack(
        [dx, dy, ops.sqrt(dx * dx + dy * dy), column(0, "facing") * toward, -column(len(_FIELD_NAMES), "facing") * toward], axis=-1
    )


@dataclasses.dataclass
class Trajectory:
    """One player's view of one game; every array has the same first dim T."""

    source: str
    port: int
    state_numeric: np.ndarray  # [T, STATE_NUMERIC_SIZE] float32
    state_categorical: np.ndarray  # [T, CATEGORICAL_SIZE] int32
    targets: dict  # head -> [T] int32 or [T, 8] float32
    player: str = ""  # who played it (`keras_lstm.data.players`); "" where unknown (a prepared dataset's)

    def __len__(self) -> int:
        return len(self.state_numeric)

    def head(self, n: int) -> "Trajectory":
        return dataclasses.replace(
            self,
            state_numeric=self.state_numeric[:n],
            state_categorical=self.state_categorical[:n],
            targets={k: v[:n] for k, v in self.targets.items()},
        )


def replay_column(arrow_or_none, index: np.ndarray, dtype=np.float32) -> np.ndarray:
    """A peppi column at `index` (NaN and inf as 0), or zeros when this Slippi version lacks it."""
    if arrow_or_none is None:
        return np.zeros(len(index), dtype=dtype)
    values = np.asarray(arrow_or_none.to_numpy(zero_copy_only=False), dtype=np.float64)[index]
    return np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0).astype(dtype)


def scale_player_fields(raw: dict) -> np.ndarray:
    """Raw post-frame fields of one player, `{name: [T]}` in game units (every
    name of `PLAYER_FIELDS`; facing +1 right / -1 left, airborne 0/1) ->
    `[T, len(PLAYER_FIELDS)]` float32 features. The one copy of the
    numeric feature math: replays, libmelee and UMI frames all come here."""
    values = np.stack([np.asarray(raw[name], np.float64) for name, _ in PLAYER_FIELDS], axis=1)
    values[~np.isfinite(values)] = 0.0
    for column, whole in _WHOLE_COLUMNS:
        values[:, column] = whole(values[:, column])
    values /= _SCALES
    return np.clip(values, -10.0, 10.0, out=values).astype(np.float32)


def action_ids(action_T) -> np.ndarray:
    """Action-state ids `[T]` -> the categorical column (ids past the table: its last, "other")."""
    return np.clip(np.asarray(action_T, np.int64), 0, ACTION_STATES - 1).astype(np.int32)


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
    numeric = scale_player_fields({name: replay_column(raw[name], index, np.float64) for name, _ in PLAYER_FIELDS})
    return numeric, action_ids(replay_column(post.state, index, np.int64))


def _controller_targets(pre, index: np.ndarray) -> dict[str, np.ndarray]:
    return controller.encode_targets(
        replay_column(pre.buttons_physical, index, np.int64),
        replay_column(pre.joystick.x, index),
        replay_column(pre.joystick.y, index),
        replay_column(pre.cstick.x, index),
        replay_column(pre.cstick.y, index),
        replay_column(pre.triggers, index),
    )


def _first_character(post, index: np.ndarray, player) -> int:
    """The character a player plays, as its external id: the one of the first
    playable frame (Zelda and Sheik transform mid-game; the game start names
    the one selected, which for Sheik may be Zelda), as libmelee and the
    championship's arena show it; the game start's where frames lack it."""
    internal = getattr(post, "character", None)
    external = None
    if internal is not None:
        external = EXTERNAL_OF_INTERNAL.get(int(replay_column(internal, index[:1], np.int64)[0]))
    if external is None:
        external = int(player.character)
    return min(external, CHARACTERS - 1)


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

    states, actions, targets, characters = [], [], [], []
    for port_data, player in zip(game.frames.ports, players):
        s, a = _player_state(port_data.leader.post, index)
        states.append(s)
        actions.append(a)
        targets.append(_controller_targets(port_data.leader.pre, index))
        characters.append(_first_character(port_data.leader.post, index, player))

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
                np.full(len(index), characters[me]),
                np.full(len(index), characters[them]),
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
                player=player_key(game, me, path),
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


def align(traj: Trajectory, delay: int = 0, hide_game_state: bool = False) -> PolicyArrays:
    """Inputs at row t: state at t-1-delay and own controller at t-1;
    target at row t: controller at t. Rows start at t = 1 + delay.

    `hide_game_state`: every game-state column zero and every id 0, so the
    inputs hold the player's own previous controller alone (the ablation
    that measures what a policy takes from the game)."""
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
    state_numeric, categorical = traj.state_numeric[:n], traj.state_categorical[:n]
    if hide_game_state:
        state_numeric, categorical = np.zeros_like(state_numeric), np.zeros_like(categorical)
    numeric = np.concatenate([state_numeric, prev_controller], axis=1)
    return PolicyArrays(
        numeric=numeric.astype(np.float32),
        categorical=categorical,
        targets={k: v[first:] for k, v in traj.targets.items()},
    )
