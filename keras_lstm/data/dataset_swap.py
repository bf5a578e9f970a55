"""Replacing a prepared dataset whole: build it beside, swap it in, and clean
up after a kill.

`keras_lstm.data.prepared.prepare` generates a new dataset in a temporary data
dir inside the real one (`build_dir`, `<data_dir>/.tmp-<pid>-prepare`), then
makes its version folder the one TFDS reads (`swap_in`): an atomic exchange
of the two folders where the system has one (`exchange`), else the old one
set aside and the new one moved in. At every instant the version folder is
the old complete dataset or the new one. What a killed `prepare` leaves (our
temporaries, a dataset set aside, TFDS's `incomplete.*` folders) is put back
or removed by `restore_set_aside` and `remove_leftovers`.

Only folders and renames here; nothing of TFDS but the layout
`<data_dir>/<dataset>/<config>/<version>`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Iterator

from keras_lstm.files import atomic

BUILD_FOLDER = "prepare"  # `<data_dir>/.tmp-<pid>-prepare`: the TFDS data dir a new dataset is made in
PAUSE_ENV = "KERAS_LSTM_TEST_PAUSE"


def pause_for_test(stage: str) -> None:
    """Test hook: with `KERAS_LSTM_TEST_PAUSE=<stage>:<file>`, write `file`
    on reaching `stage` and wait there forever (for the test to kill us)."""
    value = os.environ.get(PAUSE_ENV)
    if not value or value.partition(":")[0] != stage:
        return
    Path(value.partition(":")[2]).write_text(f"{os.getpid()}\n")
    while True:
        time.sleep(3600)


@contextlib.contextmanager
def build_dir(data_dir: Path, name: str = BUILD_FOLDER) -> Iterator[Path]:
    """A fresh temporary data dir inside `data_dir` (`.tmp-<pid>-<name>`),
    removed on the way out."""
    build = atomic.temporary_path(data_dir / name)
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir(parents=True)
    try:
        yield build
    finally:
        shutil.rmtree(build, ignore_errors=True)


def copy_dataset_files(new_dataset: Path, dataset: Path) -> None:
    """TFDS's own files beside the configs (`.config/metadata.json`, the
    default config's name) to the real data dir, where it has none yet."""
    for path in sorted((new_dataset / ".config").rglob("*")):
        target = dataset / path.relative_to(new_dataset)
        if path.is_file() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic.atomic_path(target) as tmp:
                shutil.copyfile(path, tmp)


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux `renameat2(RENAME_EXCHANGE)`,
    macOS `renamex_np(RENAME_SWAP)`); False where the system or the file
    system has no such call."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if sys.platform.startswith("linux"):
            call = libc.renameat2
            call.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            at_fdcwd, rename_exchange = -100, 2
            result = call(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
        elif sys.platform == "darwin":
            call = libc.renamex_np
            call.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint]
            result = call(os.fsencode(a), os.fsencode(b), 2)  # RENAME_SWAP
        else:
            return False
    except (OSError, AttributeError):
        return False
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(code, os.strerror(code), str(b))


def swap_in(new: Path, final: Path) -> None:
    """Make the complete dataset folder `new` the one at `final`, so that at
    every instant `final` is the old complete dataset or the new one."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if not final.exists():
        os.rename(new, final)
    elif exchange(new, final):
        shutil.rmtree(new)  # the old dataset, now at the temporary name
    else:
        # No atomic exchange here: set the old one aside, then move the new
        # one in. A kill between the two renames leaves the old one aside;
        # `load_builder` and the next `prepare` put it back.
        aside = final.with_name(f"{atomic.TMP_PREFIX}{os.getpid()}-old-{final.name}")
        shutil.rmtree(aside, ignore_errors=True)
        os.rename(final, aside)
        try:
            pause_for_test("set-aside")
            os.rename(new, final)
        except BaseException:
            os.rename(aside, final)
            raise
        shutil.rmtree(aside)
    atomic.fsync_dir(final.parent)


def restore_set_aside(config_dir: Path) -> bool:
    """Put back each dataset version a killed `swap_in` set aside in
    `config_dir` (its process dead) when nothing took its place; True if
    one was put back."""
    if not config_dir.is_dir():
        return False
    restored = False
    pattern = re.compile(re.escape(atomic.TMP_PREFIX) + r"(\d+)-old-(.+)")
    for entry in sorted(config_dir.iterdir()):
        match = pattern.fullmatch(entry.name)
        if match is None:
            continue
        pid, version = int(match.group(1)), match.group(2)
        if pid != os.getpid() and atomic.pid_alive(pid):
            continue  # a swap in progress
        if not (config_dir / version).exists():
            with contextlib.suppress(OSError):
                os.rename(entry, config_dir / version)
                restored = True
    return restored


def remove_leftovers(data_dir: Path, dataset_name: str, incomplete_prefix: str) -> list[Path]:
    """Under the data dir's lock: put back datasets set aside by a killed
    swap, then remove what killed runs left (our temporary build folders and
    set-aside datasets, TFDS's `<incomplete_prefix>*` folders in each config
    folder of `data_dir/dataset_name`); return what was removed."""
    removed = atomic.remove_stale_temporaries(data_dir)
    dataset = data_dir / dataset_name
    if dataset.is_dir():
        for config_dir in [p for p in dataset.iterdir() if p.is_dir() and not p.is_symlink()]:
            restore_set_aside(config_dir)
            removed += atomic.remove_stale_temporaries(config_dir)
            for entry in config_dir.glob(f"{incomplete_prefix}*"):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                removed.append(entry)
    return removed
