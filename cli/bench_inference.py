"""`keras-lstm bench inference`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from keras_lstm.cli.common import one_line_errors, print_json
from keras_lstm.cli.options import config_options
from keras_lstm.config import WINDOW_FRAMES


@one_line_errors
@config_options(("backbone", "embed_size", "hidden_size", "num_layers", "window_size"), defaults={"window_size": WINDOW_FRAMES})
def inference(
    options: dict,
    iterations: Annotated[int, typer.Option(help="Timed calls per per-frame path.")] = 2000,
    window_iterations: Annotated[int, typer.Option(help="Timed calls of the window paths.")] = 200,
    replay: Annotated[Optional[Path], typer.Option(help="Replay whose libmelee game states feed the whole-policy row. Default: the first .slp under $KERAS_LSTM_REPLAYS or ~/Slippi.")] = None,
    model: Annotated[Optional[Path], typer.Option(help="Time a trained run instead of a freshly initialised policy (same sizes: latency does not depend on weight values).")] = None,
    tf_threads: Annotated[int, typer.Option(help="TensorFlow intra- and inter-op threads (0: TensorFlow's default). 1 is often faster at batch 1 on a busy CPU.")] = 0,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
):
    """Per-frame inference latency at batch 1: step, stateful twin, SavedModel signatures, whole policy, window re-run; and what the NaN/inf input checks cost (checked vs unchecked, side by side)."""
    from keras_lstm.benchmarks.inference import BenchConfig, format_table, run
    from keras_lstm.config import TrainConfig

    options["backbone"] = options["backbone"].lower()
    config = BenchConfig(
        training=TrainConfig.from_flat(**options),
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
