"""`keras-lstm bench train-speed`: training frames/s and peak memory of stock
Keras `fit` against our training path, full and truncated BPTT."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from keras_lstm.cli.common import one_line_errors, print_json
from keras_lstm.cli.options import config_options
from keras_lstm.config import WINDOW_FRAMES
from keras_lstm.files import atomic


@one_line_errors
@config_options(("embed_size", "hidden_size", "num_layers", "window_size", "batch_size", "truncate_bptt"), defaults={"truncate_bptt": 15, "window_size": WINDOW_FRAMES})
def train_speed(
    options: dict,
    cells: Annotated[str, typer.Option(help="Comma-separated cell types to measure: lstm, gru.")] = "lstm,gru",
    rounds: Annotated[int, typer.Option(help="Rounds in which the variants take turns (after warm-up).")] = 6,
    steps_per_round: Annotated[int, typer.Option(help="Timed training steps per variant per round.")] = 5,
    memory: Annotated[bool, typer.Option(help="Measure peak memory (one subprocess per variant).")] = True,
    quick: Annotated[bool, typer.Option(help="Tiny sizes and few steps: checks that the benchmark runs; its numbers mean nothing.")] = False,
    save: Annotated[Optional[Path], typer.Option(help="Also write the results as JSON to this file.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the results as one JSON object instead of the table.")] = False,
):
    """Frames/s and peak memory of (a) stock Keras model.fit, (b) our train_step with full BPTT, (c) with truncate_bptt=K, side by side on the same random data."""
    from keras_lstm.benchmarks.train_speed import TrainSpeedConfig, format_table, run_train_speed

    chosen = dict(cells=tuple(c.strip().lower() for c in cells.split(",") if c.strip()), memory=memory)
    if quick:
        config = TrainSpeedConfig.quick(**chosen)
    else:
        config = TrainSpeedConfig.from_options(**chosen, **options, rounds=rounds, steps_per_round=steps_per_round)
    results = run_train_speed(config, log=lambda line: typer.echo(line, err=True))
    if save is not None:
        save.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_json(save, results)  # whole or not at all
    if json_output:
        print_json(results)
    else:
        typer.echo(format_table(results))
