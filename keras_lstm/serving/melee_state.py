"""libmelee `GameState` -> the same per-frame features as `keras_lstm.data.features`.

Training reads replays with peppi-py; play reads the game through libmelee
(live from Dolphin, or a replay through `melee.Console(is_dolphin=False)`).
`FrameFeaturizer` turns each libmelee frame into the row `features.py` would
give for it, so the policy sees at play time what it saw in training.
`tests/serving/test_play.py` holds the two equal on a real replay.

Where libmelee's `GameState` loses information, and what we do:
- `action_frame` (our `state_age`) and `hitlag_left` are truncated to whole
  frames by libmelee, as the features are anyway (`features.WHOLE_FIELDS`),
  and `action_frame` is shifted by one for the actions libmelee re-indexes
  from 1. We undo the shift with libmelee's own table.
- Characters are internal ids in libmelee and external (character-select)
  ids in peppi's game start, which training uses: we map back, and keep the
  character seen on the first frame (Zelda and Sheik transform mid-game;
  training keeps the selected one).
- libmelee names only the six legal stages; any other stage is
  `Stage.NO_STAGE`. Pass `stage_id` (the external id, e.g. from the replay's
  game start) to override; otherwise such a stage becomes the "other" id.
- libmelee skips rollback frames by keeping the first record of each frame,
  peppi (and training) keeps the last. A live game has no choice anyway.
"""

from __future__ import annotations

import csv
import functools
import os
from collections import defaultdict

import numpy as np

from keras_lstm.data import controller, features
from keras_lstm.data.melee_ids import EXTERNAL_CHARACTER_IDS

# libmelee's button enum names for our buttons, in `controller.BUTTONS` order.
_BUTTON_NAMES = {
    "A": "BUTTON_A",
    "B": "BUTTON_B",
    "X": "BUTTON_X",
    "Y": "BUTTON_Y",
    "Z": "BUTTON_Z",
    "L": "BUTTON_L",
    "R": "BUTTON_R",
    "D_UP": "BUTTON_D_UP",
}




@functools.lru_cache(maxsize=1)
def _tables():
    import melee

    buttons = [getattr(melee.enums.Button, _BUTTON_NAMES[b]) for b in controller.BUTTONS]
    internal_to_external = {c.value: EXTERNAL_CHARACTER_IDS[c.name] for c in melee.enums.Character if c.name in EXTERNAL_CHARACTER_IDS}
    stage_to_external = {}
    for external in range(0x40):
        stage = melee.enums.to_internal_stage(external)
        if stage is not melee.enums.Stage.NO_STAGE:
            stage_to_external.setdefault(stage, external)
    zero_indexed = defaultdict(set)
    with open(os.path.join(os.path.dirname(melee.__file__), "actiondata.csv")) as f:
        for row in csv.DictReader(f):
            if row["zeroindex"] == "True":
                zero_indexed[int(row["character"])].add(int(row["action"]))
    return buttons, internal_to_external, stage_to_external, zero_indexed


def _enum_value(x) -> int:
    return int(getattr(x, "value", x))


def player_numeric(player) -> np.ndarray:
    """One libmelee `PlayerState` -> `[len(PLAYER_FIELDS)]` scaled like `features._player_state`."""
    _, _, _, zero_indexed = _tables()
    action = _enum_value(player.action)
    state_age = float(player.action_frame)
    if action in zero_indexed.get(_enum_value(player.character), ()):
        state_age -= 1.0  # libmelee counts these actions from 1; the replay from 0
    raw = {
        "x": player.position.x,
        "y": player.position.y,
        "percent": player.percent,
        "shield": player.shield_strength,
        "stocks": player.stock,
        "facing": 1.0 if player.facing else -1.0,
        "airborne": 0.0 if player.on_ground else 1.0,
        "jumps": player.jumps_left,
        "state_age": state_age,
        "hitlag": player.hitlag_left,
        "self_x_air": player.speed_air_x_self,
        "self_y": player.speed_y_self,
        "knockback_x": player.speed_x_attack,
        "knockback_y": player.speed_y_attack,
        "self_x_ground": player.speed_ground_x_self,
    }
    return features.scale_player_fields({name: [float(value)] for name, value in raw.items()})[0]


