"""`keras-lstm bench serve`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from keras_lstm.cli.common import one_line_errors, print_json
from keras_lstm.cli.options import config_options, parse_counts


def parse_batches(text: str) -> tuple[int, ...]:
    return parse_counts(text, "--batches", "1,8,64,256,1024")


@one_line_errors
@config_options(("backbone", "embed_size", "hidden_size", "num_layers"))
def serve(
    options: dict,
    model: Annotated[Optional[Path], typer.Option(help="Time a trained run instead of a freshly initialised policy of the given sizes.")] = None,
    batches: Annotated[str, typer.Option(help="Games per step call, comma-separated.")] = "1,8,64,256,1024",
    seconds: Annotated[float, typer.Option(help="Timed seconds per batch and variant (at least 30 calls).")] = 1.0,
    intra_op_threads: Annotated[int, typer.Option(help="TensorFlow threads within an op in the export's timing processes (TF Serving's "
                                                  "--tensorflow_intra_op_parallelism); 0: one per core.")] = 0,
    inter_op_threads: Annotated[int, typer.Option(help="TensorFlow threads running ops side by side there (TF Serving's "
                                                  "--tensorflow_inter_op_parallelism); 0: TensorFlow's default.")] = 0,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
):
    """Games one exported policy serves: the step signature at each batch (plain and --xla exports, each loaded
    without project code in its own process), serving_default at batch 1, and the numpy PolicyStepper."""
    from keras_lstm.benchmarks.serve import ServeBenchConfig, format_table, run
    from keras_lstm.config import TrainConfig
    from keras_lstm.model.backbone import check_positive

    check_positive(seconds=seconds)
    if seconds > 3600:  # per batch and variant: a larger budget never ends in practice
        raise ValueError(f"--seconds must be at most 3600 (per batch and variant), got {seconds:g}")
    if intra_op_threads < 0 or inter_op_threads < 0:
        raise ValueError(f"--intra-op-threads and --inter-op-threads must be 0 (TensorFlow's default) or more, got {intra_op_threads}, {inter_op_threads}")
    options["backbone"] = options["backbone"].lower()
    config = ServeBenchConfig(training=TrainConfig.from_flat(**options), model=str(model) if model else None,
                              batches=parse_batches(batches), budget_s=seconds,
                              intra_op_threads=intra_op_threads, inter_op_threads=inter_op_threads)
    result = run(config, log=lambda line: typer.echo(line, err=True))
    if json_output:
        print_json(result)
    else:
        typer.echo(format_table(result))
