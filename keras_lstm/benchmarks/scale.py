"""How `prepare` and training scale with the number of replays:
`keras-lstm bench data --copies N[,N...]`.

For each N, a temporary folder of N symbolic links to the replays of a
folder (cycling through them; nothing is copied), then, each in its own
process so that its CPU time and peak memory are its own:

1. `prepare` of the folder: wall time, CPU time over wall time (1.0 = one
   core busy), peak resident memory, milliseconds per file, size on disk;
2. `train --data-dir` on that dataset, and 3. `train --replays` on the
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
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402


def link_copies(source: str | Path, folder: str | Path, files: int) -> int:
    """`files` symbolic links in `folder` to the `.slp` files of `source`,
    cycling through them (`copy00001/name.slp`, ...); returns the bytes they
    point to."""
    from keras_lstm.data.replays import find_replays

    replays = [p for p in find_replays(source) if p.is_file()]
    if not replays:
        raise ValueError(f"{source}: no readable .slp file to copy")
    total = 0
    for i in range(files):
        target = replays[i % len(replays)].resolve()
        link = Path(folder) / f"copy{i // len(replays):05d}" / target.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target)
        total += target.stat().st_size
    return total


def _usage() -> dict:
    """This process's CPU seconds and peak resident memory so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024}


def measure_prepare(spec: dict) -> dict:
    from keras_lstm.data import tfds_dataset

    cpu_before, start = _usage()["cpu_s"], time.perf_counter()
    summary = tfds_dataset.prepare(spec["replays"], spec["data_dir"])
    wall = time.perf_counter() - start
    usage = _usage()
    return {
        "wall_s": wall,
        "cpu_per_wall": (usage["cpu_s"] - cpu_before) / wall,  # prepare's own, not the imports'
        "peak_rss_mb": usage["peak_rss_mb"],
        "size_bytes": summary["size_bytes"],
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
    log: Callable[[str], None] = lambda line: None,
) -> dict:
    """The three measurements for each number of files in `copies`."""
    rows = []
    for files in copies:
        with tempfile.TemporaryDirectory(prefix="keras-lstm-copies-") as tmp:
            folder, data_dir, runs = Path(tmp) / "replays", Path(tmp) / "data", Path(tmp) / "runs"
            replay_bytes = link_copies(replays, folder, files)
            options = {"epochs": 1, "steps_per_epoch": steps, **(train_options or {})}
            log(f"{files:,} files: prepare ...")
            prepared = _in_process("prepare", {"replays": str(folder), "data_dir": str(data_dir)})
            log(f"{files:,} files: train --data-dir ...")
            from_data = _in_process("train", {"options": {**options, "data_dir": str(data_dir), "output": str(runs / "data")}})
            log(f"{files:,} files: train --replays ...")
            from_replays = _in_process("train", {"options": {**options, "replays": str(folder), "output": str(runs / "replays")}})
        rows.append(
            {
                "files": files,
                "replay_bytes": replay_bytes,
                "prepare": {**prepared, "ms_per_file": 1e3 * prepared["wall_s"] / files},
                "train_data_dir": from_data,
                "train_replays": from_replays,
            }
        )
    return {"replays": str(replays), "steps": steps, "train_options": train_options or {}, "rows": rows}


def format_table(result: dict) -> str:
    lines = [
        f"scaling on linked copies of {result['replays']} (train: {result['steps']} steps of the default model, 1 epoch)",
        "| files | replays (GB) | prepare (s) | CPU / wall | prepare peak (MB) | ms per file | dataset (MB) "
        "| train --data-dir peak (MB) | its first step (s) | train --replays peak (MB) | its first step (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        p, d, f = r["prepare"], r["train_data_dir"], r["train_replays"]
        lines.append(
            f"| {r['files']:,} | {r['replay_bytes'] / 1e9:.2f} | {p['wall_s']:.1f} | {p['cpu_per_wall']:.2f} | {p['peak_rss_mb']:,.0f} "
            f"| {p['ms_per_file']:.1f} | {p['size_bytes'] / 1e6:,.1f} | {d['peak_rss_mb']:,.0f} | {d['first_step_s']:.1f} "
            f"| {f['peak_rss_mb']:,.0f} | {f['first_step_s']:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    task, spec_path, result_path = sys.argv[1:4]
    out = TASKS[task](json.loads(Path(spec_path).read_text()))
    Path(result_path).write_text(json.dumps(out))
