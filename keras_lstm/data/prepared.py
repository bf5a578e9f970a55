"""A prepared dataset: a replay folder parsed once, in parts, kept up to date
as replays are added, changed or removed.

Layout of one variant (`--val-fraction`/`--seed`), the version folder TFDS
would use (`<data_dir>/slippi_replays/<config>/<version>/`):

- `manifest.json`: the options, the replay folder, and the parts in reading
  order, each with its files (name inside the folder, split, size,
  modification time), examples per split, counts, skipped files and its
  data files with their sizes. Writing it (atomically) is what makes a
  change to the dataset take effect; it is checked whole on every read
  (`read_manifest`);
- `parts/<name>/`: one TFDS dataset folder per part (`keras_lstm.data.parts`;
  no folder for a part none of whose files gave an example).

`prepare` compares the folder with the manifest:

- nothing changed (names, sizes, modification times, options) and every
  listed part whole (`damaged_part`: its data files there, at the sizes
  listed): a no-op;
- a listed part missing or cut short: made again from its files, said;
- files added: only they are parsed, into new parts after the old ones;
- a file changed or removed: its part is made again from the part's
  current files (the other parts are untouched);
- a file keeps its split for good: the files of a first prepare are split
  by `split.split_by_game`, exactly as `train --replays` splits the same
  folder; a file added later goes by its own hash alone
  (`split.held_out_alone`), so adding files never moves another;
- other options or another replay folder: prepared afresh, every file
  parsed into new parts after the old ones, as an update;
- no readable manifest (none, damaged, another format): prepared afresh.

A first prepare, or one over a folder without a readable manifest, builds the
version folder beside the old one and swaps it in whole (`dataset_swap`);
otherwise the new parts are built beside the listed ones, then the manifest
is written, then parts no longer listed are removed. At every instant the
manifest names complete parts only, so a kill loses nothing; what a killed
run leaves is removed by the next `prepare`.

Readers: `load_builder` holds a shared `flock` on the folder of each part it
reads (`PartLeases`) until `builder.leases.release()` or its process ends;
`prepare` removes an unlisted part only under an exclusive one, so a part a
reader holds stays until a later `prepare` (a training started before an
update reads its dataset to the end).

Reading: `load_builder` is `tfds.builder_from_directories` over the listed
parts, with the manifest's merged metadata as `builder.info.metadata`; a
split read unshuffled gives the parts in manifest order, and within a part
its files in name order then port: after a first prepare, the order
`trajectories.load_trajectories` gives.
"""

from __future__ import annotations

import dataclasses
import fcntl
import math
import os
import re
import shutil
import time
from pathlib import Path
from typing import Callable, Sequence

from keras_lstm.data import dataset_swap, features, parts, tfrecord
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


class DamagedDatasetError(ValueError):
    """A prepared dataset's manifest or one of its parts is not as written;
    the message names the file."""


def read_manifest(version: Path) -> dict | None:
    """The manifest of `version`, None if it has none; DamagedDatasetError
    naming the file and what is wrong when it is not one this code wrote
    (every key readers and `prepare` use is checked here, once)."""
    path = version / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = atomic.read_json(path, "prepared dataset manifest")
    except ValueError as err:
        raise DamagedDatasetError(str(err)) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DamagedDatasetError(f"{path}: written by another keras-lstm "
                                  f"(format {manifest.get('format') if isinstance(manifest, dict) else '?'})")
    problem = manifest_problem(manifest)
    if problem is not None:
        raise DamagedDatasetError(f"{path}: not a valid prepared dataset manifest ({problem})")
    return manifest


PART_NAME = re.compile(r"part-(\d{5,})")


def _int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _counts_problem(counts) -> str | None:
    if not isinstance(counts, dict):
        return "'counts' is not an object"
    for split in (TRAIN, VALIDATION):
        if not isinstance(counts.get(split), dict) or not all(_int(v) for v in counts[split].values()):
            return f"'counts' has no {split!r} counts"
    return None


