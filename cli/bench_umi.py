"""`keras-lstm bench umi`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from keras_lstm.cli.common import one_line_errors, print_json
from keras_lstm.cli.options import config_options, parse_counts


def parse_sizes(text: str) -> tuple[int, ...]:
    return parse_counts(text, "--games", "1,8,256", most=256)  # 256: the arena's largest batch


@one_line_errors
@config_options(("backbone", "embed_size", "hidden_size", "num_layers"))
def umi(
    options: dict,
    model: Annotated[Optional[Path], typer.Option(help="Time a trained run instead of a freshly initialised policy of the given sizes.")] = None,
    games: Annotated[str, typer.Option(help="Games per batch (N), comma-separated.")] = "1,8,32,64,128,256",
    steps: Annotated[int, typer.Option(help="Timed batches per N and bot.")] = 300,
    replay: Annotated[Optional[Path], typer.Option(help="Replay whose frames the arena sends. Default: the first .slp under $KERAS_LSTM_REPLAYS or ~/Slippi.")] = None,
    threads: Annotated[Optional[int], typer.Option(help="BLAS threads in the bots (default: one per core, as the arena sets them).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
):
    """UMI reply time through the real socket at N games per batch: a keras-lstm bot (numpy, no TensorFlow) beside an echo bot."""
    from keras_lstm.benchmarks.umi import UMIBenchConfig, format_table, run
    from keras_lstm.config import TrainConfig
    from keras_lstm.model.backbone import check_positive

    check_positive(steps=steps)
    if steps > 100_000:
        raise ValueError(f"--steps must be at most 100000, got {steps}")
    if threads is not None:
        check_positive(threads=threads)
    options["backbone"] = options["backbone"].lower()
    config = UMIBenchConfig(training=TrainConfig.from_flat(**options), model=str(model) if model else None, sizes=parse_sizes(games),
                            steps=steps, replay=str(replay) if replay else None, threads=threads)
    on_row = None if json_output else (lambda r: typer.echo(f"  N={r['games']}: policy p99 {r['policy']['p99_ms']:.2f} ms, echo p99 {r['echo']['p99_ms']:.2f} ms", err=True))
    result = run(config, on_row=on_row)
    if json_output:
        print_json(result)
    else:
        typer.echo(format_table(result))
