"""How `prepare` and training scale with the number of replays:
`keras-lstm bench data --copies N[,N...]`.

For each N, a temporary folder of N symbolic links to the replays of a
folder (cycling through them; nothing is copied), then, each in its own
process so that its CPU time and peak memory are its own:

1. `prepare` of the folder as the command does it by default (every core
   on Apache Beam's local runner when installed) and in one process
   (`--workers 1`), each into its own data dir: wall time, CPU time over
   wall time (1.0 = one core busy; Beam's worker processes included), peak
   memory of all its processes together (proportional set size: a page
   shared by several processes counts once; and the plain sum of their
   resident sizes), milliseconds per file, size on disk;
2. the update after `added` more files are linked into the folder:
   prepare's wall and CPU time again, and its share of the full prepare's
   (both default and one-process). Start-up is excluded from every prepare
   timing: the imports are done before the clock starts (Beam's workers'
   own start-up is inside the default prepare's time: it is part of using
   them);
3. `train --data-dir` on that dataset, and 4. `train --replays` on the
   folder, each for `steps` training steps of the default model: peak
   resident memory, and seconds from the process's start to the end of the
   first training step.

    python -m keras_lstm.benchmarks.scale TASK SPEC.json RESULT.json

runs one measurement (`prepare`, `train`) in this process and writes its
result; `run` starts those processes and gathers the table.
"""

from __future__ import annotations

import time

START = time.time()  # before the heavy imports: "from the process's start"

import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402


def link_copies(source: str | Path, folder: str | Path, files: int, prefix: str = "copy") -> int:
    """`files` symbolic links in `folder` to the `.slp` files of `source`,
    cycling through them (`<prefix>00001/name.slp`, ...); returns the bytes
    they point to."""
    from keras_lstm.data.replays import find_replays

    replays = [p for p in find_replays(source) if p.is_file()]
    if not replays:
        raise ValueError(f"{source}: no readable .slp file to copy")
    total = 0
    for i in range(files):
        target = replays[i % len(replays)].resolve()
        link = Path(folder) / f"{prefix}{i // len(replays):05d}" / target.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target)
        total += target.stat().st_size
    return total


