"""Command-line options made from the config fields (`keras_lstm.config`),
so each option's name, type, default and help are written once."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Annotated, Callable, Iterable

import typer

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
