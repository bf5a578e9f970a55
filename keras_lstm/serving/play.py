"""The real-time play loop: a policy acting frame by frame through libmelee.

Each frame: libmelee hands over the game state (`console.step()`), the
policy turns it into features (`keras_lstm.serving.melee_state`), steps its
recurrent state once and decodes a controller; that is the work that must fit
inside the 16.6 ms frame, and the per-frame latency we report.

- `play_replay`: the game comes from a `.slp` file through libmelee's replay
  console (`melee.Console(is_dolphin=False, path=...)`), a real client of the
  game state. Nothing is sent to a game: the policy's controller for frame
  t+1 is compared with what the human on that port actually pressed, beside
  the "repeat the previous input" baseline on the same frames.
- `play_dolphin`: the production path. libmelee starts Slippi Dolphin,
  plugs a virtual controller into `port`, walks the menus with
  `melee.MenuHelper`, and the policy's controller is pressed every in-game
  frame. It needs Slippi Dolphin and a Melee ISO, so it cannot run in CI.

Models (`keras_lstm.serving.agents`): a run folder from `keras-lstm train`
(stepped with the numpy `PolicyStepper`) or a SavedModel version folder from
`keras-lstm export` (stepped through its `serving_default` signature, state
held in the model); acting by argmax, or by sampling from the predicted
distributions (`--sample --temperature T --seed S`).

Besides how often the policy presses what the human pressed, the report
scores the change frames, where the human's input differs from the previous
frame's (`keras_lstm.evaluation.change_frames`): there repeating the
previous input scores 0, and a policy must know when and to what the input
changes.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from keras_lstm.data import controller
from keras_lstm.data.replays import FIRST_PLAYABLE_FRAME, ReplayError, read_game
from keras_lstm.evaluation.baselines import repeat_change_frame_accuracy
from keras_lstm.evaluation.change_frames import ChangeFrameCounter
from keras_lstm.serving.agents import SavedModelAgent, StepperAgent, check_decoding_options, load_agent, make_sampler  # noqa: F401 - play's API
from keras_lstm.serving.inference import frame_loop
from keras_lstm.serving.melee_state import FrameFeaturizer

FRAME_BUDGET_MS = 1000.0 / 60.0


# ---------------------------------------------------------------------------
# Scoring the policy against the human on the same frames


def _classes(pad: dict) -> dict:
    """Decoded controller values (policy output) -> target classes, `[1]` each."""
    out = {"buttons": np.asarray(pad["buttons"], np.float32).reshape(1, -1)}
    for head in controller.STICK_HEADS:
        out[head] = controller.stick_to_class(np.asarray(pad[head]).reshape(1))
    out["shoulder"] = controller.shoulder_to_class(np.asarray(pad["shoulder"]).reshape(1))
    return out


class MatchCounter:
    """How often a prediction equals the human's pad, per head and overall."""

    def __init__(self):
        self.frames = 0
        self.heads = {h: 0 for h in controller.HEADS}
        self.buttons_each = 0  # buttons right, out of 8 per frame
        self.all_heads = 0

    def add(self, predicted: dict, human: dict) -> None:
        self.frames += 1
        right_buttons = predicted["buttons"] == human["buttons"]
        self.buttons_each += int(right_buttons.sum())
        same = {"buttons": bool(right_buttons.all())}
        for head in controller.CLASS_HEADS:
            same[head] = bool(predicted[head][0] == human[head][0])
        for head, ok in same.items():
            self.heads[head] += ok
        self.all_heads += all(same.values())

    def rates(self) -> dict:
        n = max(self.frames, 1)
        return {
            "all_heads": self.all_heads / n,
            **{f"{h}_exact" if h == "buttons" else h: c / n for h, c in self.heads.items()},
            "buttons_each": self.buttons_each / (8 * n),
        }


