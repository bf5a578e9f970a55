"""The `keras-lstm` command. Each subcommand lives in its own module."""

import typer

from cli import train as train_commands

app = typer.Typer(
    help="Behavioural cloning of Melee from Slippi replays with an LSTM backbone.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
bench_app = typer.Typer(help="Benchmarks (speed and memory); numbers are medians measured side by side in one run.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")

app.command("train")(train_commands.train)
app.command("evaluate")(train_commands.evaluate)


if __name__ == "__main__":
    app()
