"""`keras-lstm train` and `keras-lstm evaluate`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from keras_lstm.cli.common import one_line_errors, print_json, print_skip, print_warning

ReplaysOption = Annotated[
    Optional[Path],
    typer.Option(help="Folder of .slp replays (searched recursively). Default: $KERAS_LSTM_REPLAYS, then ~/Slippi."),
]


@one_line_errors
def train(
    replays: ReplaysOption = None,
    output: Annotated[Path, typer.Option(help="Run folder: model, checkpoints, logs, metrics. Re-using it resumes a killed run.")] = Path("runs/latest"),
    temporal: Annotated[bool, typer.Option(help="Train on windows of consecutive frames (the only mode; accepted for compatibility).")] = True,
    backbone: Annotated[str, typer.Option(help="Recurrent backbone: lstm or gru.")] = "lstm",
    hidden_size: Annotated[int, typer.Option(help="Units per recurrent layer.")] = 256,
    num_layers: Annotated[int, typer.Option(help="Stacked recurrent layers.")] = 2,
    embed_size: Annotated[int, typer.Option(help="Width of each encoded frame fed to the backbone.")] = 128,
    dropout: Annotated[float, typer.Option(help="Dropout after each recurrent layer.")] = 0.1,
    window_size: Annotated[int, typer.Option(help="Frames per training window.")] = 60,
    truncate_bptt: Annotated[Optional[int], typer.Option(help="Backpropagate through the last K frames only (default: the whole window).")] = None,
    stride: Annotated[int, typer.Option(help="Frames between consecutive window starts.")] = 4,
    delay: Annotated[int, typer.Option(help="Frames of reaction delay: the game state seen is from t-1-delay.")] = 0,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 3,
    batch_size: Annotated[int, typer.Option(help="Windows per batch.")] = 64,
    learning_rate: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-3,
    val_fraction: Annotated[float, typer.Option(help="Fraction of replay files held out for validation.")] = 0.15,
    seed: Annotated[int, typer.Option(help="Seed for the split, initialisation and shuffling.")] = 0,
    max_replays: Annotated[Optional[int], typer.Option(help="Use at most this many replay files (quick runs).")] = None,
    max_frames: Annotated[Optional[int], typer.Option(help="Load at most this many frames (quick runs).")] = None,
    backup_every_steps: Annotated[int, typer.Option(help="Batches between backups a killed run resumes from (also at every epoch's end).")] = 200,
    data_dir: Annotated[Optional[Path], typer.Option(help="Train from a dataset made by `keras-lstm prepare` (instead of --replays).")] = None,
    strategy: Annotated[str, typer.Option(help="Distribution: default, mirrored (local GPUs) or multi-worker (TF_CONFIG; see docs/DATA.md).")] = "default",
    matmul_dtype: Annotated[str, typer.Option(help="Recurrent matmuls in float32, or bfloat16 (faster on CPUs with AVX512_BF16; see docs/TRAINING_SPEED.md).")] = "float32",
    carried_state: Annotated[bool, typer.Option(help="Train as deployed: rows walk through whole games --window-size frames a step, the state carried, the loss on every frame.")] = False,
    carried_streams: Annotated[int, typer.Option(help="With --carried-state: game rows per batch.")] = 32,
    json_output: Annotated[bool, typer.Option("--json", help="Print the final summary as one JSON object.")] = False,
):
    """Train a behavioural-cloning policy on a folder of Slippi replays (or a prepared dataset)."""
    from keras_lstm.evaluation.report import format_summary
    from keras_lstm.training.train import config_from_options
    from keras_lstm.training.train import train as run_training

    config = config_from_options(
        replays,
        data_dir,
        temporal=temporal,
        output=output,
        backbone=backbone,
        embed_size=embed_size,
        hidden_size=hidden_size,
        num_layers=num_layers,
        dropout=dropout,
        window_size=window_size,
        truncate_bptt=truncate_bptt,
        stride=stride,
        delay=delay,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        val_fraction=val_fraction,
        seed=seed,
        max_replays=max_replays,
        max_frames=max_frames,
        backup_every_steps=backup_every_steps,
        strategy=strategy,
        matmul_dtype=matmul_dtype,
        carried_state=carried_state,
        carried_streams=carried_streams,
    )
    summary = run_training(config, on_skip=print_skip, verbose=2 if json_output else "auto", on_warning=print_warning)
    if json_output:
        print_json(summary)
    else:
        typer.echo(format_summary(summary))


@one_line_errors
def evaluate(
    model: Annotated[Path, typer.Option(help="Run folder written by `keras-lstm train` (or its model.keras).")],
    replays: ReplaysOption = None,
    batch_size: Annotated[int, typer.Option(help="Windows per forward pass.")] = 256,
    stride: Annotated[Optional[int], typer.Option(help="Predict every N-th frame (1: every frame). Default: the stride the model trained with.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")] = False,
):
    """Evaluate a trained policy, beside both baselines, on any folder of replays."""
    from keras_lstm.data.replays import replays_or_default
    from keras_lstm.evaluation.report import format_summary
    from keras_lstm.training.train import evaluate_folder

    summary = evaluate_folder(model, replays_or_default(replays), on_skip=print_skip, batch_size=batch_size, stride=stride)
    if json_output:
        print_json(summary)
    else:
        typer.echo(format_summary(summary))
