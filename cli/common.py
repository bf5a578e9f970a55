"""What every subcommand shares: one-line errors and summary printing."""

from __future__ import annotations

import functools
import json
import sys
from typing import Callable

import typer

from keras_lstm.cli.options import guard_options
from keras_lstm.data.replays import ReplayError, display_name
from keras_lstm.files.atomic import DiskError, disk_error
from keras_lstm.files.lock import FolderBusyError
from keras_lstm.stderr import quiet_stderr

# Errors a user can fix from the message alone: print one line, exit 2.
USER_ERRORS = (ValueError, ReplayError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError, FolderBusyError, DiskError)


def fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def one_line_errors(fn: Callable) -> Callable:
    """Turn expected errors into `error: ...` on stderr and exit code 2; check
    the options every command shares first (`keras_lstm.cli.options.guard_options`)."""
    signature, check_options = guard_options(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with quiet_stderr():  # TensorFlow's native start-up log ignores TF_CPP_MIN_LOG_LEVEL
            import tensorflow  # noqa: F401
        try:
            check_options(kwargs)
            return fn(*args, **kwargs)
        except USER_ERRORS as err:
            raw = isinstance(err, OSError) and err.errno is not None  # Python's own text: say it as a DiskError
            fail(" ".join(str((raw and disk_error(err)) or err).split()))
        except KeyboardInterrupt:
            fail("interrupted", code=130)
        except (MemoryError, tensorflow.errors.ResourceExhaustedError) as err:  # TF says a full disk so too
            fail(" ".join(str(disk_error(err) or out_of_memory(err)).split()))
        except (typer.Exit, typer.Abort, typer.BadParameter):
            raise  # said already
        except Exception as err:  # a full or read-only disk, however raised (OSError, tf.errors, Beam)
            disk = disk_error(err)
            if disk is None:
                raise
            fail(" ".join(str(disk).split()))

    wrapper.__signature__ = signature
    return wrapper


def out_of_memory(err: BaseException) -> str:
    """The line for a model or batch that did not fit (TensorFlow's message is many lines: its first)."""
    first = next((line for line in str(err).splitlines() if line.strip()), "")
    cause = f"{type(err).__name__}: {first}" if first else type(err).__name__
    return (f"out of memory ({cause[:200]}): the model or its batches do not fit; "
            "use a smaller --hidden-size, --num-layers, --batch-size or --window-size")


def print_skip(path: str, reason: str) -> None:
    typer.secho(f"skipped {display_name(path)}: {reason}", fg=typer.colors.YELLOW, err=True)


def print_warning(message: str) -> None:
    typer.secho(f"warning: {message}", fg=typer.colors.YELLOW, err=True)


def print_json(data: dict) -> None:
    json.dump(data, sys.stdout, indent=1, default=str)
    sys.stdout.write("\n")
