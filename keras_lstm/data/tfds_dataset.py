"""A folder of replays, prepared once as a TensorFlow Datasets dataset.

Users with thousands of replays should not re-parse every `.slp` file at each
run. `prepare(replays, data_dir)` parses a folder once into `slippi_replays`, a
`tfds.core.GeneratorBasedBuilder` with manual download (the replays are the
user's own files, read from `manual_dir`):

- one example per (game, player perspective): the raw per-frame arrays of a
  `features.Trajectory` (`state_numeric [T, 30]`, `state_categorical [T, 5]`,
  the six target arrays), variable T. The `--delay` alignment and the windows
  are made at training time (`keras_lstm.data.pipeline`), so one prepared dataset
  serves every delay, window size and stride;
- deterministic keys (`<path inside the folder>:<port>`) and generation order
  (sorted file order, then port; TFDS's own shuffling is off), so reading a
  split unshuffled gives the trajectories in exactly the order
  `trajectories.load_trajectories` gives them;
- `train` and `validation` splits by game (`data.split_by_game` with the
  config's `val_fraction` and `seed`; the default config matches
  `keras-lstm train`'s defaults, 0.15 and 0);
- files that cannot be used are skipped, named with their reason and counted
  in the dataset's metadata (`builder.info.metadata`), with the other counts
  of `LoadReport.counts()` per split;
- the metadata holds a fingerprint of the folder (names, sizes, modification
  times) and the options: preparing an unchanged folder again is a no-op, a
  changed folder is prepared afresh;
- a kill never loses a dataset: the new one is generated in a temporary data
  dir beside it (`<data_dir>/.tmp-<pid>-prepare`) and swapped in whole at the
  end (an atomic exchange of the two version folders where the system has
  one), so `load_builder` finds the old complete dataset or the new complete
  one; leftovers of killed runs (our temporaries, TFDS's `incomplete.*`
  folders) are removed by the next `prepare` (`keras_lstm.data.dataset_swap`);
- one `prepare` at a time per data dir (`FolderLock` on `<data_dir>/.lock`);
- file names need not be UTF-8: the metadata's file lists hold the names as
  they are (JSON escapes them), while example keys and `source` hold a
  printable form (`replays.display_name`; `name_from_display` reverses it).

The dataset's major version is `features.FEATURE_VERSION`: a feature change
can never be read as the old features.

From plain Python:

    import tensorflow_datasets as tfds
    import keras_lstm.data.tfds_dataset  # registers `slippi_replays`
    builder = tfds.builder("slippi_replays", data_dir="~/tensorflow_datasets")
    ds = builder.as_dataset(split="train")
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import re
import time
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow_datasets as tfds

from keras_lstm.data import controller, dataset_swap, features
from keras_lstm.data.features import Trajectory
from keras_lstm.data.filters import FILTERS, ReplayFilter
from keras_lstm.data.replays import ReplayError, display_name, find_replays
from keras_lstm.data.trajectories import load_trajectories
from keras_lstm.data.windows import check_seed, split_by_game
from keras_lstm.files import atomic
from keras_lstm.files.lock import FolderLock

DATASET_NAME = "slippi_replays"
DEFAULT_VAL_FRACTION = 0.15
DEFAULT_SEED = 0
TRAIN = "train"
VALIDATION = "validation"

# How per-frame arrays are stored (see docs/DATA.md for the measurements).
ENCODING = tfds.features.Encoding.ZLIB
# The zlib level `prepare` compresses them at. TFDS always uses zlib's
# default, 6; `keras-lstm bench data` measures each level on the arrays
# prepare stores (docs/DATA.md): level 1 compresses them ~2.5x as fast for
# ~15 % more disk, and compression was most of prepare's time. The stream
# format is the same at every level, so any TFDS reads the result.
ZLIB_LEVEL = 1


class _ZlibAt:
    """The zlib module, but compressing at a fixed level."""

    def __init__(self, level: int):
        self.level = level

    def compress(self, data):
        return zlib.compress(data, self.level)

    def __getattr__(self, name):
        return getattr(zlib, name)


@contextlib.contextmanager
def zlib_level(level: int):
    """While inside, TFDS' tensor features compress at `level`. If a TFDS
    version no longer calls `zlib.compress` there, its own default stays."""
    from tensorflow_datasets.core.features import tensor_feature

    if getattr(tensor_feature, "zlib", None) is not zlib:
        yield
        return
    tensor_feature.zlib = _ZlibAt(level)
    try:
        yield
    finally:
        tensor_feature.zlib = zlib

_COUNT_KEYS = (
    "replays_used",
    "replays_skipped",
    "replays_unreadable",
    "replays_not_1v1",
    "cpu_players_not_imitated",
    "trajectories",
    "frames_loaded",
    *(f"filtered_{name}" for name in FILTERS),
)


def config_name(val_fraction: float, seed: int) -> str:
    """`default` for the training defaults, else e.g. `val0.2-seed3`."""
    if val_fraction == DEFAULT_VAL_FRACTION and seed == DEFAULT_SEED:
        return "default"
    return f"val{val_fraction:g}-seed{seed}"


@dataclasses.dataclass(eq=False)
class SlippiReplaysConfig(tfds.core.BuilderConfig):
    """How the folder is split into train and validation (by game).

    Args:
        val_fraction: fraction of replay files held out for validation.
        seed: seed of the hash-based file split (`data.split_by_game`).
    """

    val_fraction: float = DEFAULT_VAL_FRACTION
    seed: int = DEFAULT_SEED

    @classmethod
    def make(cls, val_fraction: float = DEFAULT_VAL_FRACTION, seed: int = DEFAULT_SEED) -> "SlippiReplaysConfig":
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val-fraction must be in [0, 1), got {val_fraction}")
        check_seed(seed)
        seed = int(seed)
        return cls(
            name=config_name(val_fraction, seed),
            description=f"validation fraction {val_fraction:g} of the files, split seed {seed}",
            val_fraction=val_fraction,
            seed=seed,
        )


def _split_counts() -> dict:
    return {k: 0 for k in _COUNT_KEYS}


class SlippiReplays(tfds.core.GeneratorBasedBuilder):
    """Slippi replays as per-player trajectories, one example per (game, player).

    Args:
        on_file: optional callback `on_file(path, reason_or_None)`, called once
            per replay file as it is read (for progress bars); `reason` is the
            skip reason of an unusable file.
        (other arguments as `tfds.core.DatasetBuilder`: `data_dir`, `config`.)

    Example:
    >>> builder = SlippiReplays(data_dir="data", config=SlippiReplaysConfig.make())
    >>> builder.download_and_prepare(
    ...     download_config=tfds.download.DownloadConfig(manual_dir="~/Slippi"))
    >>> ds = builder.as_dataset(split="train")
    """

    VERSION = tfds.core.Version(f"{features.FEATURE_VERSION}.0.0")
    RELEASE_NOTES = {f"{features.FEATURE_VERSION}.0.0": "Trajectories with feature version 1."}
    BUILDER_CONFIGS = [SlippiReplaysConfig.make()]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "The replays are your own .slp files (the Slippi launcher saves them in ~/Slippi). "
        "Pass their folder as the manual directory: `keras-lstm prepare --replays DIR --data-dir DIR`, "
        "or DownloadConfig(manual_dir=DIR) from Python."
    )

    @tfds.core.utils.classproperty
    @classmethod
    def _checksums_path(cls):
        # Manual data has no download checksums. (TFDS's default looks for a
        # checksums file beside this module through `importlib_resources`,
        # a package TFDS 4.9 does not install on Python >= 3.9.)
        return None

    def __init__(
        self,
        *,
        on_file: Callable[[str, str | None], None] | None = None,
        empty_validation: bool = False,
        replay_filter: ReplayFilter | None = None,
        **kwargs,
    ):
        self._on_file = on_file
        self._filter = replay_filter or ReplayFilter()
        # Set when a first attempt found every held-out file unusable: TFDS
        # cannot store an empty split, so the dataset then has none.
        self._empty_validation = empty_validation
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        heads = {
            "buttons": tfds.features.Tensor(shape=(None, len(controller.BUTTONS)), dtype=np.uint8, encoding=ENCODING),
            **{h: tfds.features.Tensor(shape=(None,), dtype=np.int32, encoding=ENCODING) for h in controller.CLASS_HEADS},
        }
        info = self.dataset_info_from_configs(
            description="One example per (game, human player) of a folder of 1v1 Slippi replays.",
            features=tfds.features.FeaturesDict(
                {
                    "source": tfds.features.Text(doc="Path of the replay inside the prepared folder."),
                    "port": tfds.features.Scalar(dtype=np.int32, doc="The imitated player's port (0-3)."),
                    "state_numeric": tfds.features.Tensor(shape=(None, features.STATE_NUMERIC_SIZE), dtype=np.float32, encoding=ENCODING),
                    "state_categorical": tfds.features.Tensor(shape=(None, features.CATEGORICAL_SIZE), dtype=np.int32, encoding=ENCODING),
                    "targets": tfds.features.FeaturesDict(heads),
                }
            ),
            metadata=tfds.core.MetadataDict(),
            # Keep generation order (sorted files, then port): reading is then
            # the same order as `load_trajectories`; the pipeline shuffles.
            disable_shuffling=True,
        )
        # TFDS looks for a not-yet-prepared dataset's info in its public bucket,
        # and leaves an empty temporary folder behind each time; ours is never there.
        info.initialize_from_bucket = lambda: None
        return info

    def _split_generators(self, dl_manager):
        root = Path(dl_manager.manual_dir)
        paths = [str(p) for p in find_replays(root)]
        train_files, val_files = split_by_game(paths, self.builder_config.val_fraction, self.builder_config.seed)

        def relative(p: str) -> str:
            return Path(p).relative_to(root).as_posix()

        meta = self.info.metadata
        meta.update(
            {
                "feature_version": features.FEATURE_VERSION,
                "replays_dir": str(root),
                "fingerprint": folder_fingerprint(root, self.builder_config, self._filter),
                "filter": self._filter.describe(),
                "val_fraction": self.builder_config.val_fraction,
                "seed": self.builder_config.seed,
                "files": len(paths),
                "train_files": [relative(p) for p in train_files],
                "val_files": [relative(p) for p in val_files],
                "skipped": [],
                "counts": {TRAIN: _split_counts(), VALIDATION: _split_counts()},
            }
        )
        # Validation first: it is the small one, so finding it empty costs little.
        splits = {}
        if val_files:
            val_examples = self._generate_examples(root, val_files, VALIDATION)
            if self._empty_validation:
                for _ in val_examples:  # only records the skipped files' reasons
                    pass
            else:
                splits[VALIDATION] = val_examples
        splits[TRAIN] = self._generate_examples(root, train_files, TRAIN)
        return splits

    def _generate_examples(self, root: Path, paths: list[str], split: str):
        meta = self.info.metadata
        counts = meta["counts"][split]
        self._current_split = split
        for path in paths:
            name = Path(path).relative_to(root).as_posix()
            shown = display_name(name)  # keys and `source` must be valid text
            report = load_trajectories([Path(path)], replay_filter=self._filter)
            for key, value in report.counts().items():
                counts[key] += value
            reason = report.skipped[0][1] if report.skipped else None
            if reason is not None:
                meta["skipped"].append([name, reason])
            for traj in report.trajectories:
                yield f"{shown}:{traj.port}", _example(shown, traj)
            if self._on_file is not None:
                self._on_file(name, reason)
            dataset_swap.pause_for_test("generate")


def _example(name: str, traj: Trajectory) -> dict:
    targets = dict(traj.targets)
    targets["buttons"] = targets["buttons"].astype(np.uint8)
    return {
        "source": name,
        "port": traj.port,
        "state_numeric": traj.state_numeric,
        "state_categorical": traj.state_categorical,
        "targets": targets,
    }


def trajectory_from_example(example: dict, root: str | os.PathLike | None = None) -> Trajectory:
    """A numpy example (`tfds.as_numpy`) -> the `Trajectory` it was made from.

    `root` (the prepared folder) makes `source` the full path, as
    `load_trajectories` gives it (a name that is not UTF-8 is found again
    from its printable form, `name_from_display`).
    """
    source = example["source"]
    source = source.decode() if isinstance(source, bytes) else str(source)
    if root is not None:
        source = name_from_display(source)
    targets = {h: np.asarray(example["targets"][h]) for h in controller.HEADS}
    targets["buttons"] = targets["buttons"].astype(np.float32)
    return Trajectory(
        source=str(Path(root) / source) if root is not None else source,
        port=int(example["port"]),
        state_numeric=np.asarray(example["state_numeric"]),
        state_categorical=np.asarray(example["state_categorical"]),
        targets=targets,
    )


_ESCAPED_BYTE = re.compile(r"\\x([89a-fA-F][0-9a-fA-F])")


def name_from_display(text: str) -> str:
    """The file name `replays.display_name` printed as `text`: each `\\xHH`
    (HH >= 80, a byte that was not UTF-8) back to its surrogate escape. (A
    name holding those four characters literally is not told apart.)"""
    if "\\x" not in text:
        return text
    name = _ESCAPED_BYTE.sub(lambda m: chr(0xDC00 + int(m.group(1), 16)), text)
    return name if display_name(name) == text else text


def folder_fingerprint(root: str | os.PathLike, config: SlippiReplaysConfig, replay_filter: ReplayFilter | None = None) -> str:
    """sha256 over every replay's path, size and modification time, the split
    options, the filters and the feature version: equal fingerprints mean
    nothing to redo.
    (Entries `find_replays` lists that cannot be read, such as a dangling
    link, count with their link's own size and time.)"""
    root = Path(root)
    digest = hashlib.sha256()
    digest.update(f"{features.FEATURE_VERSION}|{config.val_fraction!r}|{config.seed}\n".encode())
    if replay_filter is not None and replay_filter.active:  # unfiltered: the fingerprint it always had
        digest.update(f"filter {replay_filter.describe()}\n".encode())
    for path in find_replays(root):
        try:
            stat = path.stat()
        except OSError:
            stat = path.lstat()
        digest.update(os.fsencode(path.relative_to(root).as_posix()) + f"|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def make_builder(
    data_dir: str | os.PathLike,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = DEFAULT_SEED,
    on_file: Callable[[str, str | None], None] | None = None,
    empty_validation: bool = False,
    replay_filter: ReplayFilter | None = None,
) -> SlippiReplays:
    config = SlippiReplaysConfig.make(val_fraction, seed)
    if config.name in {c.name for c in SlippiReplays.BUILDER_CONFIGS}:
        config = config.name  # TFDS refuses a second object under a registered name
    with quiet_tfds():
        return SlippiReplays(
            data_dir=str(Path(data_dir).expanduser()), config=config, on_file=on_file, empty_validation=empty_validation,
            replay_filter=replay_filter,
        )


def load_builder(data_dir: str | os.PathLike, val_fraction: float = DEFAULT_VAL_FRACTION, seed: int = DEFAULT_SEED) -> SlippiReplays:
    """The prepared dataset in `data_dir` for this split; FileNotFoundError
    (with the command that makes it) when it is not there."""
    builder = make_builder(data_dir, val_fraction, seed)
    with quiet_tfds():
        prepared = builder.is_prepared()
    if not prepared and dataset_swap.restore_set_aside(Path(builder.data_path).parent):
        builder = make_builder(data_dir, val_fraction, seed)
        with quiet_tfds():
            prepared = builder.is_prepared()
    if not prepared:
        options = "" if config_name(val_fraction, seed) == "default" else f" --val-fraction {val_fraction:g} --seed {seed}"
        raise FileNotFoundError(
            f"{builder.data_path}: no prepared dataset (run: keras-lstm prepare --replays DIR --data-dir {data_dir}{options})"
        )
    meta = builder.info.metadata or {}
    if meta.get("feature_version") != features.FEATURE_VERSION:
        raise ValueError(f"{builder.data_path}: prepared with feature version {meta.get('feature_version')}, "
                         f"this code uses {features.FEATURE_VERSION}: prepare it again")
    return builder


def read_trajectories(builder: SlippiReplays, split: str, max_frames: int | None = None) -> list[Trajectory]:
    """Every trajectory of a split, in generation order (the order
    `load_trajectories` gives for the same files), sources as full paths;
    with `max_frames`, it stops reading once that many frames are in (the
    last trajectory cut to fit), as `load_trajectories` does."""
    if split not in builder.info.splits:
        return []
    root = builder.info.metadata["replays_dir"]
    with quiet_tfds():
        ds = builder.as_dataset(split=split, shuffle_files=False)
    out, frames = [], 0
    for example in tfds.as_numpy(ds):
        if max_frames is not None and frames >= max_frames:
            break
        trajectory = trajectory_from_example(example, root)
        if max_frames is not None:
            trajectory = trajectory.head(max_frames - frames)
        out.append(trajectory)
        frames += len(trajectory)
    return out


def dataset_size_bytes(builder: SlippiReplays) -> int:
    """Bytes on disk of the prepared variant (data and metadata)."""
    return sum(f.stat().st_size for f in Path(builder.data_path).rglob("*") if f.is_file())


def prepare(
    replays: str | os.PathLike,
    data_dir: str | os.PathLike,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = DEFAULT_SEED,
    on_file: Callable[[str, str | None], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    replay_filter: ReplayFilter | None = None,
) -> dict:
    """Prepare `replays` (a folder) as `slippi_replays` in `data_dir`, the
    games and players `replay_filter` leaves out counted, not stored.

    A no-op when the same folder, unchanged, was already prepared with the
    same options; a changed folder replaces the old dataset, which stays
    whole until the new one is complete. `on_start(n)` is called with the
    number of replay files about to be read, `on_file` once per file. Holds
    `data_dir`'s lock throughout (FolderBusyError if another process has it).
    Returns a summary (status `prepared` or `up to date`, counts, skipped
    files, examples per split, size on disk).
    """
    SlippiReplaysConfig.make(val_fraction, seed)  # bad options: the error before anything is read or made
    root = Path(replays).expanduser()
    if root.is_file():
        raise ReplayError(root, "prepare takes a folder of replays, not one file")
    n_files = len(find_replays(root))  # one-line error for a missing or empty folder
    root = root.resolve()
    data_dir = Path(data_dir).expanduser()
    with FolderLock(data_dir, "data dir"):
        dataset_swap.remove_leftovers(data_dir, DATASET_NAME, tfds.core.constants.INCOMPLETE_PREFIX)
        builder = make_builder(data_dir, val_fraction, seed)
        fingerprint = folder_fingerprint(root, builder.builder_config, replay_filter)
        start = time.perf_counter()
        status = "up to date"
        with quiet_tfds():
            existing = builder.is_prepared()
        if not (existing and (builder.info.metadata or {}).get("fingerprint") == fingerprint):
            status = "prepared"
            _prepare_beside(root, data_dir, Path(builder.data_path), val_fraction, seed, n_files, on_file, on_start, replay_filter)
            builder = make_builder(data_dir, val_fraction, seed)  # re-read what is on disk
        return summarize(builder, status=status, seconds=time.perf_counter() - start)


def _prepare_beside(root, data_dir: Path, final: Path, val_fraction, seed, n_files, on_file, on_start, replay_filter) -> None:
    """Generate the dataset in a temporary data dir inside `data_dir`, then
    swap its version folder in for `final` (the variant's `data_path`)."""
    config = tfds.download.DownloadConfig(manual_dir=str(root), compute_stats=tfds.download.ComputeStatsMode.SKIP)
    with dataset_swap.build_dir(data_dir) as build:
        if on_start is not None:
            on_start(n_files)
        builder = make_builder(build, val_fraction, seed, on_file=on_file, replay_filter=replay_filter)
        empty = _generate(builder, config)
        if empty == VALIDATION:
            if on_start is not None:
                on_start(n_files)  # the held-out files were all unusable: once more, without that split
            builder = make_builder(build, val_fraction, seed, on_file=on_file, empty_validation=True, replay_filter=replay_filter)
            empty = _generate(builder, config)
        if empty is not None:
            left_out = sum(builder.info.metadata["counts"][TRAIN][f"filtered_{name}"] for name in FILTERS)
            raise ValueError(
                f"{root}: no usable replay for training ({len(builder.info.metadata['skipped'])} of {n_files} files skipped"
                + (f", {left_out} games or players left out by the filters)" if left_out else ")")
            )
        new = Path(builder.data_path)
        atomic.fsync_tree(new)  # whole on disk before it is the dataset
        dataset_swap.copy_dataset_files(new.parent.parent, final.parent.parent)
        dataset_swap.swap_in(new, final)


def _generate(builder: SlippiReplays, config) -> str | None:
    """Run TFDS's generation; the name of the split that came out empty
    (TFDS refuses to write it), else None."""
    try:
        with quiet_tfds(), zlib_level(ZLIB_LEVEL):
            builder.download_and_prepare(download_config=config)
    except AssertionError as err:
        if "No examples were yielded" not in str(err):
            raise
        return builder._current_split
    return None


_TFDS_NOISE = ("FeatureConnector.dtype", "has no dataset_info.json", "Using custom data configuration")


@contextlib.contextmanager
def quiet_tfds():
    """TFDS's chatter off: what it prints while preparing ("Downloading and
    preparing dataset Unknown size ...", meaningless for local files) is
    dropped rather than mixed into our output (`--json` goes to stdout), and
    so are warnings about its own code and about a dataset not yet made."""

    def keep(record: logging.LogRecord) -> bool:
        return not any(text in record.getMessage() for text in _TFDS_NOISE)

    logger = logging.getLogger("absl")
    logger.addFilter(keep)
    try:
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            yield
    finally:
        logger.removeFilter(keep)


def summarize(builder: SlippiReplays, **extra) -> dict:
    meta = builder.info.metadata
    counts = meta["counts"]
    total = {k: counts[TRAIN].get(k, 0) + counts[VALIDATION].get(k, 0) for k in _COUNT_KEYS}  # older datasets lack the filter counts
    return {
        **extra,
        "dataset": f"{DATASET_NAME}/{builder.builder_config.name}:{builder.version}",
        "data_path": str(builder.data_path),
        "replays_dir": meta["replays_dir"],
        "files": meta["files"],
        "examples": {name: int(builder.info.splits[name].num_examples) for name in (TRAIN, VALIDATION) if name in builder.info.splits},
        **total,
        "counts": counts,
        "skipped": meta["skipped"],
        "size_bytes": dataset_size_bytes(builder),
    }
