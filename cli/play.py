"""`keras-lstm play`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from keras_lstm.cli.common import one_line_errors, print_json


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
    sample: Annotated[
        bool,
        typer.Option("--sample", help="Act by sampling from the predicted distributions (buttons: Bernoulli, sticks and shoulder: categorical) instead of pressing the most likely value."),
    ] = False,
    temperature: Annotated[
        Optional[float],
        typer.Option(help="With --sample: divide the logits by T > 0 before sampling (1.0, the default: the policy's own distributions; smaller: closer to the most likely value; larger: more random)."),
    ] = None,
    seed: Annotated[Optional[int], typer.Option(help="With --sample: seed of the random draws, so that a run repeats (default 0).")] = None,
    keep_bias: Annotated[
        Optional[float],
        typer.Option(help="Keep the previous input unless a change is e^B times as likely (B in nats, >= 0; default 0: plain argmax or sampling), "
                          "folded into the heads' weights. Run folders only: a SavedModel keeps the bias it was exported with "
                          "(keras-lstm export --keep-bias). keras-lstm evaluate shows the accuracy at several biases; docs/QUALITY.md."),
    ] = None,
):
    """Run a policy frame by frame, from a replay (scored against the human, also on the frames where the
    human's input changes) or live in Dolphin; acting on the most likely value of each head, or sampled (--sample)."""
    from keras_lstm.serving import play as play_lib
    from keras_lstm.serving.play import check_play_options

    check_play_options(port, replay, dolphin, iso, max_frames, sample, temperature, seed, keep_bias, opponent_port)  # before the model loads
    agent = play_lib.load_agent(model, play_lib.make_sampler(sample, temperature, seed), keep_bias or 0.0)
    if replay is not None:
        report = play_lib.play_replay(agent, replay, port, max_frames=max_frames)
        if json_output:
            print_json(report.to_json())
        else:
            typer.echo(play_lib.format_report(report))
        return
    summary = play_lib.play_dolphin(agent, dolphin, iso, port, opponent_port, character, stage, max_frames=max_frames)
    print_json(summary)
