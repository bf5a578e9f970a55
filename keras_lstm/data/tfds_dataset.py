"""The TensorFlow Datasets builder behind `keras-lstm prepare`.

`slippi_replays` is a `tfds.core.GeneratorBasedBuilder` with manual download
(the replays are the user's own files, read from `manual_dir`). One builder
run writes one *part* of a prepared dataset: the replay files it is given,
each already assigned to `train` or `validation`
(`keras_lstm.data.prepared` plans the parts, `keras_lstm.data.parts` builds
them, in this process or on Apache Beam's workers). Per part:

- one example per (game, player perspective): the raw per-frame arrays of a
  `features.Trajectory` (`state_numeric [T, 30]`, `state_categorical [T, 5]`,
  the six target arrays), variable T. The `--delay` alignment and the windows
  are made at training time (`keras_lstm.data.pipeline`), so one prepared
  dataset serves every delay, window size and stride;
- deterministic keys (`<path inside the folder>:<port>`) and generation order
  (the files in the order given, then port; TFDS's own shuffling is off);
- files that cannot be used are skipped, named with their reason and counted
  in the part's metadata (`builder.info.metadata`), with the other counts of
  `LoadReport.counts()` per split;
- file names need not be UTF-8: the metadata's file lists hold the names as
  they are (JSON escapes them), while example keys and `source` hold a
  printable form (`replays.display_name`; `name_from_display` reverses it).

The dataset's major version is `features.FEATURE_VERSION`: a feature change
can never be read as the old features.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow_datasets as tfds

from keras_lstm.data import controller, dataset_swap, features, tfrecord
from keras_lstm.data.features import Trajectory
from keras_lstm.data.filters import ReplayFilter
from keras_lstm.data.dataset_keys import (
    COUNT_KEYS, DEFAULT_SEED, DEFAULT_VAL_FRACTION, TRAIN, VALIDATION, check_split_options, config_name,
)
from keras_lstm.data.replays import display_name
from keras_lstm.data.trajectories import load_trajectories

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
        check_split_options(val_fraction, seed)
        seed = int(seed)
        return cls(
            name=config_name(val_fraction, seed),
            description=f"validation fraction {val_fraction:g} of the files, split seed {seed}",
            val_fraction=val_fraction,
            seed=seed,
        )


def _split_counts() -> dict:
    return {k: 0 for k in COUNT_KEYS}


class SlippiReplays(tfds.core.GeneratorBasedBuilder):
    """Slippi replays as per-player trajectories, one example per (game, player).

    Args:
        files: the replay files (full paths) of each split, in the order
            their examples are written.
        on_file: optional callback `on_file(path, reason_or_None)`, called once
            per replay file as it is read (for progress bars); `reason` is the
            skip reason of an unusable file.
        skip_splits: splits read for their counts but not written.
        replay_filter: the games and players left out (counted).
        (other arguments as `tfds.core.DatasetBuilder`: `data_dir`, `config`.)

    Example:
    >>> builder = SlippiReplays(data_dir="data", config=SlippiReplaysConfig.make(),
    ...                         files={"train": ["/home/me/Slippi/a.slp"]})
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
        files: dict[str, list[str]] | None = None,
        on_file: Callable[[str, str | None], None] | None = None,
        skip_splits: frozenset[str] = frozenset(),
        replay_filter: ReplayFilter | None = None,
        **kwargs,
    ):
        self._files = files or {}
        self._on_file = on_file
        self._filter = replay_filter or ReplayFilter()
        # Splits a first attempt found without any example: TFDS cannot store
        # an empty split, so they are read (for the counts) but not written.
        self._skip_splits = skip_splits
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

        def relative(p: str) -> str:
            return Path(p).relative_to(root).as_posix()

        meta = self.info.metadata
        meta.update(
            {
                "feature_version": features.FEATURE_VERSION,
                "replays_dir": str(root),
                "filter": self._filter.describe(),
                "val_fraction": self.builder_config.val_fraction,
                "seed": self.builder_config.seed,
                "train_files": [relative(p) for p in self._files.get(TRAIN, [])],
                "val_files": [relative(p) for p in self._files.get(VALIDATION, [])],
                "skipped": [],
                "counts": {TRAIN: _split_counts(), VALIDATION: _split_counts()},
            }
        )
        # Validation first: it is the small one, so finding it empty costs little.
        splits = {}
        for split in (VALIDATION, TRAIN):
            paths = self._files.get(split, [])
            if not paths:
                continue
            examples = self._generate_examples(root, paths, split)
            if split in self._skip_splits:
                for _ in examples:  # only records the skipped files' reasons
                    pass
            else:
                splits[split] = examples
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


def make_builder(
    data_dir: str | os.PathLike,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = DEFAULT_SEED,
    files: dict[str, list[str]] | None = None,
    on_file: Callable[[str, str | None], None] | None = None,
    skip_splits: frozenset[str] = frozenset(),
    replay_filter: ReplayFilter | None = None,
) -> SlippiReplays:
    """The builder of one part in `data_dir`: `files` (full paths) per split."""
    config = SlippiReplaysConfig.make(val_fraction, seed)
    if config.name in {c.name for c in SlippiReplays.BUILDER_CONFIGS}:
        config = config.name  # TFDS refuses a second object under a registered name
    with quiet_tfds():
        return SlippiReplays(
            data_dir=str(Path(data_dir).expanduser()), config=config, files=files, on_file=on_file,
            skip_splits=skip_splits, replay_filter=replay_filter,
        )


def generate(builder: SlippiReplays, config) -> str | None:
    """Run TFDS's generation (arrays at `ZLIB_LEVEL`, files written without
    TensorFlow); the name of the split that came out empty (TFDS refuses to
    write it), else None."""
    try:
        with quiet_tfds(), zlib_level(ZLIB_LEVEL), tfrecords_without_tensorflow():
            builder.download_and_prepare(download_config=config)
    except AssertionError as err:
        if "No examples were yielded" not in str(err):
            raise
        return builder._current_split
    return None


@contextlib.contextmanager
def tfrecords_without_tensorflow():
    """While inside, TFDS writes TFRecord files with `tfrecord.write_records`
    instead of `tf.io.TFRecordWriter`: generating a part then never loads
    TensorFlow. (The examples are serialized by TFDS' own protos either way.)"""
    from tensorflow_datasets.core import file_adapters

    adapter = file_adapters.TfRecordFileAdapter
    original = adapter.__dict__["write_examples"]

    def write_examples(cls, path, iterator):
        tfrecord.write_records(os.fspath(path), (serialized for _, serialized in iterator))
        return None

    adapter.write_examples = classmethod(write_examples)
    try:
        yield
    finally:
        adapter.write_examples = original


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
