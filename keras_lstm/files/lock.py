"""One process at a time per folder: a run folder, a data dir, a model base path.

Two `train` processes on one `--output` would resume from each other's live
backup and overwrite each other's results. `FolderLock` takes an exclusive
`flock` on `<folder>/.lock` and writes the holder's process id and command
into it; a second process gets `FolderBusyError` naming the holder. The
kernel drops a `flock` when its process dies (even on kill -9), so a crashed
run never leaves a lock behind: the stale file is simply locked again.

The lock's holder writes in the folder: a disk error under `with FolderLock(...)`
that names no path (a write to a full disk that Python raises without its
file name, a Beam worker's failure passed on as text) is raised as
`atomic.DiskError` naming the folder.
"""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path

from keras_lstm.files import atomic

LOCK_FILE = ".lock"


class FolderBusyError(RuntimeError):
    """Another live process holds the folder's lock."""


class FolderLock:
    """An exclusive lock on a folder, held until `release` (or the process ends).

    Args:
        folder: the folder to lock (created if missing).
        what: how the folder is named in the error, e.g. "run folder".
        lock_file: the lock's file name inside the folder (several processes
            that share a folder for different roles lock different files).

    Example:
    >>> with FolderLock("runs/latest", "run folder"):
    ...     train(...)
    """

    def __init__(self, folder: str | os.PathLike, what: str = "folder", lock_file: str = LOCK_FILE):
        self.folder = Path(folder)
        self.what = what
        self.lock_file = lock_file
        self._fd: int | None = None

    def acquire(self) -> "FolderLock":
        if self.folder.exists() and not self.folder.is_dir():
            raise FileExistsError(f"{self.folder}: is a file, not a folder (the {self.what} must be a folder)")
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / self.lock_file
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise FolderBusyError(
                f"{self.folder}: {self.what} is in use by {holder}; wait for it to finish or use another folder"
            ) from None
        command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:200]
        try:
            with atomic.disk_errors_name(path):  # a full disk: its error names no file
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"process {os.getpid()} ({command})\n".encode(), 0)
        except BaseException:
            os.close(fd)  # and with it the lock
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.release()
        disk = atomic.disk_error(exc, self.folder) if isinstance(exc, Exception) else None
        if disk is not None and disk is not exc:
            raise disk from exc
