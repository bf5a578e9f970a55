"""Reading Slippi replays with peppi-py: finding them in a folder, parsing
each one, and the one-line reason a file cannot be used.

A file that cannot be read is refused with a `ReplayError` naming it and its
reason. So are the entries of a folder that look like replays but cannot be
one: a peppi `.slpp` archive, a dangling symbolic link, a symbolic link loop,
a `.slp` that is not a regular file. `find_replays` lists them beside the
`.slp` files, and `read_game` refuses each with its reason, so every caller
names and counts them (`keras_lstm.data.trajectories` turns a folder into
trajectories and reports what it skipped).

File names need not be valid UTF-8 (archives made on Windows often hold names
in a legacy code page): Python gives such a name as a `str` with surrogate
escapes, which opens, hashes (`os.fsencode`) and stores in JSON (escaped) as
it is, and `display_name` turns into a printable form.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from keras_lstm.stderr import quiet_stderr

# Melee's first frame in which players may act ("GO!" appears at frame 0, but
# inputs are read from -39 on); earlier countdown frames carry no decisions.
FIRST_PLAYABLE_FRAME = -39

DEFAULT_REPLAYS_DIR = "~/Slippi"
REPLAYS_ENV_VAR = "KERAS_LSTM_REPLAYS"


SLPP_REASON = "peppi .slpp archive, not a .slp replay (convert it with peppi-slp: slp -f slippi -o NAME.slp NAME.slpp)"


def display_name(path: str | bytes | os.PathLike) -> str:
    """`path` as printable text: bytes that are not UTF-8 (surrogate escapes
    in a `str`) become `\\xHH`. A valid name is returned unchanged."""
    text = os.fsdecode(os.fspath(path))
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that no file system gave
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


class ReplayError(Exception):
    """A replay that cannot be used, with a one-line reason. `path` is the
    name as given (it may hold surrogate escapes); the message is printable."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{display_name(self.path)}: {reason}")


def default_replays_dir() -> Path:
    """`$KERAS_LSTM_REPLAYS`, else `~/Slippi` (where the Slippi launcher saves)."""
    return Path(os.environ.get(REPLAYS_ENV_VAR) or DEFAULT_REPLAYS_DIR).expanduser()


def replays_or_default(replays: str | os.PathLike | None) -> Path:
    """`replays`, or the default replay folder when it is None."""
    return Path(replays) if replays is not None else default_replays_dir()


def _looks_like_replay(path: Path) -> bool:
    """A `.slp` or `.slpp` name that is not a folder (folders are searched)."""
    return path.suffix.lower() in (".slp", ".slpp") and not (path.is_dir() and not path.is_symlink())


def unusable_reason(path: str | os.PathLike) -> str | None:
    """Why an entry that looks like a replay cannot be one, without reading
    it: a `.slpp` archive, a dangling symbolic link, a symbolic link loop, or
    not a regular file. None for a regular file (which may still be corrupt)
    and for a missing one (the parser's error names it)."""
    path = Path(path)
    if path.suffix.lower() == ".slpp":
        return SLPP_REASON
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "dangling symbolic link" if os.path.islink(path) else None
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "symbolic link loop"
        return None
    if stat.S_ISDIR(mode):
        return "a folder, not a .slp replay file"
    if not stat.S_ISREG(mode):
        return "not a regular file"
    return None


def find_replays(folder: str | os.PathLike) -> list[Path]:
    """All `.slp` files below `folder`, sorted, so runs are deterministic,
    and the entries named like replays that cannot be read as one (a `.slpp`
    archive; a `.slp` that is a dangling symbolic link, a link loop, a link to
    a folder or not a regular file): `read_game` refuses those with their
    reason (`unusable_reason`), so `trajectories.load_trajectories` names and counts each
    as skipped.

    Raises ReplayError for a missing folder or one without any such entry.
    """
    root = Path(folder).expanduser()
    if not root.exists():
        raise ReplayError(root, "no such folder")
    if root.is_file():
        if root.suffix.lower() == ".slpp":
            raise ReplayError(root, SLPP_REASON)
        if root.suffix.lower() != ".slp":
            raise ReplayError(root, "not a .slp replay")
        return [root]
    paths = sorted(p for p in root.rglob("*") if _looks_like_replay(p))
    if not paths:
        raise ReplayError(root, "folder holds no .slp replays")
    return paths


