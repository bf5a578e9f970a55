"""`keras-lstm bench gpu`."""

from __future__ import annotations

from typing import Annotated

import typer

from keras_lstm.cli.common import one_line_errors, print_json


@one_line_errors
def gpu(
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
):
    """On a GPU: training frames/s of stock Keras fit (cuDNN) against ours, full and truncated, by each recurrent
    implementation, float32, bfloat16 matmuls and mixed precision, at batch 64 and 512; the export's step throughput;
    the device. Without a GPU: says so, exits 0."""
    from keras_lstm.benchmarks.gpu import GpuBenchConfig, format_report, run

    result = run(GpuBenchConfig(), log=lambda line: typer.echo(line, err=True))
    if json_output:
        print_json(result)
    else:
        typer.echo(format_report(result))
