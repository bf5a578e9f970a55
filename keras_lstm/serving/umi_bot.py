"""A trained policy as a bot of the Computer Melee Championship: a `umi.Bot`
(package `umi-melee`, the Universal Melee Interface) that plays many games at
once, one row of recurrent state per game.

Imports numpy, `umi` and the TensorFlow-free parts of keras_lstm only, so a
bundle (`keras_lstm.serving.umi_bundle`) runs it without TensorFlow.

Each observation of a game (a UMI `FRAME`, from the bot's seat) becomes the
features training saw (`keras_lstm.data.umi_frames`): the game state of the
frame, and as the previous input what the bot itself sent last (the arena
applies the delay: an answer to frame s is pressed at frame s + 1 + D, so the
frame is the state at t - 1 - D and the last answer the input at t - 1, as
`features.align` pairs them for a run trained with `--delay D`). Until a game
reaches the first frame training uses (`FIRST_PLAYABLE_FRAME`) the bot
answers neutral and its state stays at zero; on that frame the previous
input is the frame's own controller (the bot has sent nothing yet).

What the bot does with bad input, and never hangs or drops its other games:

- a frame with NaN or inf: that game is answered neutral and its state kept,
  with a one-line warning (once per game);
- an unknown character, stage or action id: read as the "other" id, with a
  one-line warning (once per game);
- an observation for a game it was never told of, or one already ended:
  answered neutral, with a warning;
- a malformed or unknown message: answered with a protocol `error` message
  naming it, and the session goes on.

A delay in the arena's welcome other than the run's is refused: the bot's
features would be shifted from what it learned (`DelayMismatch`).
"""

from __future__ import annotations

import gc
import sys
from typing import Callable

import numpy as np
import umi
from umi import protocol
from umi.frame import CTRL_FIELDS, NEUTRAL_CTRL

from keras_lstm.data import umi_frames
from keras_lstm.data.replays import FIRST_PLAYABLE_FRAME
from keras_lstm.serving.decode import argmax_pad


class DelayMismatch(ValueError):
    """The arena plays at another delay than the run trained with."""


# Below this many games a batch's matrix products are too small to share:
# one BLAS thread answers sooner than two that wait on each other
# (`keras-lstm bench umi`, docs/UMI.md).
SMALL_BATCH = 64


class BlasThreads:
    """numpy's BLAS threads set per batch: one for a small batch, every one the
    bot was given (the arena sets them to its cores) for a large one. Through
    threadpoolctl where it is installed (a bundle's requirements have it);
    else left as they are."""

    def __init__(self):
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            self.libraries = []
        else:
            self.libraries = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]
        self.most = max((lib.num_threads for lib in self.libraries), default=1)
        self.now = None

    def for_batch(self, n: int) -> None:
        wanted = 1 if n < SMALL_BATCH else self.most
        if wanted != self.now:
            for lib in self.libraries:
                lib.set_num_threads(wanted)
            self.now = wanted


class NumpyActor:
    """A `NumpyPolicy` and a decoder: `act(numeric, categorical, state) ->
    (pad, state)`. `decoder`: `argmax_pad` (the most likely value) or a
    `ControllerSampler`'s `pad` (`--sample`)."""

    def __init__(self, policy, decoder: Callable = argmax_pad):
        self.policy = policy
        self.decoder = decoder
        self.threads = BlasThreads()

    def initial_state(self, n: int):
        return self.policy.initial_state(n)

    def act(self, numeric, categorical, state):
        self.threads.for_batch(len(numeric))
        logits, state = self.policy.logits(numeric, categorical, state)
        return self.decoder(logits), state