@dataclasses.dataclass
class PlayReport:
    replay: str
    port: int
    model: str
    agent: str
    delay: int
    frames: int  # frames the policy acted on
    scored_frames: int  # frames with a human input to compare with (all but the last)
    latency_median_ms: float
    latency_p99_ms: float
    latency_worst_ms: float
    frames_over_budget: int
    budget_ms: float
    cpu_median_ms: float  # CPU time of this process per frame: the tail of wall time minus
    cpu_p99_ms: float  # this is time spent descheduled on a busy machine
    cpu_worst_ms: float
    match: dict  # policy vs human, per head
    repeat_previous_match: dict  # baseline: the human's previous input vs the human
    decoding: dict  # how the policy chose its actions: {"mode": "argmax"} or sampling's temperature and seed
    # Frames where the human's input changed from the previous frame (buttons:
    # change events of single buttons), and how often the policy's action was
    # the new input there (buttons: weighted by change events; None: no change
    # frames). Repeating the previous input scores 0.0 there by construction.
    change_frames: dict
    change_frame_match: dict
    change_frame_match_per_button: dict
    repeat_previous_change_frame_match: dict
    # The frames where the policy's action differed from the human's previous
    # input, and how often it was the human's input there.
    policy_changes: dict
    policy_change_precision: dict

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def latency_summary(latencies_ms) -> dict:
    lat = np.asarray(latencies_ms, np.float64)
    if lat.size == 0:
        return {"latency_median_ms": 0.0, "latency_p99_ms": 0.0, "latency_worst_ms": 0.0, "frames_over_budget": 0}
    return {
        "latency_median_ms": float(np.median(lat)),
        "latency_p99_ms": float(np.percentile(lat, 99)),
        "latency_worst_ms": float(lat.max()),
        "frames_over_budget": int((lat > FRAME_BUDGET_MS).sum()),
    }


# ---------------------------------------------------------------------------
# The loops


def _replay_stage_id(replay: Path) -> int | None:
    """The replay's external stage id (libmelee names only six stages)."""
    return int(read_game(replay).start.stage)


def _check_ports(replay: Path, gamestate, port: int) -> None:
    """ReplayError naming the file unless `port` plays in a 1v1 game."""
    ports = sorted(int(p) for p in gamestate.players)  # libmelee's keys are numpy integers
    if port not in ports:
        raise ReplayError(replay, f"no player on port {port} (ports in this game: {ports})")
    if len(ports) != 2:
        raise ReplayError(replay, f"not a 1v1 game ({len(ports)} players on ports {ports}); play needs a 1v1 replay")


def check_replay_path(replay: str | Path) -> Path:
    """`replay` as a Path, or ReplayError naming it: missing, or a folder."""
    replay = Path(replay).expanduser()
    if replay.is_dir():
        raise ReplayError(replay, "is a folder, not a replay file (expected one .slp file)")
    if not replay.is_file():
        raise ReplayError(replay, "no such replay file (expected a .slp file)")
    return replay


def play_replay(agent, replay: str | Path, port: int, max_frames: int | None = None, on_frame=None) -> PlayReport:
    """Drive `agent` frame by frame through libmelee's replay console.

    Args:
        agent: `StepperAgent`, `SavedModelAgent` or anything with `delay`,
            `reset()` and `act(numeric, categorical) -> decoded controller`.
        replay: a `.slp` file of a 1v1 game.
        port: the port (1-4) whose player the policy stands in for.
        max_frames: stop after this many acted frames.
        on_frame: called as `on_frame(frame, controller, latency_ms)`.
    """
    import melee

    replay = check_replay_path(replay)
    if max_frames is not None and max_frames <= 0:
        raise ValueError(f"max-frames must be positive, got {max_frames}")
    stage_id = _replay_stage_id(replay)  # also rejects unreadable files with a one-line reason
    console = melee.Console(is_dolphin=False, path=str(replay), allow_old_version=True)
    try:
        console.connect()
    except Exception as err:  # libmelee's replay reader raises what ubjson raises
        raise ReplayError(replay, f"libmelee cannot read it ({type(err).__name__}: {err})") from None

    featurizer = FrameFeaturizer(port, agent.delay, stage_id=stage_id)
    agent.reset()
    latencies_ms, cpu_ms, policy_match, baseline_match = [], [], MatchCounter(), MatchCounter()
    policy_changes = ChangeFrameCounter()
    predicted = previous_human = None
    checked = False
    with frame_loop():
        while True:
            try:
                gamestate = console.step()
            except Exception as err:  # noqa: BLE001 - libmelee's frame parser fails in many ways on replays it does not support
                reason = " ".join(str(err).split())[:160]
                raise ReplayError(replay, f"libmelee cannot read it after {len(latencies_ms)} frame(s) ({type(err).__name__}: {reason})") from None
            if gamestate is None:
                break
            if gamestate.frame < FIRST_PLAYABLE_FRAME or not gamestate.players:
                continue
            if not checked:
                _check_ports(replay, gamestate, port)
                checked = True
            start, cpu_start = time.perf_counter(), time.process_time()
            numeric, categorical, human = featurizer.row(gamestate)
            pad = agent.act(numeric, categorical)
            latency_ms = (time.perf_counter() - start) * 1e3
            cpu_ms.append((time.process_time() - cpu_start) * 1e3)

            if predicted is not None:  # the policy's guess for this frame, made last frame
                policy_match.add(predicted, human)
                baseline_match.add(previous_human, human)
                policy_changes.add(predicted, human, previous_human)
            predicted, previous_human = _classes(pad), human
            latencies_ms.append(latency_ms)
            if on_frame is not None:
                on_frame(int(gamestate.frame), pad, latency_ms)
            if max_frames is not None and len(latencies_ms) >= max_frames:
                break
    if not latencies_ms:
        raise ReplayError(replay, "no playable frames")
    change_frames = policy_changes.counts()
    return PlayReport(
        replay=str(replay),
        port=port,
        model=getattr(agent, "source", ""),
        agent=getattr(agent, "kind", type(agent).__name__),
        delay=agent.delay,
        frames=len(latencies_ms),
        scored_frames=policy_match.frames,
        budget_ms=FRAME_BUDGET_MS,
        match=policy_match.rates(),
        repeat_previous_match=baseline_match.rates(),
        decoding=getattr(agent, "decoding", {"mode": "argmax"}),
        change_frames=change_frames,
        change_frame_match=policy_changes.rates(),
        change_frame_match_per_button=policy_changes.button_rates(),
        repeat_previous_change_frame_match=repeat_change_frame_accuracy(change_frames),
        policy_changes=policy_changes.predicted_counts(),
        policy_change_precision=policy_changes.precisions(),
        cpu_median_ms=float(np.median(cpu_ms)),
        cpu_p99_ms=float(np.percentile(cpu_ms, 99)),
        cpu_worst_ms=float(np.max(cpu_ms)),
        **latency_summary(latencies_ms),
    )


