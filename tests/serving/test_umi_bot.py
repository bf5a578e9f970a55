"""The UMI bot (keras_lstm.serving.umi_bot) against a hand-made arena on a
socket: it plays what the replay path computes, declares the run's delay,
and answers bad input without hanging or dropping its other games."""

from __future__ import annotations

import socket
import threading

import numpy as np
import pytest
from umi import protocol
from umi.frame import CTRL_FIELDS, FRAME, NEUTRAL_CTRL

from conftest import GAMES
from keras_lstm.data import controller, features, umi_frames
from keras_lstm.data.replays import FIRST_PLAYABLE_FRAME, read_game
from keras_lstm.model.numpy_policy import NumpyPolicy
from keras_lstm.serving.inference import PolicyStepper
from keras_lstm.serving.umi_bot import NumpyActor, bot_class
from test_export import make_run

REPLAY = GAMES / "py-slippi_v3.14.0.slp"  # Falco v Sheik, two humans


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("umi") / "run")


class Arena:
    """The arena's side of one session: the bot runs in a thread on the other end."""

    def __init__(self, bot, max_games=8, delay=0):
        self.warnings = []
        bot.on_warning = self.warnings.append
        self.sock, theirs = socket.socketpair()
        self.sock.settimeout(10)  # a bot that hangs fails the test instead of blocking it
        self.error = None
        self.thread = threading.Thread(target=self._run, args=(bot, theirs), daemon=True)
        self.thread.start()
        self.hello = protocol.recv(self.sock)
        protocol.send(self.sock, {"t": "welcome", "delay": delay, "max_games": max_games, "lanes": 1, "buckets": [1, 8],
                                  "info_every": 6, "warmups": 1, "timeouts": {}, "rng_seed": 0})
        self.seq = 0
        self.obs([10**6], np.zeros(1, FRAME), kind="warmup")
        self.ready = protocol.recv(self.sock)

    def _run(self, bot, sock):
        try:
            bot.run(sock)
        except Exception as err:  # noqa: BLE001 - the test reads it
            self.error = err
            protocol.send(sock, {"t": "error", "code": type(err).__name__, "msg": str(err)})
        finally:
            sock.close()

    def obs(self, games, frames, first=None, kind="obs"):
        self.seq += 1
        games = np.asarray(games, np.uint32)
        first = np.zeros(len(games), bool) if first is None else np.asarray(first, bool)
        protocol.send(self.sock, protocol.obs(self.seq, 0, games, first, frames, t=kind))
        reply = protocol.recv(self.sock)
        assert reply["t"] == "act" and reply["seq"] == self.seq, reply
        return protocol.act_arrays(reply, len(games))["ctrl"]

    def start(self, *games):
        protocol.send(self.sock, {"t": "new_games", "games": [
            {"game": g, "port": 1, "character": "FALCO", "opp_character": "SHEIK", "stage": "DREAMLAND"} for g in games]})

    def end(self, *games):
        protocol.send(self.sock, {"t": "end_games", "games": [{"game": g, "result": "void"} for g in games]})

    def shutdown(self):
        protocol.send(self.sock, {"t": "shutdown"})
        self.thread.join(10)
        assert not self.thread.is_alive()


def replay_frames(seat=0):
    frames = umi_frames.game_frames(read_game(REPLAY), seat)
    return frames[frames["frame"] >= FIRST_PLAYABLE_FRAME - 5]  # a few frames before the first playable one


def make_bot(policy, delay=0):
    return bot_class("test-bot", "FALCO", delay)(NumpyActor(NumpyPolicy.from_keras(policy)))


