"""UMI `FRAME` records give the features replays give, field by field, on
every frame of the sample games (keras_lstm.data.umi_frames)."""

from __future__ import annotations

import numpy as np
import pytest
from umi.frame import FRAME, NEUTRAL_CTRL

from conftest import GAMES
from keras_lstm.data import controller, features, umi_frames
from keras_lstm.data.replays import FIRST_PLAYABLE_FRAME, ReplayError, read_game
from keras_lstm.serving.decode import decode_controller


def _games():
    """Every sample game the replay path imitates: (name, game, trajectories)."""
    out = []
    for path in sorted(GAMES.glob("*.slp")):
        try:
            game = read_game(path)
            trajectories, _ = features.game_to_trajectories(game, path)
        except ReplayError:
            continue  # doubles, unreadable: the replay path has no rows for them either
        out.append((path.name, game, trajectories))
    return out


GAME_LIST = _games()


def test_the_sample_covers_what_the_frame_path_must_handle():
    characters = {int(t.state_categorical[0, 2]) for _, _, ts in GAME_LIST for t in ts}
    stages = {int(t.state_categorical[0, 4]) for _, _, ts in GAME_LIST for t in ts}
    assert len(GAME_LIST) >= 15 and len(characters) >= 8 and len(stages) >= 5
    assert 14 in characters  # Ice Climbers (Popo leads; Nana is not used, in either path)


@pytest.mark.parametrize("name, game, trajectories", GAME_LIST, ids=[g[0] for g in GAME_LIST])
def test_frame_features_equal_replay_features_on_every_frame(name, game, trajectories):
    ports = [int(p.port.value) if hasattr(p.port, "value") else int(p.port) for p in game.start.players]
    for trajectory in trajectories:
        seat = ports.index(trajectory.port)
        frames = umi_frames.game_frames(game, seat)
        frames = frames[frames["frame"] >= FIRST_PLAYABLE_FRAME]
        assert len(frames) == len(trajectory)
        # The character of the game's first frame, as the bot holds it per game.
        first = umi_frames.external_characters(frames[:1])
        numeric, categorical = umi_frames.state_features(frames, np.repeat(first, len(frames), axis=0))
        for i, (field, _) in enumerate(features.PLAYER_FIELDS * 2):
            who = "self" if i < len(features.PLAYER_FIELDS) else "opponent"
            np.testing.assert_array_equal(numeric[:, i], trajectory.state_numeric[:, i], err_msg=f"{name}: {who} {field}")
        want = trajectory.state_categorical.copy()
        if int(game.start.stage) not in umi_frames.INTERNAL_STAGE:  # UMI names only the six stages the arena plays
            want[:, 4] = features.STAGES - 1
        for i, column in enumerate(features.CATEGORICAL_COLUMNS):
            np.testing.assert_array_equal(categorical[:, i], want[:, i], err_msg=f"{name}: {column}")
        # The controller that produced each frame gives the replay's targets.
        targets = umi_frames.rows_to_targets(umi_frames.controller_rows(frames["players"][:, 0]["controller"]))
        for head in controller.HEADS:
            np.testing.assert_array_equal(targets[head], trajectory.targets[head], err_msg=f"{name}: {head}")


def test_the_13_floats_are_the_decoded_pad():
    rng = np.random.default_rng(0)
    logits = {"buttons": rng.normal(size=(64, 8)) * 3}
    logits.update({h: rng.normal(size=(64, controller.HEAD_CLASSES[h])) * 3 for h in controller.CLASS_HEADS})
    pad = decode_controller(logits)
    rows = umi_frames.pad_to_rows(pad)
    assert rows.dtype == np.float32 and rows.shape == (64, 13)
    assert (rows >= 0).all() and (rows <= 1).all()
    np.testing.assert_array_equal(rows[:, 5:], pad["buttons"])
    for i, head in enumerate(controller.STICK_HEADS):
        np.testing.assert_array_equal(rows[:, i] * 2 - 1, pad[head])  # exact: every bucket is k/16
    np.testing.assert_array_equal(rows[:, 4], pad["shoulder"])
    # and back: what the bot sent is, as its previous input, the classes it decoded
    targets = umi_frames.rows_to_targets(rows)
    for head in controller.CLASS_HEADS:
        np.testing.assert_array_equal(targets[head], np.argmax(logits[head], axis=1), err_msg=head)
    np.testing.assert_array_equal(targets["buttons"], pad["buttons"])
    # the bot's one-pass form of the previous-input columns
    np.testing.assert_array_equal(umi_frames.rows_to_input(rows), controller.targets_as_input(targets))
    raw = rng.random((64, 13)).astype(np.float32)  # a frame's own controller: not on the class centres
    np.testing.assert_array_equal(umi_frames.rows_to_input(raw), controller.targets_as_input(umi_frames.rows_to_targets(raw)))


def test_neutral_is_the_centre_class_and_released():
    targets = umi_frames.rows_to_targets(NEUTRAL_CTRL[None])
    assert all(int(targets[h][0]) == 8 for h in controller.STICK_HEADS) and int(targets["shoulder"][0]) == 0
    assert not targets["buttons"].any()


def test_unknown_ids_are_named_and_read_as_other():
    frames = np.zeros(3, FRAME)
    frames["players"]["character"] = 1  # Fox
    frames["stage"] = 24  # Battlefield
    assert umi_frames.unknown_ids(frames) == [] and not umi_frames.unknown_rows(frames).any()
    frames["players"]["character"][1, 1] = 200
    frames["stage"][2] = 99
    frames["players"]["action"][0, 0] = 900
    np.testing.assert_array_equal(umi_frames.unknown_rows(frames), [True, True, True])
    problems = umi_frames.unknown_ids(frames)
    assert problems == ["unknown opponent character id 200", "unknown stage id 99", "action state id 900 past the table (read as 'other')"]
    _, categorical = umi_frames.state_features(frames)
    assert categorical[1, 3] == features.CHARACTERS - 1 and categorical[2, 4] == features.STAGES - 1
    assert categorical[0, 0] == features.ACTION_STATES - 1


def test_non_finite_rows_are_found():
    frames = np.zeros(4, FRAME)
    assert umi_frames.finite_rows(frames).all()
    frames["players"]["x"][1, 0] = np.nan
    frames["players"]["controller"]["main_y"][2, 1] = np.inf
    frames["randall_x"][3] = -np.inf
    np.testing.assert_array_equal(umi_frames.finite_rows(frames), [True, False, False, False])


def test_internal_character_ids_are_umis():
    from umi.frame import CHARACTERS

    from keras_lstm.data.melee_ids import INTERNAL_CHARACTER_IDS

    assert {n: i for n, i in INTERNAL_CHARACTER_IDS.items() if n != "NANA"} == CHARACTERS
