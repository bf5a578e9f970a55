"""`keras-lstm bench data`: parsing, the prepared dataset, and the input
pipeline against training consumption."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from keras_lstm.cli.common import one_line_errors, print_json


def parse_counts(text: str) -> list[int]:
    """`--copies`' value: positive whole numbers, comma-separated."""
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise ValueError(f"--copies must be positive whole numbers separated by commas (e.g. 26,260,1300), got {text!r}")
    return counts


@one_line_errors
def data(
    replays: Annotated[Optional[Path], typer.Option(help="Folder of .slp replays. Default: ../shared/replays/games next to the repository.")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="Where to prepare the dataset (default: a temporary folder, removed after).")] = None,
    repeats: Annotated[int, typer.Option(help="Measurements per figure (the median is reported).")] = 5,
    json_output: Annotated[bool, typer.Option("--json", help="Print the results as one JSON object.")] = False,
    copies: Annotated[
        Optional[str],
        typer.Option(
            help="Instead: how prepare and training scale, on N linked copies of the replays for each N of a comma-separated list "
            "(e.g. 26,260,1300): time, CPU use and memory of prepare, memory and first step of train --data-dir and --replays."
        ),
    ] = None,
    added: Annotated[int, typer.Option(help="With --copies: files added to each prepared folder before preparing it again.")] = 13,
):
    """Parsing + features (frames/s), dataset size per hour of play, read throughput, and pipeline/training ratio
    (or, with --copies, how prepare and training scale with the number of replays)."""
    import tensorflow_datasets as tfds

    from keras_lstm.benchmarks.data import format_report, run
    from keras_lstm.model.backbone import check_positive

    check_positive(repeats=repeats, added=added)
    tfds.disable_progress_bar()
    if copies is not None:
        from keras_lstm.benchmarks import scale
        from keras_lstm.benchmarks.measure import default_replays

        counts = parse_counts(copies)
        result = scale.run(replays or default_replays(), counts, added=added, log=lambda line: typer.echo(line, err=True))
        if json_output:
            print_json(result)
        else:
            typer.echo(scale.format_table(result))
        return
    results = run(replays, data_dir, repeats=repeats, log=lambda line: typer.echo(line, err=True))
    if json_output:
        print_json(results)
    else:
        typer.echo(format_report(results))