def test_the_bot_plays_what_the_replay_features_give(policy):
    """Step the bot through a real game's frames and, beside it, the numpy
    stepper fed the replay path's features with the bot's own previous
    answers as the previous input: the same actions on every frame."""
    frames = replay_frames()
    trajectory = features.game_to_trajectories(read_game(REPLAY), REPLAY)[0][0]
    arena = Arena(make_bot(policy))
    arena.start(7)
    stepper = PolicyStepper(policy)
    previous = None
    n_early = int((frames["frame"] < FIRST_PLAYABLE_FRAME).sum())
    for t in range(400):
        ctrl = arena.obs([7], frames[t : t + 1], first=[t == 0])[0]
        if t < n_early:
            np.testing.assert_array_equal(ctrl, NEUTRAL_CTRL)  # before the frames training uses
            continue
        row = t - n_early
        if previous is None:  # the first playable frame: the frame's own controller
            previous = umi_frames.controller_rows(frames["players"][t : t + 1, 0]["controller"])
        pad = controller.targets_as_input(umi_frames.rows_to_targets(previous))
        numeric = np.concatenate([trajectory.state_numeric[row : row + 1], pad], axis=1)
        want = umi_frames.pad_to_rows(stepper.act(numeric, trajectory.state_categorical[row : row + 1]))
        np.testing.assert_array_equal(ctrl, want[0], err_msg=f"frame {t}")
        previous = ctrl[None]
    arena.shutdown()
    assert arena.error is None and arena.warnings == []


def test_the_bot_declares_the_run_delay_and_refuses_another(policy):
    arena = Arena(make_bot(policy, delay=18), delay=18)
    assert arena.hello["delay"] == 18 and arena.hello["characters"] == "FALCO" and arena.ready["t"] == "ready"
    arena.shutdown()
    sock, theirs = socket.socketpair()
    sock.settimeout(10)
    bot = make_bot(policy, delay=18)
    errors = []
    thread = threading.Thread(target=lambda: errors.append(_run_catching(bot, theirs)), daemon=True)
    thread.start()
    protocol.recv(sock)
    protocol.send(sock, {"t": "welcome", "delay": 21, "max_games": 2, "lanes": 1, "buckets": [1], "info_every": 6,
                         "warmups": 0, "timeouts": {}, "rng_seed": 0})
    thread.join(10)
    assert "the arena plays at delay 21, this bot's run trained at --delay 18" in str(errors[0])


def _run_catching(bot, sock):
    try:
        bot.run(sock)
    except Exception as err:  # noqa: BLE001
        return err


def test_bad_input_gets_neutral_or_an_error_and_the_other_games_play_on(policy):
    frames = replay_frames()
    arena = Arena(make_bot(policy))
    arena.start(1, 2)
    t = 10  # playable frames
    ok = arena.obs([1, 2], frames[[t, t]], first=[True, True])
    assert not np.array_equal(ok[0], NEUTRAL_CTRL)

    # a NaN in game 2's frame: game 2 neutral and warned, game 1 plays on
    bad = frames[[t + 1, t + 1]].copy()
    bad["players"]["x"][1, 1] = np.nan
    ctrl = arena.obs([1, 2], bad)
    assert np.isfinite(ctrl).all() and not np.array_equal(ctrl[0], NEUTRAL_CTRL)
    np.testing.assert_array_equal(ctrl[1], NEUTRAL_CTRL)
    assert any("game 2" in w and "NaN or inf" in w for w in arena.warnings)

    # an unknown character and stage: read as "other", warned once
    odd = frames[[t + 2, t + 2]].copy()
    odd["players"]["character"][0, 1] = 200
    odd["stage"][0] = 99
    assert arena.obs([1, 2], odd).shape == (2, len(CTRL_FIELDS))
    assert any("game 1" in w and "unknown opponent character id 200" in w and "unknown stage id 99" in w for w in arena.warnings)

    # a game it never saw, and one ended before this observation: neutral for them, the others play
    arena.end(2)
    ctrl = arena.obs([1, 2, 99], frames[[t + 3, t + 3, t + 3]])
    np.testing.assert_array_equal(ctrl[1:], np.tile(NEUTRAL_CTRL, (2, 1)))
    assert not np.array_equal(ctrl[0], NEUTRAL_CTRL)
    assert any("game 99" in w for w in arena.warnings) and any("game 2" in w and "not playing" in w for w in arena.warnings)

    # a malformed message body and an unknown message type: an error message each, then play goes on
    body = b"\xc1\xc1\xc1"  # not msgpack
    arena.sock.sendall(len(body).to_bytes(4, "little") + body)
    assert protocol.recv(arena.sock)["t"] == "error"
    protocol.send(arena.sock, {"t": "teleport"})
    reply = protocol.recv(arena.sock)
    assert reply["t"] == "error" and "teleport" in reply["msg"]
    # an obs whose arrays disagree in length: an error message, not a crash
    protocol.send(arena.sock, {"t": "obs", "seq": 1000, "lane": 0, "games": np.array([1, 2], "<u4").tobytes(),
                               "first": b"\x00", "frames": frames[[t]].tobytes()})
    assert protocol.recv(arena.sock)["t"] == "error"
    assert arena.obs([1], frames[[t + 4]]).shape == (1, len(CTRL_FIELDS))
    arena.shutdown()
    assert arena.error is None


