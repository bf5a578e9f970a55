"""`keras-lstm bench train`: the training benchmark protocol (backbones,
truncated BPTT, the train/deploy gap)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from keras_lstm.cli.common import one_line_errors, print_json


@one_line_errors
def train(
    replays: Annotated[Optional[Path], typer.Option(help="Folder of .slp replays. Default: ../shared/replays/games next to the repository.")] = None,
    out: Annotated[Path, typer.Option(help="Output folder: report.md, results.json, PNG plots, the runs and worker logs.")] = Path("runs/bench_train"),
    quick: Annotated[bool, typer.Option(help="A tiny protocol (a minute or two) that checks the benchmark runs; its numbers mean nothing.")] = False,
    max_frames: Annotated[Optional[int], typer.Option(help="Load at most this many frames (the protocol's default: all for the full run).")] = None,
    stride: Annotated[Optional[int], typer.Option(help="Frames between window starts (the protocol's default if not given).")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Epochs per configuration (the protocol's default if not given).")] = None,
    carried_state: Annotated[Optional[str], typer.Option(help="Also train with the state carried across segments: auto (only if the LSTM's deployed loss is > 5% above its windowed loss; the full protocol's default), always (--quick's default), never.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print results.json instead of the Markdown tables.")] = False,
):
    """Train LSTM vs GRU and truncated-BPTT variants under one protocol, each in its own process, and report speed, memory, accuracy and the train/deploy gap."""
    from keras_lstm.benchmarks.measure import default_replays
    from keras_lstm.benchmarks.protocol import full_protocol, quick_protocol
    from keras_lstm.benchmarks.train_protocol import run_protocol

    overrides = {
        k: v
        for k, v in (("max_frames", max_frames), ("stride", stride), ("epochs", epochs), ("carried_state", carried_state and carried_state.lower()))
        if v is not None
    }
    folder = str(replays if replays is not None else default_replays())
    protocol = (quick_protocol if quick else full_protocol)(folder, **overrides)
    protocol.validate()
    results = run_protocol(protocol, out, log=lambda line: typer.echo(line, err=True))
    if json_output:
        print_json(results)
    else:
        typer.echo((out / "report.md").read_text())
    failed = [r["name"] for r in results["runs"] if "error" in r]
    if failed:
        raise typer.Exit(1)
