"""Building the parts of a prepared dataset: in this process, or on Apache
Beam's workers.

A part is a TFDS dataset folder made from a few hundred replay files (a
`PartSpec`: their names inside the replay folder, each with its split, size
and modification time). `build_part` makes one, whole or not at all: it is
generated in a temporary folder beside its final place and renamed there.
It returns the part's *record* (a JSON-able dict: files, examples per split,
counts, skipped files with their reasons), which `keras_lstm.data.prepared`
keeps in the dataset's manifest.

`build_parts` builds a list of them:

- `workers=1` and no Beam options: one after the other in this process;
- otherwise as an Apache Beam pipeline (`pip install 'keras-lstm[beam]'`),
  one element per part: by default Beam's local runner with `workers`
  processes on this machine (`keras_lstm.data.beam_worker` each); with `beam_options` (Beam's own
  command-line flags, e.g. `--runner=FlinkRunner --flink_master=host:8081`)
  on any runner whose workers see the same data dir (a shared file system).
  Workers report each file as they read it, and each part's record when it
  is made, in `<parts_dir>/.progress/`: this process shows progress and
  names skipped files while they work, and gathers the records at the end.

Parts and not TFDS' own Beam mode (`_generate_examples` returning a
PTransform): that mode writes a whole dataset in one pipeline, so adding
replays would rewrite everything. A part is small and independent, so it is
the unit both of parallel work and of incremental updates, and each worker
runs TFDS' ordinary writer on it (without TensorFlow:
`tfds_dataset.tfrecords_without_tensorflow`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import sys
import threading
from pathlib import Path
from typing import Callable, Sequence

from keras_lstm.data import dataset_swap
from keras_lstm.data.dataset_keys import TRAIN, VALIDATION
from keras_lstm.data.filters import ReplayFilter
from keras_lstm.files import atomic

PROGRESS_FOLDER = ".progress"

OnFile = Callable[[str, "str | None"], None]


@dataclasses.dataclass(frozen=True)
class PartSpec:
    """What one part is made of: `files` as (name inside `root`, split,
    size, modification time in ns) as seen when the part was planned."""

    name: str
    root: str
    files: tuple[tuple[str, str, int, int], ...]
    val_fraction: float
    seed: int
    replay_filter: ReplayFilter = ReplayFilter()


def beam_available() -> bool:
    try:
        _import_beam()
    except ImportError:
        return False
    return True


def _import_beam():
    """`apache_beam`, imported without the warnings it logs about Google
    Cloud clients it does not find (not used here)."""
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        import apache_beam
    finally:
        root.setLevel(level)
    return apache_beam


def check_beam_options(beam_options: Sequence[str]) -> None:
    """ValueError (one line, the option named) for a Beam option that no
    options class of the installed Beam knows, or a value its parser refuses;
    Beam itself drops unknown options with a warning that `prepare` mutes.
    Before any work: a typo in a cluster flag must not run elsewhere."""
    if not beam_options:
        return
    try:
        _import_beam()
        from apache_beam.options.pipeline_options import PipelineOptions
    except ImportError:
        raise ValueError("--beam-options needs Apache Beam: pip install 'keras-lstm[beam]'") from None
    import contextlib
    import difflib
    import io

    options = PipelineOptions(list(beam_options))
    errors = io.StringIO()
    try:
        with _quiet_beam(), contextlib.redirect_stderr(errors):
            known = options.get_all_options()
            given = options.get_all_options(retain_unknown_options=True)
    except SystemExit:  # argparse's way of refusing a value; its reason is the last line it printed
        reason = (errors.getvalue().strip().splitlines() or ["not valid"])[-1].partition("error: ")[2]
        raise ValueError(f"--beam-options: {reason or 'not valid'}") from None
    # An unknown flag is only in `given`, or there under a known name's key with another value (`--flink-master`).
    for dest in [d for d in given if d not in known or given[d] != known[d]]:
        flag = next((f.split("=", 1)[0] for f in beam_options
                     if f.startswith("-") and f.split("=", 1)[0].lstrip("-").replace("-", "_") == dest), f"--{dest}")
        close = difflib.get_close_matches(dest, known, n=1)
        hint = f" (did you mean --{close[0]}?)" if close else ""
        raise ValueError(f"--beam-options: Apache Beam has no option {flag}{hint}")


def build_part(spec: PartSpec, parts_dir: str | os.PathLike, on_file: OnFile | None = None) -> dict:
    """Generate `spec` as `<parts_dir>/<spec.name>` (no folder when none of
    its files gave an example) and return its record."""
    import tensorflow_datasets as tfds

    from keras_lstm.data import tfds_dataset

    tfds.disable_progress_bar()  # the caller shows progress per file
    parts_dir = Path(parts_dir)
    files = {TRAIN: [], VALIDATION: []}
    for name, split, _, _ in spec.files:
        files[split].append(str(Path(spec.root) / name))
    reported: set[str] = set()

    def report_once(name: str, reason: str | None) -> None:
        # A retry without an empty split reads its files again.
        if name not in reported:
            reported.add(name)
            if on_file is not None:
                on_file(name, reason)

    config = tfds.download.DownloadConfig(manual_dir=spec.root, compute_stats=tfds.download.ComputeStatsMode.SKIP)
    skip = frozenset(split for split, paths in files.items() if not paths)
    with dataset_swap.build_dir(parts_dir, spec.name) as build:  # one per part: several may build at once
        while True:
            builder = tfds_dataset.make_builder(
                build, spec.val_fraction, spec.seed, files=files, on_file=report_once, skip_splits=skip,
                replay_filter=spec.replay_filter,
            )
            if skip == {TRAIN, VALIDATION}:
                # Nothing to write: read the files once more for their counts only.
                builder._split_generators(_ManualDir(spec.root))
                break
            empty = tfds_dataset.generate(builder, config)
            if empty is None:
                made = Path(builder.data_path)
                atomic.fsync_tree(made)
                os.rename(made, parts_dir / spec.name)
                atomic.fsync_dir(parts_dir)
                break
            skip = skip | {empty}
    meta = builder.info.metadata
    examples = {split: int(builder.info.splits[split].num_examples) for split in (TRAIN, VALIDATION)
                if split not in skip and split in builder.info.splits}
    return {
        "name": spec.name,
        "files": [list(f) for f in spec.files],
        "examples": examples,
        "counts": meta["counts"],
        "skipped": meta["skipped"],
        "data_files": data_files(parts_dir / spec.name) if examples else {},
    }


def data_files(part: Path) -> dict[str, int]:
    """The files of a part folder with their sizes, as the manifest lists
    them: what a reader checks before it reads (a part deleted or cut short
    under the dataset is named, not found mid-training)."""
    return {f.name: f.stat().st_size for f in sorted(part.iterdir()) if f.is_file()}


@dataclasses.dataclass
class _ManualDir:
    manual_dir: str


def build_parts(
    specs: Sequence[PartSpec],
    parts_dir: str | os.PathLike,
    workers: int = 1,
    beam_options: Sequence[str] = (),
    on_file: OnFile | None = None,
) -> list[dict]:
    """Build every part of `specs` into `parts_dir`; their records in the
    order of `specs`."""
    parts_dir = Path(parts_dir)
    parts_dir.mkdir(parents=True, exist_ok=True)
    if workers <= 1 and not beam_options:
        return [build_part(spec, parts_dir, on_file) for spec in specs]
    return _build_with_beam(specs, parts_dir, workers, beam_options, on_file)


def _build_in_worker(spec: PartSpec, parts_dir: str) -> dict:
    """A Beam worker's task: one part, each file it reads written to the
    progress log the launching process follows."""
    log = Path(parts_dir) / PROGRESS_FOLDER / f"{spec.name}.log"
    record = build_part(spec, parts_dir, lambda name, reason: _log_file(log, name, reason))
    atomic.write_json(Path(parts_dir) / PROGRESS_FOLDER / f"{spec.name}.json", record)
    return record


def _log_file(log: Path, name: str, reason: str | None) -> None:
    """One line of a worker's progress log: JSON escapes any name (tabs,
    newlines, bytes that are not UTF-8) into one ASCII line."""
    with open(log, "a", encoding="ascii") as out:
        out.write(json.dumps([name, reason]) + "\n")


class _ProgressFollower:
    """Reads the workers' progress logs as they grow and calls `on_file`
    once per line."""

    def __init__(self, folder: Path, on_file: OnFile | None):
        self.folder, self.on_file = folder, on_file
        self.offsets: dict[Path, int] = {}

    def poll(self) -> None:
        for log in sorted(self.folder.glob("*.log")):
            with open(log, "rb") as f:
                f.seek(self.offsets.get(log, 0))
                data = f.read()
            end = data.rfind(b"\n") + 1  # a line still being written waits for the next poll
            self.offsets[log] = self.offsets.get(log, 0) + end
            for line in data[:end].decode("ascii").splitlines():
                name, reason = json.loads(line)
                if self.on_file is not None:
                    self.on_file(name, reason)


def _build_with_beam(specs, parts_dir: Path, workers: int, beam_options: Sequence[str], on_file) -> list[dict]:
    try:
        beam = _import_beam()
        from apache_beam.options.pipeline_options import PipelineOptions
    except ImportError:
        raise ValueError(
            "preparing on several workers needs Apache Beam: pip install 'keras-lstm[beam]' (or --workers 1)"
        ) from None
    progress = parts_dir / PROGRESS_FOLDER
    shutil.rmtree(progress, ignore_errors=True)
    progress.mkdir()
    if beam_options:
        options, runner = PipelineOptions(list(beam_options)), None
    else:
        # The DirectRunner's multi-processing mode, with our quiet worker
        # command (`beam_worker`) in place of Beam's own.
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner
        from apache_beam.transforms import environments

        command = f"{shlex.quote(sys.executable)} -m keras_lstm.data.beam_worker"
        runner = FnApiRunner(default_environment=environments.SubprocessSDKEnvironment.from_command_string(command))
        options = PipelineOptions(direct_num_workers=workers, default_sdk_harness_log_level="ERROR")
    follower = _ProgressFollower(progress, on_file)
    done = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            with _quiet_beam(), beam.Pipeline(runner=runner, options=options) as pipeline:
                (
                    pipeline
                    | "parts" >> beam.Create(list(specs))
                    | "spread" >> beam.Reshuffle()  # else one worker gets every part
                    | "build" >> beam.Map(_build_in_worker, str(parts_dir))
                )
        except BaseException as err:  # re-raised in the calling thread
            failure.append(err)
        finally:
            done.set()

    thread = threading.Thread(target=run, name="beam-prepare", daemon=True)
    thread.start()
    while not done.wait(0.5):
        follower.poll()
    thread.join()
    follower.poll()
    try:
        if failure:
            raise failure[0]
        # The records come back through the shared folder: a worker's return
        # value stays in the worker's process.
        missing = [s.name for s in specs if not (progress / f"{s.name}.json").is_file()]
        if missing:
            raise RuntimeError(f"{parts_dir}: the Beam pipeline left no record of parts {', '.join(missing)}")
        return [atomic.read_json(progress / f"{s.name}.json", "part record") for s in specs]
    finally:
        shutil.rmtree(progress, ignore_errors=True)


class _quiet_beam:
    """Beam's own lines (worker start-up, bundles, notes about options it
    passes its workers) off while it runs, and TensorFlow's start-up lines in
    the workers it starts; errors still show."""

    def __enter__(self):
        import logging

        self.tf_level = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
        if self.tf_level is None:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # inherited by the workers
        self.loggers = [logging.getLogger(n) for n in ("apache_beam", "root")]
        self.levels = [lg.level for lg in self.loggers]
        for lg in self.loggers:
            lg.setLevel(max(lg.level, logging.ERROR))
        return self

    def __exit__(self, *exc):
        for lg, level in zip(self.loggers, self.levels):
            lg.setLevel(level)
        if self.tf_level is None:
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
        return False
