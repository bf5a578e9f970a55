"""The training benchmark's protocol (plain data): what every configuration
shares, the full and quick protocols, the configurations in the order they
run, and the rule that decides whether the carried-state training runs."""

from __future__ import annotations

import dataclasses

from keras_lstm.model.backbone import check_positive

SKIP_FIRST_STEPS = 3  # the first steps trace and compile the graph
CARRIED_CHOICES = ("auto", "always", "never")
# A deployed loss more than 5 % above the windowed loss on the same frames is
# a gap worth closing (the carried-state training mode is then run).
GAP_THRESHOLD = 1.05


@dataclasses.dataclass
class Protocol:
    """Everything every configuration shares. `truncations` lists K values
    (None = full BPTT) run with the LSTM at `window_size`."""

    replays: str
    name: str = "full"
    embed_size: int = 128
    hidden_size: int = 256
    num_layers: int = 2
    window_size: int = 60
    stride: int = 20
    epochs: int = 2
    batch_size: int = 64
    learning_rate: float = 1e-3
    seed: int = 0
    val_fraction: float = 0.15
    max_frames: int | None = None
    truncations: tuple = (None, 20, 15, 10)
    carried_state: str = "auto"  # "auto": only if the LSTM's deployed/windowed loss > GAP_THRESHOLD; "always"; "never"
    carried_streams: int = 32
    latency_steps: int = 300
    worker_timeout_s: float = 1800.0
    time_budget_s: float | None = 28 * 60  # runs that would start past it are skipped and reported

    def validate(self) -> None:
        """Raise ValueError naming the first bad setting."""
        for name in ("embed_size", "hidden_size", "num_layers", "window_size", "stride", "epochs", "batch_size", "carried_streams", "latency_steps"):
            check_positive(**{name.replace("_", "-"): getattr(self, name)})
        if self.max_frames is not None:
            check_positive(**{"max-frames": self.max_frames})
        for k in self.truncations:
            if k is not None and not 0 < k <= self.window_size:
                raise ValueError(f"truncation {k} must be between 1 and the window size ({self.window_size})")
        if self.carried_state not in CARRIED_CHOICES:
            raise ValueError(f"carried-state must be one of {CARRIED_CHOICES}, got {self.carried_state!r}")
        if None not in self.truncations:
            raise ValueError("the truncations must include None (full BPTT), the reference for the speed-ups")

    def runs(self) -> list[dict]:
        """The windowed configurations, in the order they run (the
        carried-state run, if any, comes after them: see `run_protocol`)."""
        runs = [{"name": "lstm_full" if k is None else f"lstm_k{k}", "backbone": "lstm", "truncate_bptt": k, "mode": "windows"} for k in self.truncations]
        runs.insert(1, {"name": "gru_full", "backbone": "gru", "truncate_bptt": None, "mode": "windows"})
        return runs

    def carried_run(self) -> dict:
        return {"name": "lstm_carried", "backbone": "lstm", "truncate_bptt": None, "mode": "carried"}

    def train_config(self, run: dict, output: str) -> dict:
        """The `keras_lstm.training.train.TrainConfig` fields of one configuration."""
        return {
            "replays": self.replays,
            "output": output,
            "backbone": run["backbone"],
            "embed_size": self.embed_size,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "window_size": self.window_size,
            "truncate_bptt": run["truncate_bptt"],
            "stride": self.stride,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "val_fraction": self.val_fraction,
            "seed": self.seed,
            "max_frames": self.max_frames,
        }


def full_protocol(replays: str, **overrides) -> Protocol:
    """The documented protocol: 2x256 LSTM/GRU, embed 128, window 60, batch 64,
    every usable game (a window every 20 frames), 2 epochs; sized to finish
    in well under 30 minutes on a busy 2-core machine."""
    return Protocol(replays=str(replays), **overrides)


def quick_protocol(replays: str, **overrides) -> Protocol:
    """A tiny protocol that checks the benchmark still runs (not its numbers)."""
    values = dict(
        name="quick",
        embed_size=16,
        hidden_size=16,
        num_layers=2,
        stride=16,
        epochs=1,
        batch_size=16,
        max_frames=4000,
        truncations=(None, 10),
        carried_state="always",
        carried_streams=8,
        latency_steps=20,
        worker_timeout_s=600.0,
    )
    values.update(overrides)
    return Protocol(replays=str(replays), **values)


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
