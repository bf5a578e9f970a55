"""What every subcommand shares: one-line errors and summary printing."""

from __future__ import annotations

import functools
import json
import sys
from typing import Callable

import typer

from keras_lstm.data.replays import ReplayError, display_name
from keras_lstm.files.lock import FolderBusyError
from keras_lstm.stderr import quiet_stderr

# Errors a user can fix from the message alone: print one line, exit 2.
USER_ERRORS = (ValueError, ReplayError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError, FolderBusyError)


def fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def one_line_errors(fn: Callable) -> Callable:
    """Turn expected errors into `error: ...` on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with quiet_stderr():  # TensorFlow's native start-up log ignores TF_CPP_MIN_LOG_LEVEL
            import tensorflow  # noqa: F401
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as err:
            fail(" ".join(str(err).split()))
        except KeyboardInterrupt:
            fail("interrupted", code=130)

    return wrapper


def print_skip(path: str, reason: str) -> None:
    typer.secho(f"skipped {display_name(path)}: {reason}", fg=typer.colors.YELLOW, err=True)


def print_warning(message: str) -> None:
    typer.secho(f"warning: {message}", fg=typer.colors.YELLOW, err=True)


def print_json(data: dict) -> None:
    json.dump(data, sys.stdout, indent=1, default=str)
    sys.stdout.write("\n")