def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_game(path: str | os.PathLike, skip_frames: bool = False):
    """Parse one replay with peppi-py; any parser failure becomes ReplayError.
    `skip_frames`: only the game's start and metadata (who played, fast).

    peppi-py reports some corrupt files with a Rust panic, which surfaces as
    `pyo3_runtime.PanicException`, a BaseException: catch it too, but never
    swallow KeyboardInterrupt or SystemExit.
    """
    import peppi_py

    try:
        reason = unusable_reason(path)
        if reason is not None:
            raise ReplayError(path, reason)
        if os.path.getsize(path) == 0:
            raise ReplayError(path, "empty file")
        with _parser_path(path) as parser_path, quiet_stderr():
            return peppi_py.read_slippi(parser_path, skip_frames=skip_frames)
    except ReplayError:
        raise
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except BaseException as err:  # noqa: BLE001 - see docstring
        raise ReplayError(path, parser_failure_reason(path, err)) from None


# A .slp file is UBJSON: an object whose first key is "raw", an array of bytes
# whose 4-byte big-endian length follows; Dolphin writes that length when the
# game ends, so an unfinished recording has 0 there.
SLP_HEADER = b"{U\x03raw[$U#l"
_LENGTH_END = len(SLP_HEADER) + 4


def parser_failure_reason(path: str | os.PathLike, err: BaseException) -> str:
    """Why the parser failed on `path`, in words a user can act on, with the
    parser's own message (shortened) after them."""
    detail = f"{type(err).__name__}: {_one_line(err, 120)}"
    try:
        with open(path, "rb") as f:
            head = f.read(_LENGTH_END)
    except OSError:
        head = None
    if head is not None and (head == b"" or not head.startswith(SLP_HEADER[: len(head)])):
        return "unreadable replay: not a Slippi replay (the file does not start as a .slp file does)"
    if head is not None and len(head) == _LENGTH_END:
        length = int.from_bytes(head[len(SLP_HEADER) :], "big")
        if length == 0:
            return (
                "unreadable replay: an unfinished recording (the replay's length was never written: Dolphin was still "
                f"recording it, or stopped before the game ended) ({detail})"
            )
        held = os.path.getsize(path) - _LENGTH_END
        if held < length:
            return f"unreadable replay: the file is cut short (it holds {held:,} of the replay's {length:,} bytes) ({detail})"
    if "game end method" in str(err):
        return f"unreadable replay: a game mode the parser does not read ({detail})"
    if type(err).__name__ == "PanicException" or "invalid data" in str(err):
        return f"unreadable replay: damaged replay data ({detail})"
    return f"unreadable replay ({detail})"


@contextlib.contextmanager
def _parser_path(path: str | os.PathLike) -> Iterator[str]:
    """A path peppi-py can take for `path`. peppi-py takes only a `str` it
    can encode as UTF-8, so a name that is not UTF-8 (surrogate escapes) is
    reached through an open descriptor (`/proc/self/fd/N` or `/dev/fd/N`),
    else through a temporary copy under a valid name."""
    text = os.fsdecode(os.fspath(path))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        pass
    else:
        yield text
        return
    fd = os.open(text, os.O_RDONLY)
    try:
        for fd_folder in ("/proc/self/fd", "/dev/fd"):
            if os.path.isdir(fd_folder):
                yield f"{fd_folder}/{fd}"
                return
        with tempfile.TemporaryDirectory(prefix="keras-lstm-replay-") as tmp:
            copy = os.path.join(tmp, "replay.slp")
            with os.fdopen(os.dup(fd), "rb") as src, open(copy, "wb") as dst:
                shutil.copyfileobj(src, dst)
            yield copy
    finally:
        os.close(fd)


def last_record_index(frame_ids: np.ndarray) -> np.ndarray:
    """Indices that keep the last record of each frame id, ordered by frame id.

    Netplay replays repeat a frame id after every rollback; the last record is
    the one the game actually kept.
    """
    frame_ids = np.asarray(frame_ids)
    reversed_ids = frame_ids[::-1]
    _, first_in_reversed = np.unique(reversed_ids, return_index=True)
    # np.unique sorts by id, so the result is in frame order even if a
    # record of an earlier frame was written after a later one.
    return len(frame_ids) - 1 - first_in_reversed


def iter_games(paths: Iterable[Path]) -> Iterator[tuple[Path, object | None, ReplayError | None]]:
    """`(path, game, None)` for each replay read, `(path, None, error)` for
    each that cannot be, in the order given."""
    for path in paths:
        try:
            yield path, read_game(path), None
        except ReplayError as err:
            yield path, None, err
