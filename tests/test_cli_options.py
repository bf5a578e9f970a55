"""What every option of every command is checked for, walked from the typer
app itself so that a new command or option is covered without a new test:
an empty path is refused (typer would make it ".", the current folder), and
numbers past what their use can hold (2**63, 1e39, inf, nan) are refused in
one line naming the option."""

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from keras_lstm.cli.main import app

from conftest import GAMES

REPLAY = GAMES / "slippi-js_test.slp"
HUGE_INTS = (str(2**63), str(-(2**63) - 1))
HUGE_FLOATS = ("1e39", "inf", "-inf", "nan")


def _commands(group=None, path=()):
    """(name, click command) of every command, a group's own options included."""
    group = group or typer.main.get_command(app)
    if path and any(param.opts[0] != "--help" for param in group.params):
        yield path, group
    for name, command in sorted(group.commands.items()):
        if hasattr(command, "commands"):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name), command


COMMANDS = dict(_commands())


def _context(path: tuple, tmp: Path) -> list[str]:
    """Options that let the command reach its own checks (a replay source, the
    required ones), all tiny: a check that failed to refuse would not run long."""
    args = {
        ("train",): ["--replays", str(GAMES), "--output", str(tmp / "run"), "--max-frames", "500", "--epochs", "1", "--hidden-size", "8",
                     "--embed-size", "8", "--num-layers", "1", "--window-size", "10"],
        ("evaluate",): ["--model", str(tmp / "none"), "--replays", str(GAMES)],
        ("prepare",): ["--replays", str(GAMES), "--data-dir", str(tmp / "data")],
        ("export",): ["--model", str(tmp / "none"), "--base-dir", str(tmp / "sm")],
        ("play",): ["--model", str(tmp / "none"), "--port", "1", "--replay", str(REPLAY)],
    }.get(path, [])
    dummies = {Path: str(tmp / "none"), int: "1", float: "1", str: "x"}
    for param in COMMANDS[path].params:
        if param.required and param.opts[0] not in args:
            args += [param.opts[0], dummies[param.type_descriptor.annotation]]
    return args


def _options(kinds: tuple) -> list:
    return [
        pytest.param(path, param.opts[0], id=" ".join(path) + " " + param.opts[0])
        for path, command in COMMANDS.items()
        for param in command.params
        if param.type_descriptor.annotation in kinds and param.opts[0].startswith("--")
    ]


def _refused_in_one_line(path, args, option):
    result = CliRunner().invoke(app, [*path, *args])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (args, result.output)
    assert option.lstrip("-") in lines[0], (option, lines[0])  # the option is named
    return lines[0]


def test_every_command_is_walked():
    assert {" ".join(p) for p in COMMANDS} >= {"train", "evaluate", "prepare", "export", "play", "bench train", "bench serve"}
    assert len(_options((Path,))) >= 15 and len(_options((int, float))) >= 40


@pytest.mark.parametrize("path, option", _options((Path,)))
def test_an_empty_path_is_refused_for_every_path_option(path, option, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # were it taken as ".", nothing lands in the repository
    for empty in ("", "  "):
        line = _refused_in_one_line(path, [*_context(path, tmp_path), option, empty], option)
        assert line == f'error: {option} is empty: give a path ("." for the current folder)'
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("path, option", _options((int,)))
def test_whole_numbers_past_64_bits_are_refused(path, option, tmp_path):
    for value in HUGE_INTS:
        _refused_in_one_line(path, [*_context(path, tmp_path), option, value], option)


@pytest.mark.parametrize("path, option", _options((float,)))
def test_numbers_past_float32_or_not_finite_are_refused(path, option, tmp_path):
    # 1e39 is a finite float64 but inf in float32, where each of these numbers is used
    for value in HUGE_FLOATS:
        _refused_in_one_line(path, [*_context(path, tmp_path), option, value], option)


@pytest.mark.parametrize(
    "args, message",
    [
        (["play", "--sample", "--seed", "-1"], "error: --seed must be between 0 and 4294967295, got -1"),
        (["play", "--opponent-port", "0"], "error: --opponent-port must be 1, 2, 3 or 4, got 0"),
        (["train", "--learning-rate", "1e-50"], "error: learning-rate must be between 1.18e-38 and 3.4e+38 (float32), got 1e-50"),
        (["train", "--hidden-size", str(2**31)], "error: hidden-size must be at most 2,147,483,647 (a tensor dimension), got 2,147,483,648"),
        (["train", "--delay", str(2**31)], "error: delay must be at most 2,147,483,647 (frames of a game), got 2,147,483,648"),
        (["train", "--val-max-frames", "5"], "error: val-max-frames (5) must hold one window: at least 11 frames with --window-size 10 and --delay 0"),
        (["train", "--stages", "999"], "error: --stages: no stage has id 999 (versus stages have ids 2-32, 21 excepted; or give a name)"),
        (["train", "--opponents", "33"], "error: --opponents: no character has id 33 (characters have ids 0-32; or give a name)"),
        (["bench", "serve", "--seconds", "1e30"], "error: --seconds must be at most 3600 (per batch and variant), got 1e+30"),
    ],
)
def test_option_messages_name_the_option(args, message, tmp_path):
    command = tuple(a for a in args[:2] if not a.startswith("-"))
    result = CliRunner().invoke(app, [*command, *_context(command, tmp_path), *args[len(command):]])
    assert result.exit_code == 2 and result.output.strip() == message, result.output


def test_a_model_too_large_for_memory_is_one_line_before_it_is_built(monkeypatch, tmp_path):
    from keras_lstm.training import inputs

    monkeypatch.setattr(inputs, "available_memory_bytes", lambda: 16 * 2**30)
    args = ["train", "--replays", str(GAMES), "--output", str(tmp_path / "run"), "--hidden-size", "100000"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.output.strip().startswith("error: the model does not fit in memory: --hidden-size 100000, --num-layers 2")
    assert "GB to train (17.2 GB available); use smaller sizes" in result.output
    assert not {p.name for p in (tmp_path / "run").glob("*")} - {".lock"}  # refused before anything was written


@pytest.mark.parametrize("error", ["resource", "memory"])
def test_running_out_of_memory_anyway_is_one_line(monkeypatch, tmp_path, error):
    import tensorflow as tf

    from keras_lstm.training import train

    def exhausted(*args, **kwargs):
        if error == "memory":
            raise MemoryError("Unable to allocate 149. GiB for an array with shape (100128, 400000)")
        raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape[100128,400000]\n\t [[{{node lstm_0}}]]")

    monkeypatch.setattr(train, "train", exhausted)
    result = CliRunner().invoke(app, ["train", "--replays", str(GAMES), "--output", str(tmp_path / "run")])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("error: out of memory (") and lines[0].endswith(
        "): the model or its batches do not fit; use a smaller --hidden-size, --num-layers, --batch-size or --window-size")
    assert ("shape[100128,400000]" if error == "resource" else "shape (100128, 400000)") in lines[0]
