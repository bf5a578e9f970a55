"""`keras-lstm play`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.common import one_line_errors, print_json


@one_line_errors
def play(
    model: Annotated[Path, typer.Option(help="Run folder from `keras-lstm train`, or a SavedModel from `keras-lstm export` (a version folder, or a name folder: its highest version).")],
    port: Annotated[int, typer.Option(help="Controller port (1-4) the policy plays.")],
    replay: Annotated[Optional[Path], typer.Option(help="Drive the policy from this .slp replay through libmelee's replay console.")] = None,
    dolphin: Annotated[Optional[Path], typer.Option(help="Play live instead: the Slippi Dolphin folder or executable (needs --iso).")] = None,
    iso: Annotated[Optional[Path], typer.Option(help="Melee 1.02 ISO, for --dolphin.")] = None,
    opponent_port: Annotated[int, typer.Option(help="With --dolphin: port of the CPU opponent.")] = 2,
    character: Annotated[str, typer.Option(help="With --dolphin: the policy's character (libmelee name, e.g. FOX).")] = "FOX",
    stage: Annotated[str, typer.Option(help="With --dolphin: the stage (libmelee name, e.g. FINAL_DESTINATION).")] = "FINAL_DESTINATION",
    max_frames: Annotated[Optional[int], typer.Option(help="Stop after this many frames.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False,
):
    """Run a policy frame by frame, from a replay (scored against the human) or live in Dolphin."""
    from keras_lstm import play as play_lib

    if port not in (1, 2, 3, 4):
        raise ValueError(f"--port must be 1, 2, 3 or 4, got {port}")
    if (replay is None) == (dolphin is None):
        raise ValueError("give exactly one of --replay FILE.slp or --dolphin PATH")
    if dolphin is not None and iso is None:
        raise ValueError("--dolphin needs --iso (a Melee 1.02 ISO)")
    if max_frames is not None and max_frames <= 0:
        raise ValueError(f"--max-frames must be a positive integer, got {max_frames}")
    if replay is not None:
        play_lib.check_replay_path(replay)  # before the model loads: a wrong path fails at once
    agent = play_lib.load_agent(model)
    if replay is not None:
        report = play_lib.play_replay(agent, replay, port, max_frames=max_frames)
        if json_output:
            print_json(report.to_json())
        else:
            typer.echo(play_lib.format_report(report))
        return
    summary = play_lib.play_dolphin(agent, dolphin, iso, port, opponent_port, character, stage, max_frames=max_frames)
    print_json(summary)
