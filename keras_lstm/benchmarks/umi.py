"""`keras-lstm bench umi`: how long a keras-lstm UMI bot takes to answer the
arena, through the real socket, at N = 1, 8, 32, 64, 128, 256 games per
batch, beside an echo bot (the protocol's own floor: the same socket and
messages, no model).

Each bot is its own process (`keras_lstm.benchmarks.umi_bots`, no
TensorFlow), started as the arena starts it (UMI_SOCKET, hello, welcome,
warm-up batches, ready). This process plays the arena: it sends each batch
of real frames (a replay's, `umi_frames.game_frames`, every game at its own
point of the game) and times until the answer is back. At each N the echo bot
and the policy run one after the other, the same frames, the same steps.
Targets (the UMI issue): batch 1 p99 <= 2 ms; batch 256 p99 <= 16.7 ms (one
frame: 256 games in real time from one lane).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from umi import protocol

from keras_lstm.benchmarks.measure import default_replays, machine_info
from keras_lstm.config import TrainConfig, flat_settings
from keras_lstm.data import umi_frames
from keras_lstm.data.replays import read_game

SIZES = (1, 8, 32, 64, 128, 256)
BUCKETS = SIZES
TARGET_BATCH_1_P99_MS = 2.0
TARGET_BATCH_256_P99_MS = 1000 / 60


@dataclasses.dataclass
class UMIBenchConfig:
    training: TrainConfig = dataclasses.field(default_factory=TrainConfig)  # backbone sizes of a fresh policy
    model: str | None = None  # a run folder to time instead
    sizes: tuple = SIZES
    steps: int = 300  # timed batches per N and bot
    warmup_steps: int = 20  # untimed batches first
    replay: str | None = None
    threads: int | None = None  # the bots' BLAS threads (None: as the arena sets them, one per core)


def real_frames(replay: str | None) -> np.ndarray:
    """`FRAME [T]` of a real game, both seats end to end."""
    path = Path(replay) if replay else next(iter(sorted(default_replays().rglob("*.slp"))), None)
    if path is None:
        raise FileNotFoundError("no replay to take frames from: give --replay")
    game = read_game(path)
    return np.concatenate([umi_frames.game_frames(game, seat) for seat in (0, 1)])


class BotProcess:
    """A bot started on its own socket, through hello and warm-up to ready."""

    def __init__(self, argv: list[str], max_games: int, threads: int | None):
        self.dir = tempfile.TemporaryDirectory(prefix="keras-lstm-bench-umi-")
        path = str(Path(self.dir.name) / "umi.sock")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen(1)
        env = dict(os.environ, UMI_SOCKET=path)
        if threads:
            env.update({v: str(threads) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
        started = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "keras_lstm.benchmarks.umi_bots", *argv], env=env)
        server.settimeout(120)
        self.conn, _ = server.accept()
        server.close()
        self.conn.settimeout(60)
        hello = protocol.recv(self.conn)
        protocol.send(self.conn, {"t": "welcome", "delay": hello["delay"], "max_games": max_games, "lanes": 1,
                                  "buckets": list(BUCKETS), "info_every": 6, "warmups": len(BUCKETS),
                                  "timeouts": {"ready_s": 300, "act_s": 10}, "rng_seed": 0})
        self.seq = 0
        for k, size in enumerate(BUCKETS):
            self.exchange(np.arange(10**7 + 1000 * k, 10**7 + 1000 * k + size, dtype=np.uint32), np.zeros(size, umi_frames.FRAME),
                          np.ones(size, bool), kind="warmup")
        ready = protocol.recv(self.conn)
        if ready.get("t") != "ready":
            raise RuntimeError(f"bot {argv[0]}: expected ready, got {ready}")
        self.startup_s = time.perf_counter() - started
        self.next_game = 1

    def exchange(self, games, frames, first, kind="obs") -> float:
        """One batch sent and answered; the milliseconds it took."""
        self.seq += 1
        message = protocol.obs(self.seq, 0, games, first, frames, t=kind)
        sent = time.perf_counter()
        protocol.send(self.conn, message)
        reply = protocol.recv(self.conn)
        took_ms = (time.perf_counter() - sent) * 1000
        if reply.get("t") != "act" or reply.get("seq") != self.seq:
            raise RuntimeError(f"unexpected reply {reply.get('t')}: {reply.get('msg', '')}")
        return took_ms

    def play(self, n: int, frames_T: np.ndarray, steps: int, warmup_steps: int) -> np.ndarray:
        """n games for warmup + steps batches; the timed batches' milliseconds."""
        games = np.arange(self.next_game, self.next_game + n, dtype=np.uint32)
        self.next_game += n
        protocol.send(self.conn, {"t": "new_games", "games": [
            {"game": int(g), "port": 1, "character": "FOX", "opp_character": "FOX", "stage": "BATTLEFIELD"} for g in games]})
        offsets = (np.arange(n) * (len(frames_T) // max(n, 1))) % len(frames_T)
        times = []
        for t in range(warmup_steps + steps):
            took = self.exchange(games, frames_T[(offsets + t) % len(frames_T)], np.full(n, t == 0))
            if t >= warmup_steps:
                times.append(took)
        protocol.send(self.conn, {"t": "end_games", "games": [{"game": int(g), "result": "void"} for g in games]})
        return np.array(times)

    def close(self) -> None:
        try:
            protocol.send(self.conn, {"t": "shutdown", "reason": "bench done"})
            self.proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
        self.conn.close()
        self.dir.cleanup()


def _policy_file(config: UMIBenchConfig, folder: Path) -> tuple[Path, dict]:
    from keras_lstm.model.numpy_policy import NumpyPolicy

    if config.model:
        from keras_lstm.training.run_folder import load_run

        policy, run_info = load_run(config.model)
        about = {"model": config.model, "delay": int(run_info["config"].get("delay", 0))}
    else:
        from keras_lstm.model.policy import build_policy

        policy = build_policy(**config.training.model.policy_args())
        about = {"model": None, "delay": 0}
    numpy_policy = NumpyPolicy.from_keras(policy)
    path = folder / "policy.npz"
    numpy_policy.save(path)
    about.update(cell_type=numpy_policy.cell_type, hidden_size=numpy_policy.hidden_size, num_layers=numpy_policy.num_layers,
                 parameters=int(policy.count_params()))
    return path, about


def _stats(times_ms: np.ndarray) -> dict:
    return {"median_ms": float(np.median(times_ms)), "p99_ms": float(np.percentile(times_ms, 99)), "max_ms": float(times_ms.max()),
            "batches": int(len(times_ms))}


def run(config: UMIBenchConfig, on_row=None) -> dict:
    frames = real_frames(config.replay)
    with tempfile.TemporaryDirectory(prefix="keras-lstm-bench-umi-") as tmp:
        policy_path, about = _policy_file(config, Path(tmp))
        max_games = max(config.sizes)
        bots = {"echo": BotProcess(["echo"], max_games, config.threads),
                "policy": BotProcess(["policy", str(policy_path), str(about["delay"])], max_games, config.threads)}
        rows = []
        try:
            for n in config.sizes:
                row = {"games": n}
                for name, bot in bots.items():
                    row[name] = _stats(bot.play(n, frames, config.steps, config.warmup_steps))
                row["policy_over_echo_median"] = row["policy"]["median_ms"] / row["echo"]["median_ms"]
                rows.append(row)
                if on_row:
                    on_row(row)
            startup = {name: bot.startup_s for name, bot in bots.items()}
        finally:
            for bot in bots.values():
                bot.close()
    by_n = {r["games"]: r for r in rows}
    targets = {}
    if 1 in by_n:
        targets["batch_1_p99_ms"] = {"target": TARGET_BATCH_1_P99_MS, "measured": by_n[1]["policy"]["p99_ms"]}
    if 256 in by_n:
        targets["batch_256_p99_ms"] = {"target": TARGET_BATCH_256_P99_MS, "measured": by_n[256]["policy"]["p99_ms"]}
    for t in targets.values():
        t["met"] = t["measured"] <= t["target"]
    return {"benchmark": "umi", "settings": {**flat_settings(config), "threads": config.threads}, "policy": about,
            "rows": rows, "startup_s": startup, "targets": targets, "machine": machine_info()}


def format_table(result: dict) -> str:
    p = result["policy"]
    lines = [
        f"UMI reply time through the socket: {p['num_layers']}x{p['hidden_size']} {p['cell_type'].upper()} policy "
        f"({p['parameters']:,} parameters) beside an echo bot; {result['rows'][0]['policy']['batches']} batches per N, real frames",
        f"machine: {result['machine'].get('cpu')}, {result['machine'].get('cores')} cores "
        f"({', '.join(result['machine'].get('cpu_features', [])) or 'no AVX2/AVX-512 flags'}); bots' BLAS threads: "
        f"{result['settings']['threads'] or 'one per core'}",
        "",
        "| games N | echo median ms | echo p99 ms | policy median ms | policy p99 ms | policy / echo (median) |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        e, q = r["echo"], r["policy"]
        lines.append(f"| {r['games']} | {e['median_ms']:.3f} | {e['p99_ms']:.3f} | {q['median_ms']:.3f} | {q['p99_ms']:.3f} | {r['policy_over_echo_median']:.1f} |")
    lines.append("")
    for name, t in result["targets"].items():
        lines.append(f"{name}: {t['measured']:.2f} ms (target <= {t['target']:.1f}: {'met' if t['met'] else 'NOT met'})")
    lines.append(f"start-up (launch to ready): echo {result['startup_s']['echo']:.2f} s, policy {result['startup_s']['policy']:.2f} s")
    return "\n".join(lines)