def press(pad_controller, pad: dict) -> None:
    """Send a decoded controller (batch 1) to a libmelee `Controller`."""
    import melee

    buttons = np.asarray(pad["buttons"]).reshape(-1)
    for name, down in zip(controller.BUTTONS, buttons):
        button = getattr(melee.enums.Button, f"BUTTON_{name}")
        if down > 0.5:
            pad_controller.press_button(button)
        else:
            pad_controller.release_button(button)
    # libmelee's sticks run 0..1 with 0.5 at the centre; ours run -1..1.
    value = {h: float(np.asarray(pad[h]).reshape(-1)[0]) for h in controller.CLASS_HEADS}
    pad_controller.tilt_analog(melee.enums.Button.BUTTON_MAIN, (value["main_x"] + 1) / 2, (value["main_y"] + 1) / 2)
    pad_controller.tilt_analog(melee.enums.Button.BUTTON_C, (value["c_x"] + 1) / 2, (value["c_y"] + 1) / 2)
    pad_controller.press_shoulder(melee.enums.Button.BUTTON_L, value["shoulder"])


def play_dolphin(
    agent,
    dolphin: str | Path,
    iso: str | Path,
    port: int,
    opponent_port: int = 2,
    character: str = "FOX",
    stage: str = "FINAL_DESTINATION",
    cpu_level: int = 9,
    max_frames: int | None = None,
    on_frame=None,
) -> dict:
    """The production path: play a live game in Slippi Dolphin (untestable in CI).

    libmelee starts Dolphin (`dolphin`: the Slippi Dolphin folder or
    executable) with `iso`, plugs virtual controllers into `port` (the
    policy) and `opponent_port` (a CPU of `cpu_level`, set up through the
    menus), and calls us once per frame. In game, each frame's controller is
    pressed before the next `console.step()`; in menus `melee.MenuHelper`
    picks `character` and `stage`. Returns the latency summary.
    """
    import melee

    character_enum = getattr(melee.enums.Character, character.upper(), None)
    stage_enum = getattr(melee.enums.Stage, stage.upper(), None)
    if character_enum is None:
        raise ValueError(f"unknown character {character!r} (one of {[c.name for c in melee.enums.Character]})")
    if stage_enum is None:
        raise ValueError(f"unknown stage {stage!r} (one of {[s.name for s in melee.enums.Stage]})")
    console = melee.Console(path=str(dolphin), fullscreen=False)
    pad = melee.Controller(console=console, port=port, type=melee.ControllerType.STANDARD)
    opponent = melee.Controller(console=console, port=opponent_port, type=melee.ControllerType.STANDARD)
    console.run(iso_path=str(iso))
    if not console.connect():
        raise RuntimeError("could not connect to Slippi Dolphin (is it running with Slippi's spectator port open?)")
    pad.connect()
    opponent.connect()
    menus, opponent_menus = melee.MenuHelper(), melee.MenuHelper()
    featurizer = FrameFeaturizer(port, agent.delay)
    latencies_ms, in_game = [], False
    loop = frame_loop()
    loop.__enter__()
    try:
        while max_frames is None or len(latencies_ms) < max_frames:
            gamestate = console.step()
            if gamestate is None:
                continue
            if gamestate.menu_state in (melee.Menu.IN_GAME, melee.Menu.SUDDEN_DEATH):
                if not in_game:
                    agent.reset()
                    featurizer.reset()
                    in_game = True
                if gamestate.frame < FIRST_PLAYABLE_FRAME:
                    continue
                start = time.perf_counter()
                numeric, categorical, _ = featurizer.row(gamestate)
                action = agent.act(numeric, categorical)
                press(pad, action)  # sent when the next console.step() flushes the controllers
                latency_ms = (time.perf_counter() - start) * 1e3
                latencies_ms.append(latency_ms)
                if on_frame is not None:
                    on_frame(int(gamestate.frame), action, latency_ms)
            else:
                in_game = False
                menus.menu_helper_simple(gamestate, pad, character_enum, stage_enum, autostart=True, swag=False)
                opponent_menus.menu_helper_simple(gamestate, opponent, character_enum, stage_enum, cpu_level=cpu_level)
    finally:
        loop.__exit__(None, None, None)
        console.stop()
    return latency_summary(latencies_ms)


