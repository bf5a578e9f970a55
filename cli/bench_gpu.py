"""`keras-lstm bench gpu`."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Optional

import typer

from keras_lstm.cli.common import one_line_errors, print_json

BACKENDS = ("tensorflow", "jax")


@one_line_errors
def gpu(
    backend: Annotated[str, typer.Option(help="The Keras backend to measure: tensorflow (where TensorFlow sees a GPU) or jax.")] = "tensorflow",
    batches: Annotated[Optional[str], typer.Option(help="jax: comma-separated batch sizes (default 64,256,1024,4096).")] = None,
    dtypes: Annotated[Optional[str], typer.Option(help="jax: comma-separated compute dtypes, float32 and/or bfloat16 (default both).")] = None,
    quick: Annotated[bool, typer.Option(help="jax: tiny sizes and few steps, to check that it runs.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
):
    """Training frames/s on a GPU against stock Keras fit. tensorflow: ours by each recurrent implementation, float32,
    bfloat16 matmuls and mixed precision, batch 64 and 512, and the export's step throughput; without a GPU it says so
    and exits 0. jax: ours under fit (full BPTT, truncated, the loss on every frame) against stock keras.layers.LSTM,
    float32 and bfloat16, batch 64 to 4,096, and which LSTM kernel ran (cuDNN or the fallback), on whatever device JAX
    has (docs/GPU.md)."""
    if backend not in BACKENDS:
        raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "jax":
        result = _run_jax(batches, dtypes, quick)
        from keras_lstm.benchmarks.fit_speed import format_report
    else:
        if batches is not None or dtypes is not None or quick:
            raise ValueError("--batches, --dtypes and --quick apply to --backend jax")
        from keras_lstm.benchmarks.gpu import GpuBenchConfig, format_report, run

        result = run(GpuBenchConfig(), log=lambda line: typer.echo(line, err=True))
    if json_output:
        print_json(result)
    else:
        typer.echo(format_report(result))


def _run_jax(batches: str | None, dtypes: str | None, quick: bool) -> dict:
    """`keras_lstm.benchmarks.fit_speed` in a process of its own under
    `KERAS_BACKEND=jax` (a process picks its backend once, at import)."""
    if importlib.util.find_spec("jax") is None:
        raise ValueError("--backend jax needs JAX: pip install -e '.[jax]' (CPU), or a CUDA build of JAX for a GPU (docs/GPU.md)")
    from keras_lstm.benchmarks.fit_speed import FitSpeedConfig

    FitSpeedConfig.from_options(batches, dtypes, quick)  # bad options: one line here, before a process starts
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, "-m", "keras_lstm.benchmarks.fit_speed", "--json", str(out)]
        command += ["--batches", batches] if batches else []
        command += ["--dtypes", dtypes] if dtypes else []
        command += ["--quick"] if quick else []
        env = {**os.environ, "KERAS_BACKEND": "jax"}
        last = ""
        with subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as process:
            for line in process.stderr:  # its progress, as it comes
                typer.echo(line.rstrip("\n"), err=True)
                last = line.strip() or last
        if process.returncode != 0 or not out.exists():
            raise RuntimeError(f"the JAX benchmark process failed (exit {process.returncode}): {last[:300]}")
        return json.loads(out.read_text())
