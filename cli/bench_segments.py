"""`keras-lstm bench segments`."""

from __future__ import annotations

from typing import Annotated

import typer

from keras_lstm.cli.common import one_line_errors, print_json
from keras_lstm.cli.options import parse_counts


@one_line_errors
def segments(
    streams: Annotated[str, typer.Option(help="Game rows per batch to time, comma-separated.")] = "32,64,128,256",
    segment_frames: Annotated[str, typer.Option(help="Frames per step (the recipe's --window-size), comma-separated.")] = "60",
    rounds: Annotated[int, typer.Option(help="Rounds in which the shapes take turns (after warm-up).")] = 4,
    steps_per_round: Annotated[int, typer.Option(help="Timed steps per shape per round.")] = 8,
    quick: Annotated[bool, typer.Option(help="Tiny sizes and few steps: checks that the benchmark runs; its numbers mean nothing.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
):
    """Training frames/s of the corpus recipe (segments, the state carried) at several rows and segment lengths, side by side."""
    from keras_lstm.benchmarks.segments import SegmentsBenchConfig, format_table, run
    from keras_lstm.model.backbone import check_positive

    check_positive(rounds=rounds, **{"steps-per-round": steps_per_round})
    if quick:
        config = SegmentsBenchConfig.quick()
    else:
        config = SegmentsBenchConfig(
            streams=parse_counts(streams, "--streams", "32,64,128", most=4096),
            segment_frames=parse_counts(segment_frames, "--segment-frames", "30,60,120", most=3600),
            rounds=rounds, steps_per_round=steps_per_round,
        )
    result = run(config, log=lambda line: typer.echo(line, err=True))
    if json_output:
        print_json(result)
    else:
        typer.echo(format_table(result))
