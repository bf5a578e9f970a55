"""The training benchmark protocol behind `keras-lstm bench train`: run every
configuration, each in its own process, and write the results and report.

One fixed, small protocol (`keras_lstm.benchmarks.protocol`: same replay
split, seed, epochs, batch, window) run for every configuration, each in its
own subprocess (`keras_lstm.benchmarks.worker`) so that its peak memory is
its own:

- backbones: LSTM and GRU at `hidden_size` x `num_layers`, full BPTT;
- truncated BPTT: the LSTM with full BPTT and with K = 20, 15, 10;
- the train/deploy gap: every trained model evaluated on the validation games
  as trained (windows from the zero state) and as deployed (each whole game
  stepped with the state carried from its first frame,
  `keras_lstm.evaluation.deploy_eval`); then, if the LSTM's deployed loss is more than
  5 % above its windowed loss (or when asked), the LSTM trained with the
  state carried across consecutive segments (`keras_lstm.training.carried_training`).

`results.json` holds every number, `report.md` the tables
(`keras_lstm.benchmarks.report`), beside the plots. Timings on a shared
machine are noisy: compare ratios within one run.

    results = run_protocol(full_protocol("../shared/replays/games"), "bench/")
    print(format_markdown(results))
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from keras_lstm.benchmarks.measure import load_average, machine_info
from keras_lstm.benchmarks.protocol import Protocol, carried_decision
from keras_lstm.benchmarks.report import format_markdown, write_plots
from keras_lstm.data.replays import find_replays
from keras_lstm.files import atomic

RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"


def _run_in_subprocess(spec: dict, work: Path, timeout_s: float) -> dict:
    """Run `keras_lstm.benchmarks.worker` on `spec`; its result, or the
    configuration with the error and the worker's log."""
    spec_path = work / f"{spec['name']}.spec.json"
    result_path = work / f"{spec['name']}.result.json"
    log_path = work / f"{spec['name']}.log"
    spec_path.write_text(json.dumps(spec, indent=1))
    result_path.unlink(missing_ok=True)
    env = {"TF_CPP_MIN_LOG_LEVEL": "2", **os.environ}
    start = time.perf_counter()
    try:
        with open(log_path, "w") as log:
            proc = subprocess.run(
                [sys.executable, "-m", "keras_lstm.benchmarks.worker", str(spec_path), str(result_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                timeout=timeout_s,
            )
        code = proc.returncode
    except subprocess.TimeoutExpired:
        code = "timeout"
    elapsed = time.perf_counter() - start
    if code == 0 and result_path.exists():
        result = json.loads(result_path.read_text())
        result["process_seconds"] = elapsed
        return result
    tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] if log_path.exists() else []
    reason = f"exit {code}" + (f": {tail[0].strip()}" if tail else "")
    return {"name": spec["name"], "backbone": spec["backbone"], "truncate_bptt": spec["truncate_bptt"], "mode": spec["mode"], "error": reason, "log": str(log_path), "process_seconds": elapsed}


def run_protocol(protocol: Protocol, out_dir: str | Path, log: Callable[[str], None] | None = None) -> dict:
    """Run every configuration of `protocol` (one subprocess each, one after
    another), then write `results.json`, `report.md` and the plots to
    `out_dir`. Returns the results."""
    log = log or (lambda message: None)
    out = Path(out_dir).expanduser()
    if not Path(protocol.replays).is_dir():
        raise NotADirectoryError(f"{protocol.replays}: not a folder of replays")
    if not find_replays(protocol.replays):
        raise ValueError(f"{protocol.replays}: no .slp replays found")
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    results = {
        "protocol": protocol.to_json(),
        "machine": machine_info(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "runs": [],
    }
    start = time.perf_counter()

    def run(spec):
        elapsed = time.perf_counter() - start
        longest = max((r.get("process_seconds", 0) for r in results["runs"]), default=0)
        if protocol.time_budget_s and elapsed + longest > protocol.time_budget_s:
            reason = f"skipped: {elapsed:.0f} s spent, the next run would pass the {protocol.time_budget_s:.0f} s budget"
            log(f"[{elapsed:6.0f} s] {spec['name']}: {reason}")
            results["runs"].append({**spec, "error": reason, "log": "-"})
            return
        spec = {
            **spec,
            "config": protocol.train_config(spec, str(out / "runs" / spec["name"])),
            "latency_steps": protocol.latency_steps,
        }
        log(f"[{time.perf_counter() - start:6.0f} s] {spec['name']}: training ...")
        timeout = protocol.worker_timeout_s
        if protocol.time_budget_s:
            timeout = min(timeout, max(60.0, protocol.time_budget_s - elapsed))
        result = _run_in_subprocess(spec, work, timeout)
        if "error" in result:
            log(f"[{time.perf_counter() - start:6.0f} s] {spec['name']}: FAILED ({result['error']}; log {result['log']})")
        else:
            gap = f", deployed/windowed {result['deploy']['gap_ratio']:.3f}x" if result.get("deploy") else ""
            log(
                f"[{time.perf_counter() - start:6.0f} s] {spec['name']}: val loss {result['val_loss']:.4f}, "
                f"step {result['step_ms_median']:.1f} ms, peak {result['peak_rss_fit_mb']:.0f} MB{gap}"
            )
        results["runs"].append(result)
        atomic.write_text(out / RESULTS_FILE, json.dumps(results, indent=1, default=str))

    for spec in protocol.runs():
        run(spec)
    decision = carried_decision(protocol.carried_state, next((r for r in results["runs"] if r["name"] == "lstm_full"), None))
    results["carried_decision"] = decision
    log(f"[{time.perf_counter() - start:6.0f} s] carried-state training: {decision['reason']}")
    if decision["run"]:
        run(protocol.carried_run())
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    results["total_seconds"] = time.perf_counter() - start
    results["machine"]["load_average_end"] = load_average()
    results["plots"] = write_plots(results, out)
    atomic.write_text(out / RESULTS_FILE, json.dumps(results, indent=1, default=str))  # whole or not at all
    atomic.write_text(out / REPORT_FILE, format_markdown(results))
    return results
