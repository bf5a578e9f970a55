"""`keras-lstm umi` (serve a policy as a Computer Melee Championship bot) and
`keras-lstm umi bundle` (a submission folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from keras_lstm.cli.common import fail, one_line_errors, print_json, print_warning

ModelOption = Annotated[
    Optional[Path],
    typer.Option(help="Run folder from `keras-lstm train` (or a SavedModel from `keras-lstm export`, for `keras-lstm umi` only)."),
]
SampleOption = Annotated[bool, typer.Option("--sample", help="Act by sampling from the predicted distributions instead of the most likely value.")]
TemperatureOption = Annotated[Optional[float], typer.Option(help="With --sample: divide the logits by T > 0 before sampling (default 1.0).")]
SeedOption = Annotated[Optional[int], typer.Option(help="With --sample: seed of the random draws (default 0).")]
KeepBiasOption = Annotated[
    float, typer.Option(help="Keep the previous input unless a change is e^B times as likely (B in nats, >= 0; default 0), folded into the heads.")
]
CharactersOption = Annotated[
    Optional[str],
    typer.Option(help="Characters the bot declares: trained (default: those the run imitated), ALL, 12, or names such as FOX+FALCO."),
]
NameOption = Annotated[Optional[str], typer.Option(help="The bot's name (default: the run folder's name).")]

umi_app = typer.Typer(
    help="Enter the Computer Melee Championship: serve a trained policy as a UMI bot (umi-melee), or bundle it (docs/UMI.md).",
    no_args_is_help=False,
)


@umi_app.callback(invoke_without_command=True)
@one_line_errors
def umi(
    ctx: typer.Context,
    model: ModelOption = None,
    socket: Annotated[Optional[str], typer.Option(help="The arena's Unix socket (default: $UMI_SOCKET, as the arena sets it).")] = None,
    sample: SampleOption = False,
    temperature: TemperatureOption = None,
    seed: SeedOption = None,
    keep_bias: KeepBiasOption = 0.0,
    characters: CharactersOption = None,
    name: NameOption = None,
):
    """Serve a trained policy as a UMI bot on the arena's socket (umi-conform --cmd "keras-lstm umi --model RUN")."""
    if ctx.invoked_subcommand is not None:
        return
    import os

    import umi as umi_lib

    from keras_lstm.serving.agents import check_decoding_options
    from keras_lstm.serving.umi_bot import DelayMismatch, PolicyBot, bot_class
    from keras_lstm.serving.umi_bundle import check_bot_name, check_umi_delay
    from keras_lstm.serving.umi_policy import load_served_policy

    check_decoding_options(sample, temperature, seed, keep_bias)
    if model is None:
        fail("--model is required: the run folder (or SavedModel) to serve")
    if not (socket or os.environ.get("UMI_SOCKET")):
        fail("no arena socket: give --socket or set UMI_SOCKET (umi-conform and the arena set it)")
    served = load_served_policy(model, sample, temperature, seed, keep_bias, characters, on_warning=print_warning)
    check_umi_delay(served.delay, served.source)
    bot: PolicyBot = bot_class(check_bot_name(name or Path(served.source).resolve().name), served.characters, served.delay)(served.actor)
    try:
        umi_lib.serve(bot, ["--socket", socket] if socket else [])
    except DelayMismatch as err:
        fail(str(err))
    except (ConnectionError, umi_lib.protocol.ProtocolError) as err:
        fail(f"the arena's connection: {err}")


@umi_app.command("bundle")
@one_line_errors
def bundle(
    model: Annotated[Path, typer.Option(help="Run folder from `keras-lstm train`.")],
    out: Annotated[Path, typer.Option(help="The submission folder to write (must not exist).")],
    sample: SampleOption = False,
    temperature: TemperatureOption = None,
    seed: SeedOption = None,
    keep_bias: KeepBiasOption = 0.0,
    characters: CharactersOption = None,
    name: NameOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print what bundle.json records as one JSON object.")] = False,
):
    """Write a submission folder (run.py, requirements.txt, the weights) that runs on numpy and umi-melee alone."""
    from keras_lstm.serving.umi_bundle import write_bundle

    info = write_bundle(model, out, name, sample, temperature, seed, keep_bias, characters, on_warning=print_warning)
    if json_output:
        print_json(info)
        return
    typer.echo(
        f"bundle {info['path']} ({info['bytes'] / 1e6:.1f} MB): bot {info['name']!r}, characters {info['characters']}, "
        f"delay {info['delay']}, {info['decoding']['mode']}\n"
        f"check it: umi-conform --cmd \"python {Path(info['path']) / 'run.py'}\""
    )
