"""`keras-lstm bench inference`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from keras_lstm.cli.common import one_line_errors, print_json


@one_line_errors
def inference(
    backbone: Annotated[str, typer.Option(help="Recurrent backbone: lstm or gru.")] = "lstm",
    hidden_size: Annotated[int, typer.Option(help="Units per recurrent layer.")] = 256,
    num_layers: Annotated[int, typer.Option(help="Stacked recurrent layers.")] = 2,
    embed_size: Annotated[int, typer.Option(help="Width of each encoded frame.")] = 128,
    window_size: Annotated[int, typer.Option(help="Frames in the naive window re-run.")] = 60,
    iterations: Annotated[int, typer.Option(help="Timed calls per per-frame path.")] = 2000,
    window_iterations: Annotated[int, typer.Option(help="Timed calls of the window paths.")] = 200,
    replay: Annotated[Optional[Path], typer.Option(help="Replay whose libmelee game states feed the whole-policy row. Default: the first .slp under $KERAS_LSTM_REPLAYS or ~/Slippi.")] = None,
    model: Annotated[Optional[Path], typer.Option(help="Time a trained run instead of a freshly initialised policy (same sizes: latency does not depend on weight values).")] = None,
    tf_threads: Annotated[int, typer.Option(help="TensorFlow intra- and inter-op threads (0: TensorFlow's default). 1 is often faster at batch 1 on a busy CPU.")] = 0,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
):
    """Per-frame inference latency at batch 1: step, stateful twin, SavedModel signatures, whole policy, window re-run; and what the NaN/inf input checks cost (checked vs unchecked, side by side)."""
    from keras_lstm.benchmarks.inference import BenchConfig, format_table, run
    from keras_lstm.model.backbone import CELL_TYPES, check_positive

    if backbone.lower() not in CELL_TYPES:
        raise ValueError(f"backbone must be one of {CELL_TYPES}, got {backbone!r}")
    check_positive(**{"hidden-size": hidden_size, "num-layers": num_layers, "embed-size": embed_size, "window-size": window_size, "iterations": iterations, "window-iterations": window_iterations})
    if tf_threads < 0:
        raise ValueError(f"--tf-threads must be >= 0, got {tf_threads}")
    if replay is not None and not replay.is_file():
        raise FileNotFoundError(f"{replay}: no such replay file")
    config = BenchConfig(
        cell_type=backbone.lower(),
        hidden_size=hidden_size,
        num_layers=num_layers,
        embed_size=embed_size,
        window_size=window_size,
        iterations=iterations,
        window_iterations=window_iterations,
        replay=str(replay) if replay else None,
        model=str(model) if model else None,
        tf_threads=tf_threads,
    )
    on_row = None if json_output else (lambda r: typer.echo(f"  {r['name']}: median {r['median_ms'] if r['median_ms'] is None else round(r['median_ms'], 3)} ms", err=True))
    result = run(config, on_row=on_row)
    if json_output:
        print_json(result)
    else:
        typer.echo(format_table(result))
