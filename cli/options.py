"""Command-line options made from the config fields (`keras_lstm.config`),
so each option's name, type, default and help are written once."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import types
import typing
from pathlib import Path, PurePath
from typing import Annotated, Callable, Iterable

import typer
from typer.models import OptionInfo

from keras_lstm.config import CONCERNS, cli_fields


def config_options(names: Iterable[str] | None = None, defaults: dict | None = None) -> Callable:
    """Decorate a command so it also takes one `--option` per config field
    named in `names` (default: every field the CLI offers, in the order of the
    concerns), with `defaults` replacing the fields' own. The command receives
    their values as one dict, `options`, keyed by field name."""
    fields = [pair for concern in CONCERNS.values() for pair in cli_fields(concern)]
    if names is not None:
        by_name = {f.name: (f, t) for f, t in fields}
        fields = [by_name[n] for n in names]
    defaults = defaults or {}

    def decorate(command: Callable) -> Callable:
        signature = inspect.signature(command, eval_str=True)  # typer reads __signature__ as it is
        own = [p for p in signature.parameters.values() if p.name != "options"]
        added = [
            inspect.Parameter(
                field.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=defaults.get(field.name, field.default),
                annotation=Annotated[kind, typer.Option(help=field.metadata["help"])],
            )
            for field, kind in fields
        ]

        @functools.wraps(command)
        def with_options(**kwargs):
            options = {field.name: kwargs.pop(field.name) for field, _ in fields}
            return command(options=options, **kwargs)

        # --help lists the command's own options, then the config's, --json last.
        first = [p for p in own if p.name != "json_output"]
        last = [p for p in own if p.name == "json_output"]
        with_options.__signature__ = signature.replace(
            parameters=[p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in first + added + last]
        )
        return with_options

    return decorate


def field_help(name: str) -> str:
    """The help text of a config field the command declares itself (a field
    with `cli=False`, such as the run folder, which the CLI takes as a Path)."""
    for concern in CONCERNS.values():
        for field in dataclasses.fields(concern):
            if field.name == name:
                return field.metadata["help"]
    raise KeyError(name)


# --- option values of a form several commands take


def parse_counts(text: str, option: str, example: str, most: int | None = None) -> tuple[int, ...]:
    """A comma-separated list of whole numbers from 1 (to `most`), or ValueError naming `option`."""
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1 or (most is not None and max(counts) > most):
        bound = "positive whole numbers" if most is None else f"whole numbers from 1 to {most}"
        raise ValueError(f"{option} must be {bound} separated by commas (e.g. {example}), got {text!r}")
    return counts


# --- what every option of every command is checked for ---------------------------
# (`keras_lstm.cli.common.one_line_errors` applies `guard_options` to each command)

MIN_INT64, MAX_INT64 = -(2**63), 2**63 - 1  # the widest integer the code below holds (numpy, TensorFlow)


class EmptyPath:
    """What a path option given as "" (or only spaces) parses to: typer would
    make it Path("."), the current folder, and a command would write there."""

    def __init__(self, text: str):
        self.text = text


def _parse_path(value):
    if isinstance(value, (PurePath, EmptyPath)):  # a default, or parsed already
        return value
    return Path(value) if str(value).strip() else EmptyPath(str(value))


def _value_type(annotation):
    """`Annotated[Optional[Path], ...]` -> Path (the type an option's value has)."""
    kind = typing.get_args(annotation)[0] if typing.get_origin(annotation) is Annotated else annotation
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        kinds = [k for k in typing.get_args(kind) if k is not type(None)]
        kind = kinds[0] if len(kinds) == 1 else kind
    return kind


def guard_options(command: Callable) -> tuple[inspect.Signature, Callable[[dict], None]]:
    """`command`'s signature, its path options fitted with a parser that
    keeps an empty path apart from "." (typer reads the options from it: give
    it to the function typer sees as `__signature__`), and the check of the
    options' values that every command runs first: a ValueError naming the
    option for an empty path, a whole number outside 64 bits or a number that
    is not finite. (Each option's own check bounds it further, by what its
    use can hold.)"""
    # Evaluated once: each evaluation of a string annotation makes new OptionInfos.
    signature = inspect.signature(command, eval_str=True)
    names = {}
    for param in signature.parameters.values():
        info = next((m for m in getattr(param.annotation, "__metadata__", ()) if isinstance(m, OptionInfo)), None)
        if info is None:
            continue
        declared = [d for d in (info.default, *info.param_decls) if isinstance(d, str) and d.startswith("--")]
        names[param.name] = declared[0] if declared else "--" + param.name.replace("_", "-")
        if _value_type(param.annotation) is Path and info.parser is None:
            info.parser = _parse_path
            info.metavar = info.metavar or "<path>"  # as typer shows a Path option

    def check(values: dict) -> None:
        for name, value in values.items():
            option = names.get(name, "--" + name.replace("_", "-"))
            if isinstance(value, EmptyPath):
                raise ValueError(f"{option} is empty: give a path (\".\" for the current folder)")
            if isinstance(value, bool):
                continue
            if isinstance(value, int) and not MIN_INT64 <= value <= MAX_INT64:
                raise ValueError(f"{option} must fit in 64 bits ({MIN_INT64:,} to {MAX_INT64:,}), got {value}")
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{option} must be a finite number, got {value}")

    return signature, check