def _usage() -> dict:
    """This process's CPU seconds and peak resident memory so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024}


class TreeSampler:
    """Every `interval` seconds, the memory of this process and all its
    descendants (Beam's workers), read from /proc: the peak of their summed
    proportional set sizes and of their summed resident sizes, and the CPU
    seconds each child has used (the last value seen)."""

    def __init__(self, interval: float = 0.1):
        import threading

        self.interval = interval
        self.peak_pss_kb = self.peak_rss_kb = 0
        self.child_cpu_s: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()
        return False

    @property
    def children_cpu_s(self) -> float:
        return sum(self.child_cpu_s.values())

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        parents = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                parents[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
        children: dict[int, list[int]] = {}
        for pid, (ppid, _) in parents.items():
            children.setdefault(ppid, []).append(pid)
        tree, frontier = {os.getpid()}, [os.getpid()]
        while frontier:
            for pid in children.get(frontier.pop(), []):
                if pid not in tree:
                    tree.add(pid)
                    frontier.append(pid)
        pss = rss = 0
        for pid in tree:
            try:
                rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            except OSError:
                continue
            for line in rollup.splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
                elif line.startswith("Rss:"):
                    rss += int(line.split()[1])
            if pid != os.getpid():
                self.child_cpu_s[pid] = parents[pid][1]
        self.peak_pss_kb = max(self.peak_pss_kb, pss)
        self.peak_rss_kb = max(self.peak_rss_kb, rss)


def measure_prepare(spec: dict) -> dict:
    import keras_lstm.data.tfds_dataset  # noqa: F401 - start-up (imports) outside the timing
    from keras_lstm.data import parts, prepared

    parts.beam_available()
    cpu_before, start = _usage()["cpu_s"], time.perf_counter()
    with TreeSampler() as tree:
        summary = prepared.prepare(spec["replays"], spec["data_dir"], workers=spec.get("workers"))
    wall = time.perf_counter() - start
    usage = _usage()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = usage["cpu_s"] - cpu_before + max(tree.children_cpu_s, children.ru_utime + children.ru_stime)
    return {
        "wall_s": wall,
        "cpu_s": cpu,  # prepare's own and its workers', not the imports'
        "cpu_per_wall": cpu / wall,
        "peak_rss_mb": usage["peak_rss_mb"],
        "peak_pss_mb": tree.peak_pss_kb / 1024,
        "peak_rss_sum_mb": tree.peak_rss_kb / 1024,
        "size_bytes": summary["size_bytes"],
        "workers": summary["workers"],
        "files_parsed": summary["files_parsed"],
        "parts": summary["parts"],
    }


def measure_train(spec: dict) -> dict:
    import keras

    from keras_lstm.config import TrainConfig
    from keras_lstm.training.train import train

    first_step = {}

    class FirstStep(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            first_step.setdefault("s", time.time() - START)

    config = TrainConfig.from_flat(**spec["options"])
    train(config, callbacks=[FirstStep()], verbose=0)
    return {"first_step_s": first_step.get("s"), **_usage()}


TASKS = {"prepare": measure_prepare, "train": measure_train}


def _in_process(task: str, spec: dict) -> dict:
    """Run `task` in a fresh Python process; its result."""
    with tempfile.TemporaryDirectory(prefix="keras-lstm-scale-") as tmp:
        spec_file, result_file = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_file.write_text(json.dumps(spec))
        done = subprocess.run(
            [sys.executable, "-m", "keras_lstm.benchmarks.scale", task, str(spec_file), str(result_file)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"bench data --copies: the {task} measurement failed: {last}")
        return json.loads(result_file.read_text())


def run(
    replays: str | Path,
    copies: list[int],
    steps: int = 3,
    train_options: dict | None = None,
    added: int = 13,
    log: Callable[[str], None] = lambda line: None,
) -> dict:
    """The measurements for each number of files in `copies`."""
    rows = []
    for files in copies:
        with tempfile.TemporaryDirectory(prefix="keras-lstm-copies-") as tmp:
            folder, data_dir, runs = Path(tmp) / "replays", Path(tmp) / "data", Path(tmp) / "runs"
            replay_bytes = link_copies(replays, folder, files)
            options = {"epochs": 1, "steps_per_epoch": steps, **(train_options or {})}
            log(f"{files:,} files: prepare ...")
            full = _in_process("prepare", {"replays": str(folder), "data_dir": str(data_dir)})
            log(f"{files:,} files: prepare in one process ...")
            one = _in_process("prepare", {"replays": str(folder), "data_dir": str(Path(tmp) / "data-one"), "workers": 1})
            shutil.rmtree(Path(tmp) / "data-one")
            log(f"{files:,} files: train --data-dir ...")
            from_data = _in_process("train", {"options": {**options, "data_dir": str(data_dir), "output": str(runs / "data")}})
            log(f"{files:,} files: train --replays ...")
            from_replays = _in_process("train", {"options": {**options, "replays": str(folder), "output": str(runs / "replays")}})
            log(f"{files:,} files: prepare after adding {added} ...")
            link_copies(replays, folder, added, prefix="added")
            update = _in_process("prepare", {"replays": str(folder), "data_dir": str(data_dir)})
        rows.append(
            {
                "files": files,
                "replay_bytes": replay_bytes,
                "prepare": {**full, "ms_per_file": 1e3 * full["wall_s"] / files},
                "prepare_one_process": {**one, "ms_per_file": 1e3 * one["wall_s"] / files},
                "update": {**update, "added": added, "wall_share": update["wall_s"] / full["wall_s"],
                           "cpu_share": update["cpu_s"] / full["cpu_s"], "wall_share_one_process": update["wall_s"] / one["wall_s"],
                           "cpu_share_one_process": update["cpu_s"] / one["cpu_s"]},
                "train_data_dir": from_data,
                "train_replays": from_replays,
            }
        )
    return {"replays": str(replays), "steps": steps, "train_options": train_options or {}, "rows": rows}


def format_table(result: dict) -> str:
    lines = [
        f"scaling on linked copies of {result['replays']} (train: {result['steps']} steps of the default model, 1 epoch)",
        "",
        "prepare, by default (workers: processes that parse) and in one process (--workers 1); peak memory of all its processes",
        "| files | replays (GB) | workers | prepare (s) | CPU / wall | peak PSS (MB) | peak RSS sum (MB) | ms per file "
        "| one process: prepare (s) | CPU / wall | peak (MB) | dataset (MB) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        p, o = r["prepare"], r["prepare_one_process"]
        lines.append(
            f"| {r['files']:,} | {r['replay_bytes'] / 1e9:.2f} | {p['workers']} | {p['wall_s']:.1f} | {p['cpu_per_wall']:.2f} "
            f"| {p['peak_pss_mb']:,.0f} | {p['peak_rss_sum_mb']:,.0f} | {p['ms_per_file']:.1f} "
            f"| {o['wall_s']:.1f} | {o['cpu_per_wall']:.2f} | {o['peak_pss_mb']:,.0f} | {p['size_bytes'] / 1e6:,.1f} |"
        )
    lines += [
        "",
        "adding files to the prepared folder, then prepare again (timed inside the process: start-up excluded), and training",
        "| files | added | update (s) | its CPU (s) | share of the full prepare: wall | CPU | of the one-process one: wall | CPU "
        "| train --data-dir peak (MB) | its first step (s) | train --replays peak (MB) | its first step (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        u, d, f = r["update"], r["train_data_dir"], r["train_replays"]
        lines.append(
            f"| {r['files']:,} | {u['added']} | {u['wall_s']:.2f} | {u['cpu_s']:.2f} | {100 * u['wall_share']:.1f} % "
            f"| {100 * u['cpu_share']:.1f} % | {100 * u['wall_share_one_process']:.1f} % | {100 * u['cpu_share_one_process']:.1f} % "
            f"| {d['peak_rss_mb']:,.0f} | {d['first_step_s']:.1f} "
            f"| {f['peak_rss_mb']:,.0f} | {f['first_step_s']:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    task, spec_path, result_path = sys.argv[1:4]
    out = TASKS[task](json.loads(Path(spec_path).read_text()))
    Path(result_path).write_text(json.dumps(out))