def _record_problem(record) -> str | None:
    if not isinstance(record, dict):
        return "not an object"
    for key in ("name", "files", "examples", "counts", "skipped"):
        if key not in record:
            return f"no {key!r}"
    if not isinstance(record["name"], str) or not PART_NAME.fullmatch(record["name"]):
        return f"'name' {record['name']!r} is not a part's name"
    if not isinstance(record["files"], list):
        return "'files' is not a list"
    for j, f in enumerate(record["files"]):
        if not (isinstance(f, list) and len(f) == 4 and isinstance(f[0], str) and f[1] in (TRAIN, VALIDATION)
                and _int(f[2]) and _int(f[3])):
            return f"'files'[{j}] is not [name, split, size, time]"
    examples = record["examples"]
    if not isinstance(examples, dict) or not all(k in (TRAIN, VALIDATION) and _int(v) and v >= 0 for k, v in examples.items()):
        return "'examples' is not a count per split"
    if not isinstance(record["skipped"], list) or not all(
            isinstance(x, list) and len(x) == 2 and all(isinstance(y, str) for y in x) for x in record["skipped"]):
        return "'skipped' is not a list of [name, reason]"
    files = record.get("data_files", {})  # absent in manifests written before sizes were kept
    if not isinstance(files, dict) or not all(isinstance(k, str) and "/" not in k and k not in ("", ".", "..") and _int(v)
                                              for k, v in files.items()):
        return "'data_files' is not a size per file name"
    return _counts_problem(record["counts"])


def manifest_problem(manifest: dict) -> str | None:
    """What makes `manifest` (format `FORMAT`) unusable, or None."""
    for key, kind in (("options", dict), ("replays_dir", str), ("next_part", int), ("parts", list)):
        if key not in manifest:
            return f"no {key!r}"
        if not isinstance(manifest[key], kind) or (kind is int and not _int(manifest[key])):
            return f"{key!r} is not {'an object' if kind is dict else 'a list' if kind is list else 'a ' + kind.__name__}"
    options = manifest["options"]
    for key in ("feature_version", "val_fraction", "seed", "filter"):
        if key not in options:
            return f"'options' has no {key!r}"
    names = set()
    for i, record in enumerate(manifest["parts"]):
        problem = _record_problem(record)
        if problem is not None:
            return f"parts[{i}]: {problem}"
        if record["name"] in names or int(PART_NAME.fullmatch(record["name"]).group(1)) >= manifest["next_part"]:
            return f"parts[{i}]: 'name' {record['name']} listed twice or not below 'next_part'"
        names.add(record["name"])
    return None


def damaged_part(version: Path, record: dict) -> str | None:
    """What is wrong with a listed part on disk ("PATH: what"), or None: its
    folder and each data file there, at the size the manifest lists (a stat
    each). A part listed without sizes (an older manifest) has its TFRecord
    files walked instead (`tfrecord.count_records`: whole, and as many
    records as the manifest's examples)."""
    if not record["examples"]:
        return None  # no example: no folder
    folder = version / PARTS / record["name"]
    if not folder.is_dir():
        return f"{folder}: missing"
    listed = record.get("data_files")
    if not listed:
        return _older_part_problem(folder, record)
    for name, size in listed.items():
        try:
            found = (folder / name).stat().st_size
        except FileNotFoundError:
            return f"{folder / name}: missing"
        if found != size:
            return f"{folder / name}: {found} bytes, the manifest lists {size}"
    return None


def _older_part_problem(folder: Path, record: dict) -> str | None:
    if not (folder / "dataset_info.json").is_file():
        return f"{folder / 'dataset_info.json'}: missing"
    for split, n in record["examples"].items():
        shards = sorted(folder.glob(f"{DATASET_NAME}-{split}.tfrecord-*"))
        if not shards:
            return f"{folder}/{DATASET_NAME}-{split}.tfrecord-*: missing"
        try:
            found = sum(tfrecord.count_records(shard) for shard in shards)
        except ValueError as err:
            return str(err)
        if found != n:
            return f"{folder}: {found} {split} records, the manifest lists {n}"
    return None


