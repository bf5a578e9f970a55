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

A write that fails for the disk's sake (full, read-only, not writable) is
raised as `DiskError`, one line naming the path and the cause, whatever
raised it: Python, TensorFlow (`tf.errors.*` wrapping "No space left on
device"), TFDS or a Beam worker (`disk_error`). The temporary is removed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
from pathlib import Path
from typing import Iterator

TMP_PREFIX = ".tmp-"

# What a disk that is full, read-only, not writable or failing raises.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EIO})
_CAUSES = "|".join(re.escape(os.strerror(code)) for code in sorted(DISK_ERRNOS))
# TensorFlow says `<path>; No space left on device` (after a `{{function_node ...}}` prefix).
_TF_CAUSE_RE = re.compile(r"(?:^|\}\} |\n\s*)([^\n;{}]+?); (" + _CAUSES + ")")
# Python's own text, passed on as text by TFDS and Beam: `[Errno 28] No space left on device: '<path>'`.
_ERRNO_RE = re.compile(r"\[Errno (\d+)\] [^\n:]*(?:: (['\"])(.*?)\2)?")
_CODE_BY_CAUSE = {os.strerror(code): code for code in DISK_ERRNOS}


class DiskError(OSError):
    """A path could not be written for the disk's sake. Its message is one
    line, the path and the cause: `runs/latest/model.keras: no space left on
    device`, then what to do where the writer knows (`advice`)."""

    advice = ""

    def __str__(self) -> str:
        said = f"{self.filename}: {self.strerror[:1].lower()}{self.strerror[1:]}"
        return f"{said} ({self.advice})" if self.advice else said


def _causes(err: BaseException) -> Iterator[BaseException]:
    """`err` and what it was raised from or while handling, once each."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or (None if err.__suppress_context__ else err.__context__)


def _disk_cause(err: BaseException) -> tuple[int, str | None] | None:
    """(errno, path or None) when `err` says a disk error, else None."""
    if isinstance(err, OSError) and err.errno is not None:
        return (err.errno, err.filename) if err.errno in DISK_ERRNOS else None
    if not isinstance(err, Exception):
        return None
    text = str(err)
    if type(err).__module__.startswith("tensorflow"):
        match = _TF_CAUSE_RE.search(text)
        if match:
            return _CODE_BY_CAUSE[match.group(2)], match.group(1).strip()
    for match in _ERRNO_RE.finditer(text):
        if int(match.group(1)) in DISK_ERRNOS:
            return int(match.group(1)), match.group(3)
    return None


def _in_temporary(path: str) -> bool:
    return any(part.startswith(TMP_PREFIX) for part in Path(path).parts)


def disk_error(err: BaseException, path: str | os.PathLike | None = None) -> DiskError | None:
    """`err` as a `DiskError` when a full, read-only, unwritable or failing
    disk caused it (an OSError, a TensorFlow error that wraps one, or an error
    raised from one); None otherwise. It names the path the error names, or
    `path` where that is none or a temporary (which is gone by then)."""
    found = [cause for cause in map(_disk_cause, _causes(err)) if cause is not None]
    if not found:
        return None
    code, name = next((cause for cause in found if cause[1]), found[0])
    if path is not None and (not name or _in_temporary(os.fsdecode(name))):
        name = os.fspath(path)
    if isinstance(err, DiskError) and (err.errno, err.filename) == (code, name):
        return err
    if not name:
        name = "(a file being written)"
    elif _in_temporary(os.fsdecode(name)):  # the folder the temporary was in
        parts = Path(os.fsdecode(name)).parts
        name = str(Path(*parts[: next(i for i, p in enumerate(parts) if p.startswith(TMP_PREFIX))]))
    return DiskError(code, os.strerror(code), os.fsdecode(name))


@contextlib.contextmanager
def disk_errors_name(path: str | os.PathLike) -> Iterator[None]:
    """Raise a disk error inside the block as a `DiskError` naming `path`
    where the error names no path, or a temporary."""
    try:
        yield
    except Exception as err:
        disk = disk_error(err, path)
        if disk is None or disk is err:
            raise
        raise disk from err


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

    A disk error (full, read-only) is raised as `DiskError` naming `final`.
    """
    final = Path(final)
    tmp = temporary_path(final)
    try:
        with disk_errors_name(final):
            _remove(tmp)
            yield tmp
            fsync_tree(tmp)
            if tmp.is_dir() and final.is_dir():
                old = final.with_name(f"{TMP_PREFIX}{os.getpid()}-old-{final.name}")
                _remove(old)
                os.rename(final, old)
                try:
                    os.rename(tmp, final)
                except BaseException:
                    os.rename(old, final)  # the old folder back in place
                    raise
                _remove(old)
            else:
                os.replace(tmp, final)
            fsync_dir(final.parent)
    except BaseException:
        _remove(tmp)
        raise


def check_writable(final: str | os.PathLike) -> None:
    """Create and remove `final`'s temporary, so that a read-only or
    unwritable folder is said (`DiskError` naming `final`) before the slow
    work whose result goes there. (A full disk shows only when it is written.)"""
    tmp = temporary_path(final)
    with disk_errors_name(final):
        _remove(tmp)
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        _remove(tmp)


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
    elif os.path.lexists(path):  # (unlinking a missing file on a read-only disk says read-only)
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
