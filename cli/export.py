"""`keras-lstm export`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from keras_lstm.cli.common import one_line_errors


@one_line_errors
def export(
    model: Annotated[Path, typer.Option(help="Run folder written by `keras-lstm train` (or its model.keras).")],
    name: Annotated[Optional[str], typer.Option(help="Model name: the folder under --base-dir. Default: the run folder's name.")] = None,
    version: Annotated[Optional[int], typer.Option(help="Version number (a new folder; never overwritten). Default: the next free one.")] = None,
    base_dir: Annotated[Path, typer.Option(help="TF Serving model base folder.")] = Path("savedmodels"),
    xla: Annotated[bool, typer.Option(
        help="Compile the one-frame math of serving_default and step with XLA (faster on CPU: keras-lstm bench serve). "
             "TF Serving then needs --xla_cpu_compilation_enabled=true.")] = False,
    keep_bias: Annotated[float, typer.Option(
        help="Keep the previous input unless a change is e^B times as likely (B in nats, >= 0; default 0: plain argmax), "
             "folded into the heads' weights and recorded in keras_lstm.json. keras-lstm evaluate shows the accuracy at several biases; docs/QUALITY.md.")] = 0.0,
):
    """Export a trained policy as a SavedModel for TF Serving: savedmodels/<name>/<version>/."""
    from keras_lstm.serving.export import export_run, format_export_summary

    path = export_run(model, base_dir=base_dir, name=name, version=version, jit_compile=xla, keep_bias=keep_bias)
    typer.echo(format_export_summary(path))
