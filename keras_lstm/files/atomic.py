"""Files and folders that appear whole or not at all.

A process killed while writing (kill -9, power loss, a full disk) must never
leave a half-written file under the name a reader will open. Everything is
first written under a temporary name in the same folder (so the rename stays
on one file system), flushed to disk, then renamed over the final name: POSIX
`rename` replaces the old file in one step, so a reader sees the old whole
file or the new whole file.

Temporary names start with `.tmp-` and carry the writer's process id, so a
later run can tell a leftover of a dead process from a write in progress
(`remove_stale_temporaries`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterator

TMP_PREFIX = ".tmp-"


def temporary_path(final: str | os.PathLike) -> Path:
    """A sibling of `final` named `.tmp-<pid>-<name>`."""
    final = Path(final)
    return final.with_name(f"{TMP_PREFIX}{os.getpid()}-{final.name}")


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """fsync `path` and, for a folder, every file and folder below it (a
    folder's entries must reach the disk too, or a crash after the rename can
    leave a version with missing files)."""
    if path.is_file():
        with open(path, "rb") as f:
            os.fsync(f.fileno())
        return
    for entry in [*path.rglob("*"), path]:
        if entry.is_dir():
            fsync_dir(entry)
        elif entry.is_file():
            with open(entry, "rb") as f:
                os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write (a file, or a folder) and move it onto
    `final` when the block ends without error; on error remove it.

    An existing file at `final` is replaced in one step. An existing folder
    cannot be replaced atomically: it is renamed aside first and removed once
    the new one is in place (a reader may then briefly find neither).
    """
    final = Path(final)
    tmp = temporary_path(final)
    _remove(tmp)
    try:
        yield tmp
        fsync_tree(tmp)
        if tmp.is_dir() and final.is_dir():
            old = final.with_name(f"{TMP_PREFIX}{os.getpid()}-old-{final.name}")
            _remove(old)
            os.rename(final, old)
            os.rename(tmp, final)
            _remove(old)
        else:
            os.replace(tmp, final)
        fsync_dir(final.parent)
    except BaseException:
        _remove(tmp)
        raise


def write_text(final: str | os.PathLike, text: str) -> None:
    """Write `text` to `final` atomically."""
    with atomic_path(final) as tmp:
        tmp.write_text(text)


def write_json(final: str | os.PathLike, data, indent: int | None = 1) -> None:
    """Write `data` as JSON to `final` atomically."""
    write_text(final, json.dumps(data, indent=indent))


def read_json(path: str | os.PathLike, what: str = "JSON file"):
    """Parse a JSON file, or ValueError naming the file and what is wrong."""
    path = Path(path)
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a valid {what} (not UTF-8 text)") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not a valid {what} ({err.msg} at line {err.lineno} column {err.colno})") from None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def writer_gone(pid: int) -> bool:
    """Whether the process that named a temporary `pid` is gone (this
    process's own temporaries are never stale)."""
    return pid != os.getpid() and not pid_alive(pid)


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove `.tmp-<pid>-*` entries in `folder` whose process is gone;
    return what was removed. A write in progress (its process alive) is left."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        if not entry.name.startswith(TMP_PREFIX):
            continue
        pid_text = entry.name[len(TMP_PREFIX):].split("-", 1)[0]
        if pid_text.isdigit() and not writer_gone(int(pid_text)):
            continue
        _remove(entry)
        removed.append(entry)
    return removed