class PartLeases:
    """A reader's hold on the parts it reads: a shared `flock` on each part's
    folder, which `prepare` needs exclusively to remove a part it no longer
    lists (`_remove_part`). Released by `release`, or when the process ends
    (the kernel drops the locks): TFDS keeps every builder whose info was
    read for the life of the process, so a builder is seldom collected."""

    def __init__(self):
        self.fds: list[int] = []

    def hold(self, folder: Path) -> None:
        try:
            fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except FileNotFoundError:
            return  # gone: the caller finds the manifest changed, or names the part as missing
        self.fds.append(fd)
        fcntl.flock(fd, fcntl.LOCK_SH)  # waits only while a prepare is removing it

    def release(self) -> None:
        fds, self.fds = self.fds, []
        for fd in fds:
            os.close(fd)

    def __del__(self):
        self.release()


def _hold_listed_parts(version: Path, manifest: dict) -> PartLeases | None:
    """Hold every part `manifest` lists; None (nothing held) when the
    manifest changed meanwhile (a prepare may have removed one before it was
    held: read it again). Once held, a part stays until released."""
    leases = PartLeases()
    try:
        for record in manifest["parts"]:
            if record["examples"]:
                leases.hold(version / PARTS / record["name"])
        if read_manifest(version) == manifest:
            return leases
    except BaseException:
        leases.release()
        raise
    leases.release()
    return None


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
    parts_repaired: int = 0

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
    damaged: dict[str, str] | None = None,
    first_part: int = 0,
) -> Plan:
    """What to keep and what to build for `listing` (see the module's doc);
    `manifest` None plans a fresh dataset, its parts numbered from
    `first_part`. A part named in `damaged` is made again from its files.
    The added files wait in `new_files` for `Plan.add_new_parts`, which
    needs the number of workers."""

    def spec(number: int, files: list) -> PartSpec:
        return PartSpec(f"part-{number:05d}", str(root), tuple(tuple(f) for f in files), val_fraction, seed, replay_filter)

    if manifest is None:
        full = {str(root / name): name for name in listing}
        _, val = split_by_game(list(full), val_fraction, seed)
        held_out = {full[p] for p in val}
        plan = Plan([], first_part, spec)
        known: set[str] = set()
    else:
        plan = Plan([], manifest["next_part"], spec)
        held_out, known = set(), set()
        for record in manifest["parts"]:
            current, stale = [], record["name"] in (damaged or {})
            plan.parts_repaired += stale
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
    on_repair: Callable[[str], None] | None = None,
) -> dict:
    """Prepare `replays` (a folder) in `data_dir`, or bring the prepared
    dataset up to date with it, the games and players `replay_filter`
    leaves out counted, not stored.

    `workers`: processes that parse (None: see `choose_workers`; never more
    than the parts to build); more than one, or `beam_options` (refused when
    Beam does not know one), runs the parts on Apache Beam. `on_start(n)` is
    called with the number of files about to be parsed, `on_file` once per
    file parsed, `on_repair(line)` for each damage found and repaired (a
    listed part missing or cut short, made again; a manifest that cannot be
    read, prepared afresh). Holds `data_dir`'s lock throughout
    (FolderBusyError if another process has it). Returns a summary (status
    `prepared`, `updated` or `up to date`, counts, skipped files, examples
    per split, size on disk, what this run parsed and repaired, and the
    unlisted parts left for readers that still hold them).
    """
    check_split_options(val_fraction, seed)  # bad options: the error before anything is read or made
    choose_workers(workers, 0, beam_options)
    parts.check_beam_options(beam_options)
    replay_filter = replay_filter or ReplayFilter()
    root = Path(replays).expanduser()
    if root.is_file():
        raise ReplayError(root, "prepare takes a folder of replays, not one file")
    find_replays(root)  # one-line error for a missing or empty folder
    root = root.resolve()
    data_dir = Path(data_dir).expanduser()
    start = time.perf_counter()
    repaired: list[str] = []

    def repair(line: str) -> None:
        repaired.append(line)
        if on_repair is not None:
            on_repair(line)

    with FolderLock(data_dir, "data dir"):
        dataset_swap.remove_leftovers(data_dir, DATASET_NAME, "incomplete.")
        final = version_path(data_dir, val_fraction, seed)
        try:
            old = read_manifest(final)
        except DamagedDatasetError as err:
            old = None  # nothing a reader can use: prepared afresh, replacing it whole
            repair(f"{err}: prepared afresh")
        options = _options(val_fraction, seed, replay_filter)
        # The same dataset is updated; other options or replays are prepared
        # afresh, into new parts beside the listed ones (readers keep theirs).
        same = old is not None and old["options"] == options and old["replays_dir"] == str(root)
        damaged, sizes_added = {}, False
        held = _remove_unlisted_parts(final, old) if old is not None else []  # replaced before, or left by a kill
        if same:
            for record in old["parts"]:
                problem = damaged_part(final, record)
                if problem is not None:
                    damaged[record["name"]] = problem
                    repair(f"{record['name']} damaged ({problem}): made again")
                elif "data_files" not in record:  # listed by an older keras-lstm: its sizes kept from now on
                    record["data_files"] = parts.data_files(final / PARTS / record["name"]) if record["examples"] else {}
                    sizes_added = True
        listing = folder_listing(root)
        plan = plan_parts(old if same else None, listing, root, val_fraction, seed, replay_filter, damaged,
                          first_part=old["next_part"] if old is not None else 0)
        workers = choose_workers(workers, plan.files_to_parse, beam_options)
        plan.add_new_parts(workers)
        workers = min(workers, max(1, len(plan.specs)))  # more would only start idle processes
        up_to_date = same and not plan.specs and len(plan.entries) == len(old["parts"])
        if up_to_date:
            status = "up to date"
            if sizes_added:
                _build_and_list(plan, final, root, len(listing), options, workers, beam_options, on_file)
        else:
            status = "updated" if same else "prepared"
            if on_start is not None:
                on_start(plan.files_to_parse)
            if old is None:
                with dataset_swap.build_dir(data_dir) as build:
                    version = build / final.relative_to(data_dir)
                    _build_and_list(plan, version, root, len(listing), options, workers, beam_options, on_file)
                    atomic.fsync_tree(version)  # whole on disk before it is the dataset
                    dataset_swap.swap_in(version, final)
            else:
                listed = _build_and_list(plan, final, root, len(listing), options, workers, beam_options, on_file)
                held = _remove_unlisted_parts(final, listed)
        summary = summarize(final, status=status, seconds=time.perf_counter() - start)
        summary.update(files_parsed=plan.files_to_parse, files_added=plan.files_added, files_changed=plan.files_changed,
                       files_removed=plan.files_removed, parts_built=len(plan.specs), workers=workers,
                       parsed_by=_parsed_by(workers, beam_options), parts_repaired=plan.parts_repaired,
                       repaired=repaired, parts_held_by_readers=held)
        return summary


