"""Shared fixtures: where the sample replays are, and tiny model sizes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
# ../shared/replays from the repository root (read-only; never copied here).
REPLAYS = Path(os.environ.get("KERAS_LSTM_TEST_REPLAYS", REPO.parent / "shared" / "replays"))
GAMES = REPLAYS / "games"
CLIPS = REPLAYS / "clips"
BAD = REPLAYS / "bad"


@pytest.fixture(scope="session")
def replays_dir() -> Path:
    if not GAMES.is_dir():
        pytest.fail(f"sample replays not found at {REPLAYS} (set KERAS_LSTM_TEST_REPLAYS)")
    return REPLAYS


# A small prepared dataset (`keras-lstm prepare`), shared by the tests of the
# stream (tests/data/test_pipeline.py) and of training from it
# (tests/training/test_inputs.py).
PREPARED_NAMES = (
    "peppi_transform.slp",
    "slippi-js_v2_test.slp",
    "slippi-js_test.slp",
    "libmelee_test_game_2.slp",
    "slippi-js_id_2_to_21.slp",
    "slippi-js_teams_time.slp",
)
PREPARED_VAL_FRACTION = 0.25


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, replays_dir):
    """`(replay folder, data folder, builder)`: PREPARED_NAMES (links to the
    sample games, never copies) prepared with PREPARED_VAL_FRACTION."""
    from keras_lstm.data import prepared

    folder = tmp_path_factory.mktemp("replays")
    for name in PREPARED_NAMES:
        (folder / name).symlink_to(GAMES / name)
    data_dir = tmp_path_factory.mktemp("data")
    prepared.prepare(folder, data_dir, val_fraction=PREPARED_VAL_FRACTION)
    return folder, data_dir, prepared.load_builder(data_dir, PREPARED_VAL_FRACTION)


def reference_windows(folder: Path, builder, split: str, W: int, stride: int, delay: int):
    """The in-memory windows (`make_windows`) of the games of a prepared split."""
    from keras_lstm.data import features
    from keras_lstm.data.trajectories import load_trajectories
    from keras_lstm.data.windows import make_windows

    files = builder.info.metadata["train_files" if split == "train" else "val_files"]
    report = load_trajectories([folder / f for f in files])
    return make_windows([features.align(t, delay) for t in report.trajectories], W, stride)


def assert_prepared_reads_as_parsed(data_dir: Path, val_fraction: float) -> dict:
    """Each split of the prepared dataset in `data_dir` holds exactly the
    trajectories of its files, in its order, equal (arrays and dtypes) to
    parsing those files now; returns the dataset's metadata."""
    import numpy as np

    from keras_lstm.data import prepared
    from keras_lstm.data.trajectories import load_trajectories

    builder = prepared.load_builder(data_dir, val_fraction)
    meta = builder.info.metadata
    folder = Path(meta["replays_dir"])
    for split, key in ((prepared.TRAIN, "train_files"), (prepared.VALIDATION, "val_files")):
        expected = load_trajectories([folder / f for f in meta[key]]).trajectories
        got = prepared.read_trajectories(builder, split)
        assert [(Path(t.source).name, t.port) for t in got] == [(Path(t.source).name, t.port) for t in expected]
        for a, b in zip(got, expected):
            for x, y in ((a.state_numeric, b.state_numeric), (a.state_categorical, b.state_categorical),
                         *((a.targets[head], b.targets[head]) for head in b.targets)):
                np.testing.assert_array_equal(x, y)
                assert x.dtype == y.dtype
    return meta


def kill_when_paused(code: str, stage: str, tmp_path: Path) -> tuple[int, int]:
    """Run `code` in a Python subprocess with the test hook
    `KERAS_LSTM_TEST_PAUSE=<stage>:<file>` (`dataset_swap.pause_for_test`),
    wait until some process of it reaches `stage`, then SIGKILL the
    subprocess (reaped: its process id is dead). Returns the ids of the
    process that paused (the subprocess, or one it started) and of the
    subprocess."""
    import signal
    import subprocess
    import sys
    import time

    from keras_lstm.data import dataset_swap

    signal_file = tmp_path / f"paused-{stage}"
    env = {**os.environ, dataset_swap.PAUSE_ENV: f"{stage}:{signal_file}", "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not (signal_file.exists() and signal_file.read_text().endswith("\n")):  # the pid, whole
            if proc.poll() is not None:
                pytest.fail(f"the process ended (code {proc.returncode}) before pausing at {stage}: {proc.stderr.read().decode()[-2000:]}")
            assert time.monotonic() < deadline, f"no process reached {stage}"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    return int(signal_file.read_text()), proc.pid
