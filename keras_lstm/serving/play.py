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

Models: a run folder from `keras-lstm train` (stepped with the numpy
`PolicyStepper`) or a SavedModel version folder from `keras-lstm export`
(stepped through its `serving_default` signature, state held in the model).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from keras_lstm.data import controller
from keras_lstm.data.replays import FIRST_PLAYABLE_FRAME, ReplayError, read_game
from keras_lstm.serving.export import METADATA_FILE, load_saved_model
from keras_lstm.serving.inference import PolicyStepper, frame_loop
from keras_lstm.serving.melee_state import FrameFeaturizer
from keras_lstm.training.run_folder import MODEL_FILE, load_run

FRAME_BUDGET_MS = 1000.0 / 60.0


# ---------------------------------------------------------------------------
# Agents: one frame in, one decoded controller out


class StepperAgent:
    """A trained policy stepped in numpy (`keras_lstm.serving.inference.PolicyStepper`)."""

    kind = "keras run (numpy step)"

    def __init__(self, policy, delay: int = 0):
        self.stepper = PolicyStepper(policy)
        self.delay = delay
        self.source = ""

    def reset(self) -> None:
        self.stepper.reset()

    def act(self, numeric_1xF, categorical_1xC) -> dict:
        return self.stepper.act(numeric_1xF, categorical_1xC)


class SavedModelAgent:
    """An exported SavedModel stepped through `serving_default` (state held in
    the model; `reset` at the start of a game)."""

    kind = "SavedModel (serving_default)"

    def __init__(self, path: str | Path):
        import tensorflow as tf

        self.source = str(path)
        loaded, self.meta = load_saved_model(path)  # one-line errors naming the damaged file
        self.delay = int(self.meta.get("delay", 0))
        self._loaded = loaded  # keeps the variables alive
        self._serve = loaded.signatures["serving_default"]
        self._reset = loaded.signatures["reset"]
        self._tf = tf
        # The first call of a loaded signature initialises it (tens of ms):
        # pay that now, not in the first frame of a game.
        numeric = np.zeros((1, int(self.meta["numeric_size"])), np.float32)
        self.act(numeric, np.zeros((1, int(self.meta["categorical_size"])), np.int32))
        self.reset()

    def reset(self) -> None:
        self._reset()

    def act(self, numeric_1xF, categorical_1xC) -> dict:
        tf = self._tf
        try:
            out = self._serve(numeric=tf.constant(numeric_1xF, tf.float32), categorical=tf.constant(categorical_1xC, tf.int32))
        except tf.errors.InvalidArgumentError as err:
            # The model's own input check (NaN or inf in the frame); its held state is unchanged.
            lines = [line.strip() for line in err.message.splitlines() if line.strip()]
            reason = next((line for line in lines if "NaN or inf" in line), lines[-1] if lines else type(err).__name__)
            raise ValueError(f"{self.source}: serving_default rejected the frame ({reason[:200]})") from None
        return {k: v.numpy() for k, v in out.items()}


def _saved_model_version(path: Path) -> Path | None:
    """`path` itself if it is a SavedModel version folder (it holds
    `saved_model.pb` or `keras_lstm.json`: a damaged one is reported, not
    skipped), else its highest version folder holding a SavedModel, else None."""
    if path.is_file() and path.name in ("saved_model.pb", METADATA_FILE):
        return path.parent
    if not path.is_dir():
        return None
    if (path / "saved_model.pb").exists() or (path / METADATA_FILE).exists():
        return path
    versions = sorted((int(p.name), p) for p in path.iterdir() if p.name.isdigit() and p.is_dir())
    with_model = [p for _, p in versions if (p / "saved_model.pb").exists()]
    if with_model:
        return with_model[-1]
    if (path / MODEL_FILE).exists():
        return None  # a run folder
    if versions:
        raise FileNotFoundError(
            f"{path}: no SavedModel in its version folders {[v for v, _ in versions]} (no saved_model.pb); export the model again"
        )
    names = sorted(p.name for p in path.iterdir() if p.is_dir() and _saved_model_names(p))
    if names:
        raise FileNotFoundError(f"{path}: a SavedModel base folder (models: {', '.join(names)}); give --model {path / names[0]}")
    return None


def _saved_model_names(folder: Path) -> bool:
    """Whether `folder` is a model name folder: a version folder with a SavedModel."""
    try:
        return any(p.name.isdigit() and (p / "saved_model.pb").exists() for p in folder.iterdir())
    except OSError:  # unreadable: not what the user meant
        return False


def load_agent(model: str | Path):
    """An agent for a run folder (or its `.keras` file), a SavedModel version
    folder, or a SavedModel name folder (its highest version)."""
    path = Path(model).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such model (a run folder from keras-lstm train or a SavedModel from keras-lstm export)")
    saved = _saved_model_version(path)
    if saved is not None:
        return SavedModelAgent(saved)
    if path.is_file() and path.suffix != ".keras":
        raise ValueError(
            f"{path}: not a model (--model takes a run folder from keras-lstm train, its model.keras, "
            "or a SavedModel folder from keras-lstm export)"
        )
    policy, run_info = load_run(path)
    agent = StepperAgent(policy, int(run_info.get("config", {}).get("delay", 0)))
    agent.source = str(path)
    return agent


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
            predicted, previous_human = _classes(pad), human
            latencies_ms.append(latency_ms)
            if on_frame is not None:
                on_frame(int(gamestate.frame), pad, latency_ms)
            if max_frames is not None and len(latencies_ms) >= max_frames:
                break
    if not latencies_ms:
        raise ReplayError(replay, "no playable frames")
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
    return "\n".join(lines)


def check_play_options(
    port: int,
    replay: str | Path | None,
    dolphin: str | Path | None,
    iso: str | Path | None,
    max_frames: int | None,
) -> None:
    """`keras-lstm play`'s options, checked before the model loads: a port of
    1-4, exactly one of a replay file or Dolphin (with an ISO), a positive
    frame limit, and a replay path that is a file."""
    if port not in (1, 2, 3, 4):
        raise ValueError(f"--port must be 1, 2, 3 or 4, got {port}")
    if (replay is None) == (dolphin is None):
        raise ValueError("give exactly one of --replay FILE.slp or --dolphin PATH")
    if dolphin is not None and iso is None:
        raise ValueError("--dolphin needs --iso (a Melee 1.02 ISO)")
    if max_frames is not None and max_frames <= 0:
        raise ValueError(f"--max-frames must be a positive integer, got {max_frames}")
    if replay is not None:
        check_replay_path(replay)  # a wrong path fails at once, not after the model loads