def _parsed_by(workers: int, beam_options: Sequence[str]) -> str:
    if beam_options:
        return "on Apache Beam (" + " ".join(beam_options) + ")"
    return "in this process" if workers == 1 else f"on {workers} Apache Beam workers"


def _build_and_list(plan: Plan, version: Path, root: Path, files: int, options: dict, workers: int, beam_options, on_file) -> dict:
    """Build the plan's new parts into `version/parts`, then write its
    manifest (the step that makes them the dataset) and return it."""
    # Nothing to build (files removed only, sizes added): no Beam pipeline to start.
    records = iter(parts.build_parts(plan.specs, version / PARTS, workers, beam_options, on_file) if plan.specs else [])
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


def _remove_unlisted_parts(version: Path, manifest: dict) -> list[str]:
    """Remove the parts the manifest does not list: replaced ones, and those
    a killed update built but never listed; return those left because a
    reader still holds them (a later prepare removes them)."""
    folder = version / PARTS
    if not folder.is_dir():
        return []
    atomic.remove_stale_temporaries(folder)
    listed = {r["name"] for r in manifest["parts"]}
    held = [entry.name for entry in sorted(folder.iterdir())
            if entry.name.startswith("part-") and entry.name not in listed and not _remove_part(entry)]
    shutil.rmtree(folder / parts.PROGRESS_FOLDER, ignore_errors=True)
    return held