def test_a_new_game_on_a_reused_row_starts_from_zero_even_without_first(policy):
    frames = replay_frames()
    arena = Arena(make_bot(policy), max_games=1)
    arena.start(1)
    for t in range(10, 40):
        arena.obs([1], frames[[t]], first=[t == 10])
    arena.end(1)
    arena.start(2)  # takes game 1's row; its first observation is not marked first
    fresh = arena.obs([2], frames[[10]], first=[False])
    arena.shutdown()
    again = Arena(make_bot(policy), max_games=1)
    again.start(5)
    want = again.obs([5], frames[[10]], first=[True])
    again.shutdown()
    np.testing.assert_array_equal(fresh, want)


def test_a_saved_model_serves_as_the_run_does(policy, tmp_path):
    """`keras-lstm umi --model` takes a SavedModel export too (its batched
    `step` signature): its actor gives the run's numpy policy's distributions
    on the same frames (float32 tolerance: TensorFlow's kernels differ by
    CPU), and plays through the bot."""
    from keras_lstm.serving import export
    from keras_lstm.serving.decode import decode_controller
    from keras_lstm.serving.umi_bot import NumpyActor
    from keras_lstm.serving.umi_policy import load_served_policy

    run = tmp_path / "run"
    run_policy = make_run(run, delay=3)
    saved = export.export_run(run, base_dir=tmp_path / "savedmodels")
    from_run, from_export = load_served_policy(run, characters="FALCO"), load_served_policy(saved, characters="ALL")
    assert from_run.delay == from_export.delay == 3 and from_export.characters == "ALL"

    trajectory = features.game_to_trajectories(read_game(REPLAY), REPLAY)[0][0]
    rows = features.align(trajectory, 3)
    numpy_actor = NumpyActor(NumpyPolicy.from_keras(run_policy), decode_controller)  # with the probabilities, to compare
    states = [numpy_actor.initial_state(2), from_export.actor.initial_state(2)]
    for t in range(60):
        numeric, categorical = rows.numeric[[t, t + 500]], rows.categorical[[t, t + 500]]
        (want, states[0]), (got, states[1]) = numpy_actor.act(numeric, categorical, states[0]), from_export.actor.act(numeric, categorical, states[1])
        for head in controller.HEADS:
            np.testing.assert_allclose(got[f"{head}_prob"], want[f"{head}_prob"], atol=1e-5, err_msg=f"frame {t} {head}")
    for part in (0, 1):  # h and c: per layer `[B, hidden]` against the signature's `[B, layers, hidden]`
        np.testing.assert_allclose(np.stack([layer[part] for layer in states[0]], axis=1), states[1][part], atol=1e-5)

    arena = Arena(bot_class("b", from_export.characters, from_export.delay)(from_export.actor), delay=3)
    arena.start(1, 2)
    frames = replay_frames()
    ctrl = np.stack([arena.obs([1, 2], frames[[t, t + 500]], first=[t == 0] * 2) for t in range(20)])
    arena.shutdown()
    assert arena.error is None and ((ctrl >= 0) & (ctrl <= 1)).all() and not (ctrl == NEUTRAL_CTRL).all()
