"""The `keras-lstm` command. Each subcommand lives in its own module."""

import typer

from keras_lstm.cli import bench_train
from keras_lstm.cli import bench_train_speed
from keras_lstm.cli import bench_inference
from keras_lstm.cli import bench_serve
from keras_lstm.cli import bench_gpu
from keras_lstm.cli import export as export_commands
from keras_lstm.cli import play as play_commands
from keras_lstm.cli import train as train_commands
from keras_lstm.cli import prepare as prepare_commands
from keras_lstm.cli import bench_data
from keras_lstm.cli import bench_evaluate, bench_segments, bench_umi
from keras_lstm.cli.umi import umi_app

app = typer.Typer(
    help="Behavioural cloning of Melee from Slippi replays with an LSTM backbone.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
bench_app = typer.Typer(help="Benchmarks (speed and memory); numbers are medians measured side by side in one run.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
app.add_typer(umi_app, name="umi")

app.command("train")(train_commands.train)
app.command("evaluate")(train_commands.evaluate)
app.command("prepare")(prepare_commands.prepare)
bench_app.command("data")(bench_data.data)
bench_app.command("train")(bench_train.train)
app.command("export")(export_commands.export)
app.command("play")(play_commands.play)
bench_app.command("inference")(bench_inference.inference)
bench_app.command("serve")(bench_serve.serve)
bench_app.command("gpu")(bench_gpu.gpu)
bench_app.command("train-speed")(bench_train_speed.train_speed)
bench_app.command("umi")(bench_umi.umi)
bench_app.command("evaluate")(bench_evaluate.evaluate)
bench_app.command("segments")(bench_segments.segments)


if __name__ == "__main__":
    app()
