"""`keras-lstm bench data`: parsing, the prepared dataset, and the input
pipeline against training consumption."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from keras_lstm.cli.common import one_line_errors, print_json


@one_line_errors
def data(
    replays: Annotated[Optional[Path], typer.Option(help="Folder of .slp replays. Default: ../shared/replays/games next to the repository.")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="Where to prepare the dataset (default: a temporary folder, removed after).")] = None,
    repeats: Annotated[int, typer.Option(help="Measurements per figure (the median is reported).")] = 5,
    json_output: Annotated[bool, typer.Option("--json", help="Print the results as one JSON object.")] = False,
):
    """Parsing + features (frames/s), dataset size per hour of play, read throughput, and pipeline/training ratio."""
    import tensorflow_datasets as tfds

    from keras_lstm.benchmarks.data import format_report, run
    from keras_lstm.model.backbone import check_positive

    check_positive(repeats=repeats)
    tfds.disable_progress_bar()
    results = run(replays, data_dir, repeats=repeats, log=lambda line: typer.echo(line, err=True))
    if json_output:
        print_json(results)
    else:
        typer.echo(format_report(results))
