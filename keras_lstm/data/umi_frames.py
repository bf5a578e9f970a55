"""The championship's game state, UMI `FRAME` records, <-> the policy's features
and controller: the third source of game state beside replays (peppi-py,
`keras_lstm.data.features`) and libmelee (`keras_lstm.serving.melee_state`).

A `FRAME` (`umi.frame.FRAME`, one packed record per game, from the bot's
seat: `players[0]` is the bot, `players[1]` its opponent) holds the fields
`features.PLAYER_FIELDS` are made of; this module renames them and hands them
to the same feature math (`features.scale_player_fields`, `features.action_ids`).
What differs from a replay, and what is done:

- percent is floored, the action's frame count and hitlag are whole numbers:
  the features round every source that way (`features.WHOLE_FIELDS`);
- characters and stages are internal ids; training uses the external ids of
  a replay's game start: mapped back here. A character or stage the tables
  do not know becomes the "other" id (`unknown_ids` says which rows); UMI
  names the six tournament stages only, the ones the arena plays;
- the character is the one of a game's first frame, as training keeps it
  (Zelda and Sheik transform mid-game): the bot holds it per game;
- Nana and items: unused, as in the replay path (the leader only);
- the controller: sticks and shoulder in [0, 1] (0.5 the neutral stick) and a
  button bitmask in `umi.frame.BUTTONS` order, the same order as
  `controller.BUTTONS`.

`game_frames` goes the other way, a parsed replay -> `FRAME` records, so that
`tests/data/test_umi_frames.py` can hold both paths equal on real games, and
`keras-lstm bench umi` can feed a bot real play.
"""

from __future__ import annotations

import numpy as np
from umi.frame import BUTTONS as UMI_BUTTONS
from umi.frame import CHARACTERS as UMI_CHARACTERS, CTRL_FIELDS, FRAME, STAGE_NAMES, pack_buttons, unpack_buttons

from keras_lstm.data import controller, features
from keras_lstm.data.melee_ids import EXTERNAL_CHARACTER_IDS, EXTERNAL_OF_INTERNAL, STAGE_IDS

assert UMI_BUTTONS == controller.BUTTONS  # a bitmask bit i is controller.BUTTONS[i]
CTRL_SIZE = len(CTRL_FIELDS)  # 13: main x, main y, C x, C y, shoulder, 8 buttons
UNKNOWN = -1


def _lookup(pairs: dict, size: int = 256) -> np.ndarray:
    table = np.full(size, UNKNOWN, np.int64)
    for internal, external in pairs.items():
        table[internal] = external
    return table


# internal id -> external id (UNKNOWN where the tables have no name for it)
EXTERNAL_CHARACTER = _lookup(EXTERNAL_OF_INTERNAL)
EXTERNAL_STAGE = _lookup({i: STAGE_IDS[n] for i, n in STAGE_NAMES.items()})
INTERNAL_STAGE = {external: internal for internal, external in enumerate(EXTERNAL_STAGE) if external != UNKNOWN}
# UMI names the six tournament stages only (the arena plays no other): a
# replay on another stage becomes this id, which the features read as "other".
NO_STAGE = 255


def _fighter_raw(fighter: np.ndarray) -> dict:
    """`FIGHTER [N]` -> `{PLAYER_FIELDS name: [N]}` in game units."""
    return {
        "x": fighter["x"],
        "y": fighter["y"],
        "percent": fighter["percent"],
        "shield": fighter["shield_strength"],
        "stocks": fighter["stocks"],
        "facing": np.where(fighter["facing"] == 1, 1.0, -1.0),
        "airborne": 1.0 - (fighter["on_ground"] != 0),
        "jumps": fighter["jumps_left"],
        "state_age": fighter["action_frame"],
        "hitlag": fighter["hitlag_left"],
        "self_x_air": fighter["speed_air_x_self"],
        "self_y": fighter["speed_y_self"],
        "knockback_x": fighter["speed_x_attack"],
        "knockback_y": fighter["speed_y_attack"],
        "self_x_ground": fighter["speed_ground_x_self"],
    }


def external_characters(frames: np.ndarray) -> np.ndarray:
    """`FRAME [N]` -> `[N, 2]` external character ids of the bot and its
    opponent (UNKNOWN for an id the tables do not know)."""
    return EXTERNAL_CHARACTER[frames["players"]["character"].astype(np.int64)]