def controller_targets(player) -> dict:
    """The player's pad this frame as targets (`controller.encode_targets` layout, `[1]` each)."""
    buttons, _, _, _ = _tables()
    pad = player.controller_state
    bits = np.array([[1.0 if pad.button[b] else 0.0 for b in buttons]], np.float32)
    # libmelee maps each stick axis from [-1, 1] to [0, 1] as v / 2 + 0.5: undo it in float32.
    sticks = np.array([*pad.main_stick, *pad.c_stick], np.float32) * np.float32(2.0) - np.float32(1.0)
    classes = controller.stick_to_class(sticks)
    return {
        "buttons": bits,
        **{head: classes[i : i + 1] for i, head in enumerate(controller.STICK_HEADS)},
        "shoulder": controller.shoulder_to_class([pad.l_shoulder]),
    }


class FrameFeaturizer:
    """Turns successive libmelee frames into policy inputs for one port.

    `row(gamestate)` returns `(numeric [1, NUMERIC_SIZE] float32,
    categorical [1, CATEGORICAL_SIZE] int32, targets)` where the inputs are
    the state at t-delay and the player's own pad at t (what `features.align`
    gives for predicting the pad at t+1), and `targets` is the pad at t. Until
    `delay` frames have been seen, the earliest state stands in.

    Args:
        port: the controlled player's port, 1-4 as in libmelee and Slippi.
        delay: frames of reaction delay the policy was trained with.
        stage_id: external stage id, to override libmelee's stage (see above).
    """

    def __init__(self, port: int, delay: int = 0, stage_id: int | None = None):
        if port not in (1, 2, 3, 4):
            raise ValueError(f"port must be 1, 2, 3 or 4, got {port}")
        if delay < 0:
            raise ValueError(f"delay must be >= 0, got {delay}")
        self.port = port
        self.delay = delay
        self.stage_id = stage_id
        self.reset()

    def reset(self) -> None:
        self._characters = None
        self._states: list = []

    def opponent_port(self, gamestate) -> int:
        ports = sorted(p for p in gamestate.players if p != self.port)
        if self.port not in gamestate.players:
            raise ValueError(f"no player on port {self.port} (ports in this game: {sorted(int(p) for p in gamestate.players)})")
        if len(ports) != 1:
            raise ValueError(f"not a 1v1 game ({len(gamestate.players)} players on ports {sorted(gamestate.players)})")
        return ports[0]

    def state(self, gamestate) -> tuple[np.ndarray, np.ndarray]:
        """The post-frame state only: `[STATE_NUMERIC_SIZE]` and `[CATEGORICAL_SIZE]`."""
        _, internal_to_external, stage_to_external, _ = _tables()
        them = gamestate.players[self.opponent_port(gamestate)]
        me = gamestate.players[self.port]
        if self._characters is None:
            self._characters = tuple(
                min(internal_to_external.get(_enum_value(p.character), features.CHARACTERS - 1), features.CHARACTERS - 1)
                for p in (me, them)
            )
        stage = self.stage_id if self.stage_id is not None else stage_to_external.get(gamestate.stage, features.STAGES - 1)
        numeric = np.concatenate([player_numeric(me), player_numeric(them)])
        categorical = np.array(
            [
                *features.action_ids([_enum_value(me.action), _enum_value(them.action)]),
                self._characters[0],
                self._characters[1],
                min(int(stage), features.STAGES - 1),
            ],
            np.int32,
        )
        return numeric, categorical

    def row(self, gamestate):
        numeric, categorical = self.state(gamestate)
        self._states.append((numeric, categorical))
        if len(self._states) > self.delay + 1:
            self._states.pop(0)
        numeric, categorical = self._states[0]
        targets = controller_targets(gamestate.players[self.port])
        pad = controller.targets_as_input(targets)[0]
        return np.concatenate([numeric, pad])[None, :], categorical[None, :], targets
