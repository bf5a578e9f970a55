"""`keras-lstm bench evaluate`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from keras_lstm.cli.common import one_line_errors, print_json


@one_line_errors
def evaluate(
    model: Annotated[Path, typer.Option(help="Run folder written by `keras-lstm train`.")],
    replays: Annotated[Optional[Path], typer.Option(help="Games to evaluate on (default: the run's own validation games).")] = None,
    windows_max_frames: Annotated[int, typer.Option(help="Frames of the same games the windowed side evaluates (it is slow).")] = 100_000,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
):
    """Evaluation in one pass with the state carried against evaluation on windows, side by side: frames/s, s per 1M frames, peak memory."""
    from keras_lstm.benchmarks.evaluation import EvaluationBenchConfig, format_table, run
    from keras_lstm.model.backbone import check_positive

    check_positive(**{"windows-max-frames": windows_max_frames})
    result = run(EvaluationBenchConfig(str(model), str(replays) if replays else None, windows_max_frames))
    if json_output:
        print_json(result)
    else:
        typer.echo(format_table(result))
