"""`keras-lstm bench evaluate`: evaluation in one pass (the state carried)
against evaluation on windows, on the same games of a trained run.

The one-pass side runs `one_pass.evaluate_games` over every frame of the
games (the whole summary: loss, accuracy, F1, change frames, calibration,
keep bias, the groups); the windowed side runs `evaluate.evaluate_policy` at
the run's window and stride on the first `windows_max_frames` frames of the
same games (windowed evaluation of a million frames takes minutes), and its
time is scaled to the frames it scored. Each side's peak memory is the rise
of this process's peak resident set over the side, from the same start.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from keras_lstm.benchmarks import measure
from keras_lstm.data import features
from keras_lstm.data.replays import find_replays
from keras_lstm.data.trajectories import load_trajectories
from keras_lstm.data.windows import make_windows
from keras_lstm.evaluation import baselines, one_pass
from keras_lstm.evaluation.evaluate import evaluate_policy
from keras_lstm.training.run_folder import load_run


@dataclasses.dataclass
class EvaluationBenchConfig:
    model: str
    replays: str | None = None  # None: the run's own validation games
    windows_max_frames: int = 100_000

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def _side(fn) -> tuple[dict, float, float]:
    measure.reset_peak_rss()
    before = measure.rss_mb() or 0.0
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start, measure.peak_rss_mb() - before


def run(config: EvaluationBenchConfig) -> dict:
    policy, run_info = load_run(config.model, evaluation=True)
    cfg = run_info["config"]
    paths = [Path(p) for p in run_info.get("val_files", [])] if config.replays is None else find_replays(config.replays)
    start = time.perf_counter()
    report = load_trajectories(paths)
    parse_s = time.perf_counter() - start
    if not report.trajectories:
        raise ValueError(f"{config.replays or config.model}: no usable replay to evaluate on")
    hide = cfg.get("hide_game_state", False)
    arrays = [features.align(t, cfg["delay"], hide_game_state=hide) for t in report.trajectories]
    stats = baselines.BaselineStats.from_json(run_info["baseline_stats"])
    games = one_pass.Games.of(arrays, report.trajectories)

    summary, one_s, one_mb = _side(lambda: one_pass.evaluate_games(policy, games, stats))
    capped = load_trajectories(paths, max_frames=config.windows_max_frames).trajectories
    windows = make_windows([features.align(t, cfg["delay"], hide_game_state=hide) for t in capped], cfg["window_size"], cfg["stride"])
    windowed, win_s, win_mb = _side(lambda: evaluate_policy(policy, windows, stats))

    one_rate, win_rate = summary["frames"] / one_s, windowed["frames"] / win_s
    return {
        "benchmark": "evaluate",
        "config": config.to_json(),
        "machine": measure.machine_info(),
        "games": report.replays_used,
        "parse_seconds": parse_s,
        "one_pass": {"frames": summary["frames"], "seconds": one_s, "frames_per_s": one_rate,
                     "seconds_per_million_frames": 1e6 / one_rate, "peak_rss_rise_mb": one_mb, "val_loss": summary["val_loss"]},
        "windows": {"frames": windowed["frames"], "seconds": win_s, "frames_per_s": win_rate, "window_size": cfg["window_size"],
                    "stride": cfg["stride"], "seconds_per_million_frames": 1e6 / win_rate, "peak_rss_rise_mb": win_mb},
        "one_pass_speedup": one_rate / win_rate,
    }


def format_table(result: dict) -> str:
    one, win = result["one_pass"], result["windows"]
    return "\n".join([
        f"{result['games']} games, parsed in {result['parse_seconds']:.1f} s; {result['machine'].get('cpu', '?')}",
        f"{'':12}{'frames':>12}{'seconds':>10}{'frames/s':>12}{'s / 1M frames':>15}{'peak MB':>10}",
        f"{'one pass':12}{one['frames']:>12,}{one['seconds']:>10.1f}{one['frames_per_s']:>12,.0f}{one['seconds_per_million_frames']:>15.1f}{one['peak_rss_rise_mb']:>10.0f}",
        f"{'windows':12}{win['frames']:>12,}{win['seconds']:>10.1f}{win['frames_per_s']:>12,.0f}{win['seconds_per_million_frames']:>15.1f}{win['peak_rss_rise_mb']:>10.0f}",
        f"one pass scores frames {result['one_pass_speedup']:.1f}x as fast (windows of {win['window_size']} every {win['stride']} frames)",
    ])


__all__ = ["EvaluationBenchConfig", "format_table", "run"]
