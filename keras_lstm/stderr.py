"""Silencing native code that writes to file descriptor 2 directly."""

from __future__ import annotations

import contextlib
import os


@contextlib.contextmanager
def quiet_stderr():
    """Point file descriptor 2 at /dev/null for the duration.

    Python's `sys.stderr` redirection cannot reach what native code (a Rust
    panic in the replay parser, TensorFlow's start-up log) writes to fd 2.
    """
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
