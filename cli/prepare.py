"""`keras-lstm prepare`: a replay folder -> a TensorFlow Datasets dataset, once."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from keras_lstm.cli.common import one_line_errors, print_json, print_skip, print_warning
from keras_lstm.cli.options import config_options
from keras_lstm.data.prepared import BEAM_MIN_FILES


FILTER_OPTIONS = ("min_frames", "min_slippi_version", "humans_only", "stages", "characters", "opponents")  # ReplayFilter.from_options' order


@one_line_errors
@config_options(("val_fraction", "seed", *FILTER_OPTIONS))
def prepare(
    options: dict,
    replays: Annotated[Optional[Path], typer.Option(help="Folder of .slp replays (searched recursively). Default: $KERAS_LSTM_REPLAYS, then ~/Slippi.")] = None,
    data_dir: Annotated[Path, typer.Option(help="TFDS data folder to write `slippi_replays` into (then `keras-lstm train --data-dir` it).")] = Path("~/tensorflow_datasets"),
    workers: Annotated[Optional[int], typer.Option(
        help="Processes that parse replays, on Apache Beam's local runner (needs keras-lstm[beam]); never more than the parts "
             f"to build. Default: every core when Beam is installed and there are at least {BEAM_MIN_FILES} files to parse, else 1.")] = None,
    beam_options: Annotated[Optional[str], typer.Option(
        help="Apache Beam pipeline options, e.g. \"--runner=FlinkRunner --flink_master=host:8081\": run the parts on that "
             "runner instead (its workers must see --replays and --data-dir at the same paths). An option Beam does not know is refused.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    json_output: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")] = False,
):
    """Parse a replay folder once into a TFDS dataset (train/validation by game).

    Unusable files are skipped and named. Preparing again parses only what changed: added
    files go into new parts, a changed or removed file's part is made again, an unchanged
    folder is a no-op; a listed part found missing or cut short is made again, said. The
    dataset stays usable throughout: a training reading it keeps the parts it started with.
    One prepare at a time per data dir.
    """
    import tensorflow_datasets as tfds
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from keras_lstm.data.filters import ReplayFilter
    from keras_lstm.data.replays import display_name
    from keras_lstm.data.replays import replays_or_default
    from keras_lstm.data.prepared import prepare as prepare_dataset
    from keras_lstm.evaluation.report import format_prepare_summary

    tfds.disable_progress_bar()  # ours counts files, TFDS's would count examples without a total
    replay_filter = ReplayFilter.from_options(*(options[name] for name in FILTER_OPTIONS))
    folder = replays_or_default(replays)
    bar = Progress(
        TextColumn("preparing"), BarColumn(), MofNCompleteColumn(), TextColumn("files"), TimeRemainingColumn(),
        transient=True, disable=not progress,
        # Bound now: TFDS's chatter is silenced by sending stdout to /dev/null
        # while it generates, which would swallow the bar and the skip lines.
        # stderr, like `print_skip`: stdout keeps only the summary (`--json`).
        console=Console(file=sys.stderr),
    )
    task = None

    def on_start(n_files: int) -> None:
        nonlocal task
        bar.start()
        task = bar.add_task("prepare", total=n_files)

    def on_file(name: str, reason: str | None) -> None:
        if reason is not None:
            name = display_name(name)  # a name that is not UTF-8 prints as \xHH
            if progress:
                bar.console.print(f"[yellow]skipped {escape(name)}: {escape(reason)}[/yellow]", highlight=False, soft_wrap=True)
            else:
                print_skip(name, reason)
        if task is not None:
            bar.advance(task)

    def on_repair(line: str) -> None:  # found before parsing starts: the bar is not yet on
        print_warning(display_name(line))

    try:
        beam_flags = shlex.split(beam_options or "")
    except ValueError as err:  # "No closing quotation"
        raise ValueError(f"--beam-options: {err}") from None
    try:
        summary = prepare_dataset(
            folder, data_dir.expanduser(), options["val_fraction"], options["seed"], on_file=on_file, on_start=on_start,
            replay_filter=replay_filter, workers=workers, beam_options=beam_flags, on_repair=on_repair,
        )
    finally:
        bar.stop()
    if json_output:
        print_json(summary)
        return
    typer.echo(format_prepare_summary(summary, folder))
    if summary["parts_repaired"]:
        typer.echo(f"repaired: {summary['parts_repaired']} damaged parts made again")
    if summary["parts_held_by_readers"]:
        typer.echo(f"kept for now: {len(summary['parts_held_by_readers'])} replaced parts still read by a running "
                   "process (the next prepare removes them)")
