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
