"""The training benchmark's protocol (plain data): what every configuration
shares, the full and quick protocols, the configurations in the order they
run, and the rule that decides whether the carried-state training runs."""

from __future__ import annotations

import dataclasses

from keras_lstm.config import WINDOW_FRAMES, WINDOW_LEARNING_RATE, TrainConfig, flat_settings
from keras_lstm.model.backbone import check_positive

SKIP_FIRST_STEPS = 3  # the first steps trace and compile the graph
CARRIED_CHOICES = ("auto", "always", "never")
# A deployed loss more than 5 % above the windowed loss on the same frames is
# a gap worth closing (the carried-state training mode is then run).
GAP_THRESHOLD = 1.05


# What the protocol trains with where it differs from `keras-lstm train`'s
# defaults: a window every 20 frames and 2 epochs keep the full protocol
# within 30 minutes on a busy 2-core machine; every configuration, the
# carried one too, at the windows' learning rate and window (a comparison at
# equal settings: the corpus recipe's own defaults are a higher rate and
# shorter segments).
FULL_TRAINING = {"stride": 20, "epochs": 2, "learning_rate": WINDOW_LEARNING_RATE, "window_size": WINDOW_FRAMES}
QUICK_TRAINING = {"learning_rate": WINDOW_LEARNING_RATE, "embed_size": 16, "hidden_size": 16, "window_size": 20, "stride": 16, "epochs": 1, "batch_size": 16, "max_frames": 4000, "carried_streams": 8}


@dataclasses.dataclass
class Protocol:
    """Everything every configuration shares: `training` (the
    `keras_lstm.config.TrainConfig` each run starts from) and how the runs
    are chosen and timed. `truncations` lists K values (None = full BPTT)
    run with the LSTM at the training window size."""

    training: TrainConfig
    name: str = "full"
    truncations: tuple = (None, 20, 15, 10)
    gru: bool = True  # the GRU beside the LSTM, full BPTT
    carried_state: str = "auto"  # "auto": only if the LSTM's deployed/windowed loss > GAP_THRESHOLD; "always"; "never"
    latency_steps: int = 300
    worker_timeout_s: float = 1800.0
    time_budget_s: float | None = 28 * 60  # runs that would start past it are skipped and reported

    @property
    def replays(self) -> str:
        return self.training.data.replays

    def validate(self) -> None:
        """Raise ValueError naming the first bad setting."""
        self.training.validate()
        check_positive(**{"latency-steps": self.latency_steps})
        for k in self.truncations:
            if k is not None and not 0 < k <= self.training.data.window_size:
                raise ValueError(f"truncation {k} must be between 1 and the window size ({self.training.data.window_size})")
        if self.carried_state not in CARRIED_CHOICES:
            raise ValueError(f"carried-state must be one of {CARRIED_CHOICES}, got {self.carried_state!r}")
        if None not in self.truncations:
            raise ValueError("the truncations must include None (full BPTT), the reference for the speed-ups")

    def to_json(self) -> dict:
        """The protocol as results.json records it: its own settings and the
        training options, flat."""
        return flat_settings(self)  # its own carried_state (the protocol's choice) wins

    def runs(self) -> list[dict]:
        """The windowed configurations, in the order they run (the
        carried-state run, if any, comes after them: see `run_protocol`)."""
        runs = [{"name": "lstm_full" if k is None else f"lstm_k{k}", "backbone": "lstm", "truncate_bptt": k, "mode": "windows"} for k in self.truncations]
        if self.gru:
            runs.insert(1, {"name": "gru_full", "backbone": "gru", "truncate_bptt": None, "mode": "windows"})
        return runs

    def carried_run(self) -> dict:
        return {"name": "lstm_carried", "backbone": "lstm", "truncate_bptt": None, "mode": "carried"}

    def train_config(self, run: dict, output: str) -> dict:
        """The training options of one configuration, flat (`TrainConfig.from_flat`)."""
        carried = {"carried_state": True} if run["mode"] == "carried" else {}
        return self.training.replace(output=output, backbone=run["backbone"], truncate_bptt=run["truncate_bptt"], **carried).flat()


def _protocol(replays: str, training: dict, own: dict, overrides: dict) -> Protocol:
    """Overrides named as the protocol's own settings change those (its
    `carried_state` is a choice, not the training option); the rest are
    training options."""
    own_names = {f.name for f in dataclasses.fields(Protocol)}
    training = {**training, **{k: v for k, v in overrides.items() if k not in own_names}}
    own = {**own, **{k: v for k, v in overrides.items() if k in own_names}}
    return Protocol(training=TrainConfig.from_flat(replays=str(replays), **training), **own)


def full_protocol(replays: str, **overrides) -> Protocol:
    """The documented protocol: `keras-lstm train`'s model (2x256 LSTM/GRU,
    embed 128, window 60, batch 64) on every usable game, with
    `FULL_TRAINING`'s changes."""
    return _protocol(replays, FULL_TRAINING, {}, overrides)


def quick_protocol(replays: str, **overrides) -> Protocol:
    """A tiny protocol that checks the benchmark still runs (not its numbers);
    the GRU left out (its worker is the LSTM's, on another cell)."""
    own = dict(name="quick", truncations=(None, 10), gru=False, carried_state="always", latency_steps=20, worker_timeout_s=600.0)
    return _protocol(replays, QUICK_TRAINING, own, overrides)


def succeeded(run: dict | None) -> bool:
    """A configuration that ran and has results (not failed or skipped)."""
    return run is not None and "error" not in run


def carried_decision(choice: str, lstm_full: dict | None) -> dict:
    """Whether to run the carried-state training mode, and why."""
    if choice == "never":
        return {"run": False, "reason": "not run (--carried-state never)"}
    if choice == "always":
        return {"run": True, "reason": "run (--carried-state always)"}
    if not succeeded(lstm_full) or not lstm_full.get("deploy"):
        return {"run": False, "reason": "not run: no train/deploy gap measured for the LSTM"}
    ratio = lstm_full["deploy"]["gap_ratio"]
    if ratio > GAP_THRESHOLD:
        return {"run": True, "reason": f"run: the LSTM's deployed loss is {ratio:.3f}x its windowed loss (> {GAP_THRESHOLD}x)"}
    return {"run": False, "reason": f"not run: the LSTM's deployed loss is {ratio:.3f}x its windowed loss (threshold {GAP_THRESHOLD}x)"}