def stderr_warning(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


class PolicyBot(umi.Bot):
    """Plays an actor (`NumpyActor`, or the SavedModel one of
    `keras_lstm.serving.umi_policy`). The arena reads `name`, `characters`
    and `delay` from a class body: `bot_class` makes one per run.

    Args:
        actor: `initial_state(n)` and `act(numeric, categorical, state) -> (pad, state)`.
        on_warning: hears each one-line warning (default: stderr).
    """

    name = "keras-lstm"

    def __init__(self, actor, on_warning: Callable[[str], None] = stderr_warning):
        self.actor = actor
        self.on_warning = on_warning
        self._warned: set = set()
        self._live: set = set()
        self._unreset: set = set()

    # --- umi.Bot

    def setup(self, session) -> None:
        if self.delay is not None and session.delay != self.delay:
            raise DelayMismatch(
                f"the arena plays at delay {session.delay}, this bot's run trained at --delay {self.delay}: "
                f"enter it at delay {self.delay}, or train a run with --delay {session.delay}"
            )
        # What is loaded stays: a full collection over it never lands in an answer.
        gc.collect()
        gc.freeze()

    def initial_state(self, n: int) -> dict:
        return {
            "recurrent": self.actor.initial_state(n),
            "previous": np.tile(NEUTRAL_CTRL, (n, 1)),  # what the bot sent last, as 13 floats
            "fresh": np.ones(n, bool),  # no playable frame seen yet
            "characters": np.full((n, 2), umi_frames.UNKNOWN, np.int64),  # external ids of the first playable frame
        }

    def act(self, batch, state):
        frames = batch.frames
        real = batch.slots != self.session.num_slots - 1  # the padding rows share the scratch row
        finite = umi_frames.finite_rows(frames)
        playing = finite & (frames["frame"] >= FIRST_PLAYABLE_FRAME)
        if not batch.warmup:
            self._warn_about(batch.games, frames, real & ~finite, real & playing)

        starting = state["fresh"] & playing
        characters = state["characters"].copy()
        characters[starting] = umi_frames.external_characters(frames[starting])
        previous = state["previous"].copy()
        previous[starting] = umi_frames.controller_rows(frames["players"][:, 0]["controller"][starting])

        state_numeric, categorical = umi_frames.state_features(frames, characters)
        numeric = np.concatenate([state_numeric, umi_frames.rows_to_input(previous)], axis=1)
        pad, recurrent = self.actor.act(numeric, categorical, state["recurrent"])
        ctrl = umi_frames.pad_to_rows(pad)

        idle = ~playing  # before the first playable frame, or a bad frame: neutral, the state kept
        ctrl[idle] = NEUTRAL_CTRL
        recurrent = _keep_rows(recurrent, state["recurrent"], idle)
        previous[playing] = ctrl[playing]
        new_state = {"recurrent": recurrent, "previous": previous, "fresh": state["fresh"] & idle, "characters": characters}
        return umi.Actions(ctrl=ctrl), new_state

    # --- the session, kept alive through bad input

    def run(self, sock) -> None:
        protocol.send(sock, self.hello())
        welcome = protocol.recv(sock)
        if welcome.get("t") == "shutdown":
            return
        if welcome.get("t") != "welcome":
            raise protocol.ProtocolError(f"expected welcome, got {welcome.get('t')!r}")
        session = umi.Session(
            delay=welcome["delay"], max_games=welcome["max_games"], num_slots=welcome["max_games"] + 1,
            lanes=welcome["lanes"], num_lane_slots=welcome["max_games"] // welcome["lanes"] + 1,
            buckets=tuple(welcome["buckets"]), info_every=welcome["info_every"], rng_seed=welcome["rng_seed"],
        )
        self._begin(session)  # setup: refuses another delay
        self._slots = umi.SlotTable(session.max_games, session.lanes)
        for _ in range(welcome["warmups"]):
            msg = protocol.recv(sock)
            if msg.get("t") != "warmup":
                raise protocol.ProtocolError(f"expected warmup, got {msg.get('t')!r}")
            protocol.send(sock, self._answer_warmup(msg))
        protocol.send(sock, {"t": "ready"})
        while True:
            try:
                msg = protocol.recv(sock)
            except ConnectionError:
                return  # the arena is gone
            except Exception as err:  # noqa: BLE001 - a body that does not decode: say so, read the next
                self._error(sock, "malformed message", err)
                continue
            kind = msg.get("t")
            try:
                if kind == "shutdown":
                    return
                self._handle(sock, kind, msg)
            except Exception as err:  # noqa: BLE001 - one bad message never ends the session
                self._error(sock, f"{kind!r} message", err)

    def _handle(self, sock, kind, msg: dict) -> None:
        if kind == "obs":
            protocol.send(sock, self._answer_obs(msg))
        elif kind == "new_games":
            for game in msg["games"]:
                handle = int(game["game"])
                if handle in self._live:
                    self._warn_once(handle, "started", f"game {handle} started twice: it goes on as it was")
                    continue
                self._slots.add(handle)
                self._live.add(handle)
                self._unreset.add(handle)  # reset on its first observation even if `first` is not set
        elif kind == "end_games":
            for game in msg["games"]:
                handle = int(game["game"])
                if handle in self._live:
                    self._slots.remove(handle)
                    self._live.discard(handle)
                    self._unreset.discard(handle)
                else:
                    self.on_warning(f"end_games for game {handle}, which is not playing: ignored")
        else:
            raise protocol.ProtocolError(f"unknown message type {kind!r}")

    def _answer_warmup(self, msg: dict) -> dict:
        games, first, frames = protocol.frames_from(msg)
        scratch = np.full(len(games), self._slots.scratch, np.int64)
        batch = umi.Batch(games=games, slots=scratch, lane_slots=np.full(len(games), self._slots.lane_size, np.int64),
                          first=first, frames=frames, lane=msg.get("lane", 0), warmup=True)
        return protocol.act(msg["seq"], self._ctrl(batch))

    def _answer_obs(self, msg: dict) -> dict:
        games, first, frames = protocol.frames_from(msg)
        ctrl = np.tile(NEUTRAL_CTRL, (len(games), 1))
        known = np.fromiter((int(g) in self._live for g in games), bool, len(games))
        for handle in games[~known].tolist():
            self._warn_once(handle, "unknown", f"observation for game {handle}, which is not playing (never started, or ended): answered neutral")
        if known.any():
            handles = games[known]
            reset = first[known] | np.fromiter((int(g) in self._unreset for g in handles), bool, len(handles))
            self._unreset.difference_update(int(g) for g in handles)
            batch = umi.Batch(games=handles, slots=self._slots.rows(handles), lane_slots=np.zeros(len(handles), np.int64),
                              first=reset, frames=frames[known], lane=msg.get("lane", 0))
            ctrl[known] = self._ctrl(batch)
        return protocol.act(msg["seq"], ctrl)

    def _ctrl(self, batch) -> np.ndarray:
        out = self._play(batch)  # umi.Bot's padding and per-game memory around `act`
        return np.asarray(out.ctrl, np.float32).reshape(len(batch.games), len(CTRL_FIELDS))

    def _error(self, sock, what: str, err: Exception) -> None:
        message = f"{what}: {type(err).__name__}: {' '.join(str(err).split())}"[:500]
        self.on_warning(message + " (answered with an error message)")
        protocol.send(sock, {"t": "error", "code": type(err).__name__, "msg": message})

    # --- warnings, once per game and kind

    def _warn_once(self, game: int, kind: str, message: str) -> None:
        if (game, kind) not in self._warned:
            self._warned.add((game, kind))
            self.on_warning(message)

    def _warn_about(self, games, frames, non_finite, playing) -> None:
        for k in np.flatnonzero(non_finite):
            self._warn_once(int(games[k]), "non-finite", f"game {int(games[k])} frame {int(frames['frame'][k])}: NaN or inf in the frame; answered neutral, its state kept")
        for k in np.flatnonzero(playing & umi_frames.unknown_rows(frames)):
            problems = "; ".join(umi_frames.unknown_ids(frames[k : k + 1]))
            self._warn_once(int(games[k]), "ids", f"game {int(games[k])}: {problems}; read as 'other'")


def _keep_rows(new, old, rows: np.ndarray):
    """`new` (a nest of `[B, ...]` arrays) with `rows` taken from `old`."""
    if isinstance(new, tuple):
        return tuple(_keep_rows(n, o, rows) for n, o in zip(new, old))
    if rows.any():
        new = np.array(new, copy=True)
        new[rows] = old[rows]
    return new


def bot_class(name: str, characters: str, delay: int) -> type:
    """A `PolicyBot` subclass declaring these in its class body, as the arena
    reads them."""
    return type("KerasLSTMBot", (PolicyBot,), {"name": name, "characters": characters, "delay": delay})