def _remove_part(folder: Path) -> bool:
    """Remove a part folder unless a reader holds it (`PartLeases`): False
    then. Under the exclusive lock, so a reader that comes to it meanwhile
    waits, then finds the manifest changed and reads the new one."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        fd = None  # not a folder (nothing reads it) or already gone
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
        if folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder, ignore_errors=True)
        else:
            folder.unlink(missing_ok=True)
        return True
    finally:
        if fd is not None:
            os.close(fd)


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
    command that makes it) when it is not there, DamagedDatasetError naming
    the file when its manifest or a part is damaged (checked here, so that
    it fails before anything is read). The builder holds its parts
    (`builder.leases`, a `PartLeases`) until they are released or the
    process ends: a `prepare` meanwhile leaves them in place."""
    import tensorflow_datasets as tfds

    from keras_lstm.data.tfds_dataset import quiet_tfds

    final = version_path(data_dir, val_fraction, seed)
    if not (final / MANIFEST).is_file():
        dataset_swap.restore_set_aside(final.parent)
    options = "" if config_name(val_fraction, seed) == "default" else f" --val-fraction {val_fraction:g} --seed {seed}"
    command = f"keras-lstm prepare --replays DIR --data-dir {data_dir}{options}"
    for _ in range(100):  # each turn a prepare committed meanwhile: a few at most
        try:
            manifest = read_manifest(final)
        except DamagedDatasetError as err:
            raise DamagedDatasetError(f"{err}; run prepare again ({command})") from None
        if manifest is None:
            if (final / "dataset_info.json").is_file():
                raise FileNotFoundError(f"{final}: prepared by an older keras-lstm, as one dataset without {MANIFEST} (run: {command})")
            raise FileNotFoundError(f"{final}: no prepared dataset (run: {command})")
        leases = _hold_listed_parts(final, manifest)
        if leases is not None:
            break
    else:
        raise DamagedDatasetError(f"{final / MANIFEST}: changed on every read; is a prepare running in a loop?")
    if manifest["options"]["feature_version"] != features.FEATURE_VERSION:
        raise ValueError(f"{final}: prepared with feature version {manifest['options']['feature_version']}, "
                         f"this code uses {features.FEATURE_VERSION}: prepare it again")
    for record in manifest["parts"]:
        problem = damaged_part(final, record)
        if problem is not None:
            leases.release()
            raise DamagedDatasetError(f"{problem} (a damaged prepared dataset); run prepare again to repair it "
                                      f"(keras-lstm prepare --replays {manifest['replays_dir']} --data-dir {data_dir}{options}"
                                      f"{_filter_hint(manifest)})")
    dirs = [final / PARTS / r["name"] for r in manifest["parts"] if r["examples"]]
    with quiet_tfds():
        builder = tfds.builder_from_directories([str(d) for d in dirs])
    builder.info._metadata = tfds.core.MetadataDict(merged_metadata(manifest))
    builder.prepared_path = final
    builder.leases = leases
    return builder


def _filter_hint(manifest: dict) -> str:
    default = ReplayFilter().describe()
    return "" if manifest["options"]["filter"] == default else f" and the filter options it was prepared with: {manifest['options']['filter']}"


def checked_examples(builder, examples):
    """`examples` (an iteration over `builder`'s records), with TensorFlow's
    error for a record file damaged or gone under it (a `DataLossError` names
    no file) as one DamagedDatasetError naming the dataset. (Sizes are
    checked on load: this is for damage that keeps the size.)"""
    import tensorflow as tf

    try:
        yield from examples
    except (tf.errors.DataLossError, tf.errors.NotFoundError) as err:
        first = (err.message or type(err).__name__).strip().splitlines()[0]
        raise DamagedDatasetError(f"{getattr(builder, 'prepared_path', builder.data_dir)}: a record file of the prepared dataset is damaged ({first}); "
                                  "run prepare again to repair it") from None


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
    for example in checked_examples(builder, tfds.as_numpy(ds)):
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
