"""A prepared dataset: a replay folder parsed once, in parts, kept up to date
as replays are added, changed or removed.

Layout of one variant (`--val-fraction`/`--seed`), the version folder TFDS
would use (`<data_dir>/slippi_replays/<config>/<version>/`):

- `manifest.json`: the options, the replay folder, and the parts in reading
  order, each with its files (name inside the folder, split, size,
  modification time), examples per split, counts and skipped files. Writing
  it (atomically) is what makes a change to the dataset take effect;
- `parts/<name>/`: one TFDS dataset folder per part (`keras_lstm.data.parts`;
  no folder for a part none of whose files gave an example).

`prepare` compares the folder with the manifest:

- nothing changed (names, sizes, modification times, options): a no-op;
- files added: only they are parsed, into new parts after the old ones;
- a file changed or removed: its part is made again from the part's
  current files (the other parts are untouched);
- a file keeps its split for good: the files of a first prepare are split
  by `split.split_by_game`, exactly as `train --replays` splits the same
  folder; a file added later goes by its own hash alone
  (`split.held_out_alone`), so adding files never moves another;
- other options or another replay folder: prepared afresh.

A first or fresh prepare builds the version folder beside the old one and
swaps it in whole (`dataset_swap`); an update builds its new parts beside the
referenced ones, then writes the manifest, then removes parts no longer
listed. At every instant the manifest names complete parts only, so a kill
loses nothing; what a killed run leaves is removed by the next `prepare`.

Reading: `load_builder` is `tfds.builder_from_directories` over the listed
parts, with the manifest's merged metadata as `builder.info.metadata`; a
split read unshuffled gives the parts in manifest order, and within a part
its files in name order then port: after a first prepare, the order
`trajectories.load_trajectories` gives.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Sequence

from keras_lstm.data import dataset_swap, features, parts
from keras_lstm.data.dataset_keys import (  # noqa: F401 - also this module's public names
    COUNT_KEYS, DATASET_NAME, DEFAULT_SEED, DEFAULT_VAL_FRACTION, TRAIN, VALIDATION, check_split_options, config_name,
)
from keras_lstm.data.filters import FILTERS, ReplayFilter
from keras_lstm.data.parts import PartSpec
from keras_lstm.data.replays import ReplayError, find_replays
from keras_lstm.data.split import held_out_alone, split_by_game
from keras_lstm.files import atomic
from keras_lstm.files.lock import FolderLock

MANIFEST = "manifest.json"
PARTS = "parts"
FORMAT = 1
# Most files in one part. A part's examples pass through TFDS' writer
# together (its memory grows ~0.25 MB a file, docs/DATA.md), so this bounds
# a worker's memory; 100,000 replays make ~400 parts.
PART_FILES = 256
# Fewer files to parse than this and `prepare` parses them in this process:
# starting Beam and its worker processes costs more than it saves.
BEAM_MIN_FILES = 64

def version_path(data_dir: str | os.PathLike, val_fraction: float = DEFAULT_VAL_FRACTION, seed: int = DEFAULT_SEED) -> Path:
    """The folder of the variant: `<data_dir>/slippi_replays/<config>/<version>`."""
    return Path(data_dir).expanduser() / DATASET_NAME / config_name(val_fraction, int(seed)) / f"{features.FEATURE_VERSION}.0.0"


def _options(val_fraction: float, seed: int, replay_filter: ReplayFilter) -> dict:
    return {"feature_version": features.FEATURE_VERSION, "val_fraction": val_fraction, "seed": int(seed),
            "filter": replay_filter.describe()}


def read_manifest(version: Path) -> dict | None:
    path = version / MANIFEST
    if not path.is_file():
        return None
    manifest = atomic.read_json(path, "prepared dataset manifest")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: written by another keras-lstm (format {manifest.get('format') if isinstance(manifest, dict) else '?'}); "
                         "prepare it again")
    return manifest


def folder_listing(root: Path) -> dict[str, tuple[int, int]]:
    """Every replay entry below `root` by name inside it: (size, modification
    time in ns). (An entry that cannot be followed, such as a dangling link,
    counts with the link's own size and time.)"""
    listing = {}
    for path in find_replays(root):
        try:
            stat = path.stat()
        except OSError:
            stat = path.lstat()
        listing[path.relative_to(root).as_posix()] = (stat.st_size, stat.st_mtime_ns)
    return listing


@dataclasses.dataclass
class Plan:
    """The parts of the updated dataset in reading order: a kept part's
    record, or the `PartSpec` of a part to build; and the added files (name,
    split, size, time), not yet in parts until `add_new_parts` cuts them."""

    entries: list
    next_part: int
    spec: Callable[[int, list], PartSpec]
    new_files: list = dataclasses.field(default_factory=list)
    files_added: int = 0
    files_changed: int = 0
    files_removed: int = 0

    @property
    def specs(self) -> list[PartSpec]:
        return [e for e in self.entries if isinstance(e, PartSpec)]

    @property
    def files_to_parse(self) -> int:
        return sum(len(s.files) for s in self.specs) + len(self.new_files)

    def add_new_parts(self, workers: int = 1) -> "Plan":
        """The added files as new parts after the others: contiguous runs in
        name order, at most `PART_FILES` each, and at least one per worker."""
        new, self.new_files = self.new_files, []
        if not new:
            return self
        chunks = max(math.ceil(len(new) / PART_FILES), min(workers, len(new)))
        start = 0
        for i in range(chunks):
            size = len(new) // chunks + (i < len(new) % chunks)
            self.entries.append(self.spec(self.next_part, new[start:start + size]))
            self.next_part += 1
            start += size
        return self


def plan_parts(
    manifest: dict | None,
    listing: dict[str, tuple[int, int]],
    root: Path,
    val_fraction: float,
    seed: int,
    replay_filter: ReplayFilter,
) -> Plan:
    """What to keep and what to build for `listing` (see the module's doc);
    `manifest` None plans a fresh dataset. The added files wait in
    `new_files` for `Plan.add_new_parts`, which needs the number of workers."""

    def spec(number: int, files: list) -> PartSpec:
        return PartSpec(f"part-{number:05d}", str(root), tuple(tuple(f) for f in files), val_fraction, seed, replay_filter)

    if manifest is None:
        full = {str(root / name): name for name in listing}
        _, val = split_by_game(list(full), val_fraction, seed)
        held_out = {full[p] for p in val}
        plan = Plan([], 0, spec)
        known: set[str] = set()
    else:
        plan = Plan([], manifest["next_part"], spec)
        held_out, known = set(), set()
        for record in manifest["parts"]:
            current, stale = [], False
            for name, split, size, mtime in record["files"]:
                known.add(name)
                if name not in listing:
                    plan.files_removed += 1
                    stale = True
                    continue
                if tuple(listing[name]) != (size, mtime):
                    plan.files_changed += 1
                    stale = True
                current.append((name, split, *listing[name]))
            if not stale:
                plan.entries.append(record)
            elif current:
                plan.entries.append(spec(plan.next_part, current))
                plan.next_part += 1
    new = sorted(name for name in listing if name not in known)  # the order of split_by_game's lists
    if manifest is not None:
        plan.files_added = len(new)
        held_out = {name for name in new if held_out_alone(name, val_fraction, seed)}
    plan.new_files = [(name, VALIDATION if name in held_out else TRAIN, *listing[name]) for name in new]
    return plan


def choose_workers(workers: int | None, files_to_parse: int, beam_options: Sequence[str]) -> int:
    """`workers` as given, else every core when Beam is installed and there
    are enough files to be worth its start-up, else 1."""
    if workers is not None:
        if workers < 1:
            raise ValueError(f"--workers must be >= 1, got {workers}")
        return workers
    if beam_options:
        return 1  # the runner's options say how many
    if files_to_parse < BEAM_MIN_FILES or not parts.beam_available():
        return 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def prepare(
    replays: str | os.PathLike,
    data_dir: str | os.PathLike,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = DEFAULT_SEED,
    on_file: Callable[[str, str | None], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    replay_filter: ReplayFilter | None = None,
    workers: int | None = None,
    beam_options: Sequence[str] = (),
) -> dict:
    """Prepare `replays` (a folder) in `data_dir`, or bring the prepared
    dataset up to date with it, the games and players `replay_filter`
    leaves out counted, not stored.

    `workers`: processes that parse (None: see `choose_workers`); more than
    one, or `beam_options`, runs the parts on Apache Beam. `on_start(n)` is
    called with the number of files about to be parsed, `on_file` once per
    file parsed. Holds `data_dir`'s lock throughout (FolderBusyError if
    another process has it). Returns a summary (status `prepared`,
    `updated` or `up to date`, counts, skipped files, examples per split,
    size on disk, and what this run parsed).
    """
    check_split_options(val_fraction, seed)  # bad options: the error before anything is read or made
    replay_filter = replay_filter or ReplayFilter()
    root = Path(replays).expanduser()
    if root.is_file():
        raise ReplayError(root, "prepare takes a folder of replays, not one file")
    find_replays(root)  # one-line error for a missing or empty folder
    root = root.resolve()
    data_dir = Path(data_dir).expanduser()
    start = time.perf_counter()
    with FolderLock(data_dir, "data dir"):
        dataset_swap.remove_leftovers(data_dir, DATASET_NAME, "incomplete.")
        final = version_path(data_dir, val_fraction, seed)
        try:
            manifest = read_manifest(final)
        except ValueError:
            manifest = None  # damaged or from another format: prepared afresh, replacing it whole
        options = _options(val_fraction, seed, replay_filter)
        if manifest is not None:
            same = manifest["options"] == options and manifest["replays_dir"] == str(root)
            manifest = manifest if same else None
            if manifest is not None:
                _remove_unlisted_parts(final, manifest)
        listing = folder_listing(root)
        plan = plan_parts(manifest, listing, root, val_fraction, seed, replay_filter)
        workers = choose_workers(workers, plan.files_to_parse, beam_options)
        plan.add_new_parts(workers)
        up_to_date = manifest is not None and not plan.specs and len(plan.entries) == len(manifest["parts"])
        if up_to_date:
            status = "up to date"
        else:
            status = "prepared" if manifest is None else "updated"
            if on_start is not None:
                on_start(plan.files_to_parse)
            if manifest is None:
                with dataset_swap.build_dir(data_dir) as build:
                    version = build / final.relative_to(data_dir)
                    _build_and_list(plan, version, root, len(listing), options, workers, beam_options, on_file)
                    atomic.fsync_tree(version)  # whole on disk before it is the dataset
                    dataset_swap.swap_in(version, final)
            else:
                listed = _build_and_list(plan, final, root, len(listing), options, workers, beam_options, on_file)
                _remove_unlisted_parts(final, listed)
        summary = summarize(final, status=status, seconds=time.perf_counter() - start)
        summary.update(files_parsed=plan.files_to_parse, files_added=plan.files_added, files_changed=plan.files_changed,
                       files_removed=plan.files_removed, parts_built=len(plan.specs), workers=workers,
                       parsed_by=_parsed_by(workers, beam_options))
        return summary


def _parsed_by(workers: int, beam_options: Sequence[str]) -> str:
    if beam_options:
        return "on Apache Beam (" + " ".join(beam_options) + ")"
    return "in this process" if workers == 1 else f"on {workers} Apache Beam workers"


def _build_and_list(plan: Plan, version: Path, root: Path, files: int, options: dict, workers: int, beam_options, on_file) -> dict:
    """Build the plan's new parts into `version/parts`, then write its
    manifest (the step that makes them the dataset) and return it."""
    records = iter(parts.build_parts(plan.specs, version / PARTS, workers, beam_options, on_file))
    listed = [next(records) if isinstance(e, PartSpec) else e for e in plan.entries]
    if not any(r["examples"].get(TRAIN) for r in listed):
        skipped = sum(len(r["skipped"]) for r in listed)
        left_out = sum(r["counts"][TRAIN][f"filtered_{name}"] for r in listed for name in FILTERS)
        raise ValueError(
            f"{root}: no usable replay for training ({skipped} of {files} files skipped"
            + (f", {left_out} games or players left out by the filters)" if left_out else ")")
        )
    manifest = {
        "format": FORMAT,
        "options": options,
        "replays_dir": str(root),
        "next_part": plan.next_part,
        "parts": listed,
    }
    dataset_swap.pause_for_test("manifest")
    atomic.write_json(version / MANIFEST, manifest, indent=None)
    return manifest


def _remove_unlisted_parts(version: Path, manifest: dict) -> None:
    """Parts the manifest does not list: replaced ones, and those a killed
    update built but never listed."""
    folder = version / PARTS
    if not folder.is_dir():
        return
    atomic.remove_stale_temporaries(folder)
    listed = {r["name"] for r in manifest["parts"]}
    for entry in folder.iterdir():
        if entry.name.startswith("part-") and entry.name not in listed:
            shutil.rmtree(entry, ignore_errors=True)
    shutil.rmtree(folder / parts.PROGRESS_FOLDER, ignore_errors=True)


def merged_metadata(manifest: dict) -> dict:
    """The manifest as one dataset's metadata: file lists, skipped files
    and counts over all parts."""
    counts = {split: {k: 0 for k in COUNT_KEYS} for split in (TRAIN, VALIDATION)}
    train_files, val_files, skipped = [], [], []
    for record in manifest["parts"]:
        for name, split, _, _ in record["files"]:
            (val_files if split == VALIDATION else train_files).append(name)
        skipped.extend(record["skipped"])
        for split in (TRAIN, VALIDATION):
            for key, value in record["counts"][split].items():
                counts[split][key] = counts[split].get(key, 0) + value
    return {
        **manifest["options"],
        "replays_dir": manifest["replays_dir"],
        "files": len(train_files) + len(val_files),
        "parts": len(manifest["parts"]),
        "train_files": train_files,
        "val_files": val_files,
        "skipped": skipped,
        "counts": counts,
    }


def load_builder(data_dir: str | os.PathLike, val_fraction: float = DEFAULT_VAL_FRACTION, seed: int = DEFAULT_SEED):
    """The prepared dataset in `data_dir` for this split, as one TFDS builder
    over its parts (metadata: `merged_metadata`); FileNotFoundError (with the
    command that makes it) when it is not there."""
    import tensorflow_datasets as tfds

    from keras_lstm.data.tfds_dataset import quiet_tfds

    final = version_path(data_dir, val_fraction, seed)
    if not (final / MANIFEST).is_file():
        dataset_swap.restore_set_aside(final.parent)
    options = "" if config_name(val_fraction, seed) == "default" else f" --val-fraction {val_fraction:g} --seed {seed}"
    command = f"keras-lstm prepare --replays DIR --data-dir {data_dir}{options}"
    manifest = read_manifest(final)
    if manifest is None:
        if (final / "dataset_info.json").is_file():
            raise FileNotFoundError(f"{final}: prepared by an older keras-lstm, as one dataset without {MANIFEST} (run: {command})")
        raise FileNotFoundError(f"{final}: no prepared dataset (run: {command})")
    if manifest["options"].get("feature_version") != features.FEATURE_VERSION:
        raise ValueError(f"{final}: prepared with feature version {manifest['options'].get('feature_version')}, "
                         f"this code uses {features.FEATURE_VERSION}: prepare it again")
    dirs = [final / PARTS / r["name"] for r in manifest["parts"] if r["examples"]]
    with quiet_tfds():
        builder = tfds.builder_from_directories([str(d) for d in dirs])
    builder.info._metadata = tfds.core.MetadataDict(merged_metadata(manifest))
    builder.prepared_path = final
    return builder


def read_trajectories(builder, split: str, max_frames: int | None = None) -> list:
    """Every trajectory of a split, in reading order (after a first prepare,
    the order `load_trajectories` gives for the same files), sources as full
    paths; with `max_frames`, it stops reading once that many frames are in
    (the last trajectory cut to fit), as `load_trajectories` does."""
    import tensorflow_datasets as tfds

    from keras_lstm.data.tfds_dataset import quiet_tfds, trajectory_from_example

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


def dataset_size_bytes(version: Path) -> int:
    """Bytes on disk of the prepared variant (parts and manifest)."""
    return sum(f.stat().st_size for f in Path(version).rglob("*") if f.is_file())


def summarize(version: str | os.PathLike, **extra) -> dict:
    version = Path(version)
    manifest = read_manifest(version)
    meta = merged_metadata(manifest)
    counts = meta["counts"]
    examples = {split: sum(r["examples"].get(split, 0) for r in manifest["parts"]) for split in (TRAIN, VALIDATION)}
    return {
        **extra,
        "dataset": f"{DATASET_NAME}/{version.parent.name}:{version.name}",
        "data_path": str(version),
        "replays_dir": meta["replays_dir"],
        "files": meta["files"],
        "parts": meta["parts"],
        "examples": {split: n for split, n in examples.items() if n},
        **{k: counts[TRAIN][k] + counts[VALIDATION][k] for k in COUNT_KEYS},
        "counts": counts,
        "skipped": meta["skipped"],
        "size_bytes": dataset_size_bytes(version),
    }