def format_report(report: PlayReport) -> str:
    """The play report as a few aligned lines."""
    m, b = report.match, report.repeat_previous_match
    lines = [
        f"replay            {report.replay} (port {report.port}, delay {report.delay})",
        f"model             {report.model} [{report.agent}]",
        f"frames            {report.frames} acted, {report.scored_frames} scored against the human",
        f"latency per frame median {report.latency_median_ms:.3f} ms, p99 {report.latency_p99_ms:.3f} ms, "
        f"worst {report.latency_worst_ms:.3f} ms; {report.frames_over_budget} frame(s) over the {report.budget_ms:.1f} ms budget",
        f"CPU per frame     median {report.cpu_median_ms:.3f} ms, p99 {report.cpu_p99_ms:.3f} ms, worst {report.cpu_worst_ms:.3f} ms",
        "match with human  policy   repeat-previous baseline",
    ]
    for key in m:
        lines.append(f"  {key:<15} {m[key]:7.1%}   {b[key]:7.1%}")
    lines.append(f"actions           {_describe_decoding(report.decoding)}")
    lines.append("on change frames  policy   repeat-previous   change frames (the human's input differs from the previous frame's)")
    c, rc, n = report.change_frame_match, report.repeat_previous_change_frame_match, report.change_frames
    for head in c:
        lines.append(f"  {head:<15} {_percent(c[head])}   {_percent(rc[head])}   {n[head]:>13,}")
    lines.append("  (buttons: each button on the frames where it changed, weighted by change events)")
    lines.append("policy's changes  right    frames (its action differs from the human's previous input)")
    p, pn = report.policy_change_precision, report.policy_changes
    for head in p:
        lines.append(f"  {head:<15} {_percent(p[head])}   {pn[head]:>13,}")
    return "\n".join(lines)


def _percent(rate) -> str:
    return f"{'-':>7}" if rate is None else f"{rate:7.1%}"


def _describe_decoding(decoding: dict) -> str:
    if decoding.get("mode") == "sample":
        how = f"sampled from the predicted distributions (temperature {decoding['temperature']:g}, seed {decoding['seed']})"
    else:
        how = "the most likely value of each head (argmax)"
    if decoding.get("keep_bias"):
        how += f", keep bias {decoding['keep_bias']:g} nats toward the previous input"
    return how


def check_play_options(
    port: int,
    replay: str | Path | None,
    dolphin: str | Path | None,
    iso: str | Path | None,
    max_frames: int | None,
    sample: bool = False,
    temperature: float | None = None,
    seed: int | None = None,
    keep_bias: float | None = None,
    opponent_port: int = 2,
) -> None:
    """`keras-lstm play`'s options, checked before the model loads: ports of
    1-4 (the opponent's another), exactly one of a replay file or Dolphin
    (with an ISO), a positive frame limit, a temperature > 0, a seed numpy
    takes and the sampling options only with --sample, a keep bias >= 0, and
    a replay path that is a file. Each message names its option."""
    for option, value in (("--port", port), ("--opponent-port", opponent_port)):
        if value not in (1, 2, 3, 4):
            raise ValueError(f"{option} must be 1, 2, 3 or 4, got {value}")
    if dolphin is not None and opponent_port == port:
        raise ValueError(f"--opponent-port must differ from --port ({port})")
    if (replay is None) == (dolphin is None):
        raise ValueError("give exactly one of --replay FILE.slp or --dolphin PATH")
    if dolphin is not None and iso is None:
        raise ValueError("--dolphin needs --iso (a Melee 1.02 ISO)")
    if max_frames is not None and max_frames <= 0:
        raise ValueError(f"--max-frames must be a positive integer, got {max_frames}")
    check_decoding_options(sample, temperature, seed, keep_bias)
    if replay is not None:
        check_replay_path(replay)  # a wrong path fails at once, not after the model loads
