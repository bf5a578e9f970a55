"""`keras-lstm train` and `keras-lstm evaluate`."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from keras_lstm.cli.common import one_line_errors, print_json, print_skip, print_warning
from keras_lstm.cli.options import config_options, field_help

ReplaysOption = Annotated[
    Optional[Path],
    typer.Option(help="Folder of .slp replays (searched recursively). Default: $KERAS_LSTM_REPLAYS, then ~/Slippi."),
]


@one_line_errors
@config_options(defaults={"carried_state": True})
def train(
    options: dict,
    replays: ReplaysOption = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="Train from a dataset made by `keras-lstm prepare` (instead of --replays).")] = None,
    output: Annotated[Path, typer.Option(help=field_help("output"))] = Path("runs/latest"),
    temporal: Annotated[
        bool, typer.Option(help="Train on windows of consecutive frames from the zero state: the seed's recipe (the same as --no-carried-state).")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the final summary as one JSON object.")] = False,
):
    """Train a behavioural-cloning policy on a folder of Slippi replays (or a prepared dataset).

    By default on segments of whole games with the state carried (the corpus recipe, docs/QUALITY.md);
    --temporal trains on windows from the zero state (the seed's recipe)."""
    from keras_lstm.evaluation.report import format_summary
    from keras_lstm.training.train import config_from_options
    from keras_lstm.training.train import train as run_training

    config = config_from_options(replays, data_dir, temporal=temporal, output=output, **options)
    if json_output:
        with contextlib.redirect_stdout(sys.stderr):  # Keras' epoch lines: stdout keeps only the JSON object
            summary = run_training(config, on_skip=print_skip, verbose=2, on_warning=print_warning)
        print_json(summary)
    else:
        summary = run_training(config, on_skip=print_skip, verbose="auto", on_warning=print_warning)
        typer.echo(format_summary(summary))


@one_line_errors
def evaluate(
    model: Annotated[Path, typer.Option(help="Run folder written by `keras-lstm train` (or its model.keras).")],
    replays: ReplaysOption = None,
    batch_size: Annotated[int, typer.Option(help="Windows per forward pass.")] = 256,
    stride: Annotated[Optional[int], typer.Option(help="Predict every N-th frame (1: every frame). Default: the stride the model trained with.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")] = False,
    held_out: Annotated[bool, typer.Option(help="Evaluate on the run's own validation games (listed in its run.json) instead of --replays.")] = False,
    training_games: Annotated[
        bool, typer.Option(help="Evaluate on the games the run trained on (listed in its run.json): beside --held-out, how far the policy carries to players it has not seen.")
    ] = False,
    reliability_plot: Annotated[
        Optional[Path],
        typer.Option(help="Also draw the calibration of each head (accuracy against confidence, with bin counts) to this PNG file."),
    ] = None,
    one_pass: Annotated[
        Optional[bool],
        typer.Option("--one-pass/--windows", help="Each game in one pass with the state carried (as deployed), or on windows from the zero state. Default: as the run validated (segments: one pass; --temporal: windows)."),
    ] = None,
):
    """Evaluate a trained policy, beside both baselines, on any folder of replays: loss, accuracy,
    accuracy on change frames (where the input changes), accuracy with a bias toward keeping the
    previous input, and calibration (ECE) per head."""
    from keras_lstm.data.replays import replays_or_default
    from keras_lstm.evaluation.report import format_summary
    from keras_lstm.training.train import evaluate_folder

    if held_out + training_games + (replays is not None) > 1:
        raise ValueError("give one of --replays, --held-out and --training-games")
    games = "training" if training_games else "validation"
    summary = evaluate_folder(
        model, None if held_out or training_games else replays_or_default(replays), on_skip=print_skip, batch_size=batch_size,
        stride=stride, reliability_plot=reliability_plot, run_games=games, one_pass_evaluation=one_pass,
    )
    if json_output:
        print_json(summary)
    else:
        typer.echo(format_summary(summary))
    if reliability_plot is not None:
        typer.echo(f"reliability plot: {reliability_plot}", err=json_output)  # stdout stays one JSON object