def state_features(frames: np.ndarray, characters_Nx2: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`FRAME [N]` -> `(state_numeric [N, STATE_NUMERIC_SIZE] float32,
    state_categorical [N, CATEGORICAL_SIZE] int32)`, the rows
    `features.game_to_trajectories` gives for the same frames.
    `characters_Nx2`: the external ids to use (the game's first frame's);
    default: this frame's. Unknown ids become the tables' "other" id."""
    me, them = frames["players"][:, 0], frames["players"][:, 1]
    both = features.scale_player_fields(_fighter_raw(frames["players"].T.reshape(-1)))  # [2N]: the bots, then the opponents
    numeric = np.concatenate([both[: len(frames)], both[len(frames) :]], axis=1)
    chars = external_characters(frames) if characters_Nx2 is None else np.asarray(characters_Nx2, np.int64)
    chars = np.where(chars == UNKNOWN, features.CHARACTERS - 1, np.minimum(chars, features.CHARACTERS - 1))
    stage = EXTERNAL_STAGE[frames["stage"].astype(np.int64)]
    stage = np.where(stage == UNKNOWN, features.STAGES - 1, np.minimum(stage, features.STAGES - 1))
    categorical = np.stack(
        [features.action_ids(me["action"]), features.action_ids(them["action"]), chars[:, 0], chars[:, 1], stage], axis=1
    ).astype(np.int32)
    return numeric, categorical


def unknown_rows(frames: np.ndarray) -> np.ndarray:
    """`[N]` bool: the rows holding an id the features cannot name (see `unknown_ids`)."""
    return (
        (external_characters(frames) == UNKNOWN).any(axis=1)
        | (EXTERNAL_STAGE[frames["stage"].astype(np.int64)] == UNKNOWN)
        | (frames["players"]["action"] >= features.ACTION_STATES).any(axis=1)
    )


def unknown_ids(frames: np.ndarray) -> list[str]:
    """What in these frames the features cannot name, one phrase each
    (empty: everything known): unknown characters, stage, action states."""
    problems = []
    chars = frames["players"]["character"]
    for seat, who in ((0, "bot"), (1, "opponent")):
        bad = np.unique(chars[:, seat][external_characters(frames)[:, seat] == UNKNOWN])
        if bad.size:
            problems.append(f"unknown {who} character id {', '.join(map(str, bad.tolist()))}")
    bad = np.unique(frames["stage"][EXTERNAL_STAGE[frames["stage"].astype(np.int64)] == UNKNOWN])
    if bad.size:
        problems.append(f"unknown stage id {', '.join(map(str, bad.tolist()))}")
    actions = frames["players"]["action"]
    bad = np.unique(actions[actions >= features.ACTION_STATES])
    if bad.size:
        problems.append(f"action state id {', '.join(map(str, bad.tolist()))} past the table (read as 'other')")
    return problems


def finite_rows(frames: np.ndarray) -> np.ndarray:
    """`[N]` bool: the rows whose every float field is finite."""
    ok = np.ones(len(frames), bool)
    for name in ("randall_x", "randall_y", "fod_left", "fod_right"):
        ok &= np.isfinite(frames[name])
    fighters = frames["players"]
    for name, (dtype, _) in fighters.dtype.fields.items():
        if dtype.kind == "f":
            ok &= np.isfinite(fighters[name]).all(axis=1)
    for name in ("main_x", "main_y", "c_x", "c_y", "shoulder"):
        ok &= np.isfinite(fighters["controller"][name]).all(axis=1)
    return ok


# --- the controller: UMI's 13 floats <-> the policy's pad -------------------------


def controller_rows(ctrl: np.ndarray) -> np.ndarray:
    """`CONTROLLER [N]` records (a frame's `players[k]["controller"]`) -> the
    `f32[N, 13]` rows a bot sends."""
    rows = np.empty((len(ctrl), CTRL_SIZE), np.float32)
    for i, name in enumerate(("main_x", "main_y", "c_x", "c_y", "shoulder")):
        rows[:, i] = ctrl[name]
    rows[:, 5:] = unpack_buttons(ctrl["buttons"])
    return rows


def pad_to_rows(pad: dict) -> np.ndarray:
    """A decoded pad (`decode_controller`'s `buttons [N, 8]` 0/1, sticks in
    [-1, 1], shoulder in [0, 1]) -> the `f32[N, 13]` rows a bot sends (sticks
    in [0, 1], 0.5 neutral; a button pressed is 1.0)."""
    buttons = np.asarray(pad["buttons"], np.float32)
    rows = np.empty((len(buttons), CTRL_SIZE), np.float32)
    for i, head in enumerate(controller.STICK_HEADS):
        rows[:, i] = np.asarray(pad[head], np.float32) * np.float32(0.5) + np.float32(0.5)
    rows[:, 4] = pad["shoulder"]
    rows[:, 5:] = buttons
    return rows


def rows_to_input(rows: np.ndarray) -> np.ndarray:
    """`f32[N, 13]` controller rows -> the previous-input columns of the
    features (`controller.targets_as_input(rows_to_targets(rows))`, in fewer
    numpy calls: the bot's per-frame form)."""
    rows = np.asarray(rows, np.float32)
    out = np.empty((len(rows), controller.CONTROLLER_INPUT_SIZE), np.float32)
    n = len(controller.BUTTONS)
    out[:, :n] = rows[:, 5:] > 0.5
    out[:, n : n + 4] = controller.class_to_stick(controller.stick_to_class(rows[:, :4] * np.float32(2.0) - np.float32(1.0)))
    out[:, n + 4] = controller.class_to_shoulder(controller.shoulder_to_class(rows[:, 4]))
    return out


def rows_to_targets(rows: np.ndarray) -> dict:
    """`f32[N, 13]` controller rows -> targets (`controller.encode_targets`'
    layout): what a bot sent, as the previous input its features hold."""
    rows = np.asarray(rows, np.float32)
    sticks = rows[:, :4] * np.float32(2.0) - np.float32(1.0)
    classes = controller.stick_to_class(sticks)
    return {
        "buttons": (rows[:, 5:] > 0.5).astype(np.float32),
        **{head: classes[:, i] for i, head in enumerate(controller.STICK_HEADS)},
        "shoulder": controller.shoulder_to_class(rows[:, 4]),
    }


# --- a replay -> FRAME records (tests, benchmarks) ---------------------------------


def _col(arrow_or_none, index: np.ndarray, dtype=np.float64) -> np.ndarray:
    return features.replay_column(arrow_or_none, index, dtype)  # the replay path's own reading, in float64 by default


def _fill_fighter(out: np.ndarray, leader, index: np.ndarray) -> None:
    post, pre = leader.post, leader.pre
    vel = getattr(post, "velocities", None)
    out["exists"] = 1
    out["character"] = _col(post.character, index, np.int64)
    out["stocks"] = _col(post.stocks, index, np.int64)
    out["facing"] = _col(post.direction, index) > 0
    out["on_ground"] = _col(getattr(post, "airborne", None), index) == 0
    out["jumps_left"] = _col(getattr(post, "jumps", None), index, np.int64)
    out["action"] = _col(post.state, index, np.int64)
    out["action_frame"] = np.clip(np.trunc(_col(getattr(post, "state_age", None), index)), -(2**15), 2**15 - 1)
    out["percent"] = np.clip(np.floor(_col(post.percent, index)), 0, 2**16 - 1)
    out["hitlag_left"] = np.clip(np.trunc(_col(getattr(post, "hitlag", None), index)), 0, 2**16 - 1)
    out["x"], out["y"] = _col(post.position.x, index), _col(post.position.y, index)
    out["shield_strength"] = _col(post.shield, index)
    for ours, theirs in (("speed_air_x_self", "self_x_air"), ("speed_ground_x_self", "self_x_ground"),
                         ("speed_y_self", "self_y"), ("speed_x_attack", "knockback_x"), ("speed_y_attack", "knockback_y")):
        out[ours] = _col(getattr(vel, theirs, None), index)
    ctrl = out["controller"]
    for name, axis in (("main_x", pre.joystick.x), ("main_y", pre.joystick.y), ("c_x", pre.cstick.x), ("c_y", pre.cstick.y)):
        ctrl[name] = _col(axis, index) * 0.5 + 0.5
    ctrl["shoulder"] = _col(pre.triggers, index)
    ctrl["buttons"] = pack_buttons(controller.buttons_from_bits(_col(pre.buttons_physical, index, np.int64)))


def game_frames(game, seat: int) -> np.ndarray:
    """A parsed 1v1 replay (`peppi_py.read_slippi`) -> `FRAME [T]` from the
    seat of `game.frames.ports[seat]` (`players[0]`), one record per frame id
    (a rollback's last), as the arena would send them. Nana and items are left
    empty (the features use neither)."""
    from keras_lstm.data.replays import last_record_index

    frame_ids = np.asarray(game.frames.id.to_numpy(zero_copy_only=False))
    index = last_record_index(frame_ids)
    out = np.zeros(len(index), FRAME)
    out["frame"] = frame_ids[index]
    out["stage"] = INTERNAL_STAGE.get(int(game.start.stage), NO_STAGE)
    ports = game.frames.ports
    for slot, port in ((0, ports[seat]), (1, ports[1 - seat])):
        fighter = np.zeros(len(index), out.dtype["players"].base)
        _fill_fighter(fighter, port.leader, index)
        out["players"][:, slot] = fighter
    return out


def roster_names(external_ids) -> tuple[str, ...]:
    """External character ids -> the names UMI plays them under (Ice Climbers:
    POPO), sorted; ids UMI has no name for are left out."""
    names = {n for n, e in EXTERNAL_CHARACTER_IDS.items() if e in set(external_ids) and n in UMI_CHARACTERS}
    return tuple(sorted(names))
