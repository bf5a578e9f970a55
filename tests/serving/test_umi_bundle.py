"""`keras-lstm umi bundle`: a trained run's submission folder passes the
championship's conformance check (umi-conform's own arena) as the arena runs
it: from a read-only copy, as a non-root user, with no network, with numpy and
umi-melee alone on its path (no TensorFlow, no keras-lstm install)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner
from umi.conform.arena import DummyArena

from conftest import GAMES
from keras_lstm.cli.main import app
from keras_lstm.config import TrainConfig
from keras_lstm.training.train import train

TINY = dict(embed_size=16, hidden_size=16, num_layers=1, window_size=12, stride=6, batch_size=32)
BOT_PACKAGES = ("numpy", "numpy.libs", "msgpack", "umi", "threadpoolctl.py")  # all the bot may import besides the bundle
NOBODY = 65534


def _site_of_bot_packages(folder: Path) -> Path:
    """A folder holding copies of numpy, msgpack and umi only (copies: the
    venv may sit where the bot's user cannot read)."""
    import numpy

    site_packages = Path(numpy.__file__).resolve().parents[1]
    folder.mkdir()
    for name in BOT_PACKAGES:
        if (site_packages / name).is_file():
            shutil.copyfile(site_packages / name, folder / name)
        elif (site_packages / name).exists():
            shutil.copytree(site_packages / name, folder / name, ignore=shutil.ignore_patterns("tests", "__pycache__"))
    return folder


def _can(argv) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _sandbox() -> tuple[list[str], str]:
    """The prefix and interpreter that run the bot as the arena does, as far
    as this machine allows: no network (a new network namespace), a non-root
    user (with a Python of this version that the user may run: the venv's may
    sit in root's home)."""
    prefix = ["unshare", "--net"] if _can(["unshare", "--net", "true"]) else []
    if os.geteuid() != 0:
        return prefix, sys.executable
    # every capability dropped: root's would let the bot read and write what its user may not
    as_nobody = ["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"]
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for python in (sys.executable, os.path.realpath(sys.executable), shutil.which(f"python{version}") or "", f"/usr/bin/python{version}"):
        check = f"import sys; assert sys.version_info[:2] == ({version.replace('.', ', ')})"
        if python and _can([*as_nobody, "env", python, "-S", "-c", check]):
            return prefix + as_nobody, python
    return prefix, sys.executable  # no Python the other user can run: as this one


def _read_only_copy(bundle: Path, dest: Path) -> Path:
    shutil.copytree(bundle, dest)
    for path in [dest, *dest.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) | stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
                   | (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH if path.is_dir() else 0))
    return dest


def _trained_run(tmp: Path, delay: int) -> Path:
    out = tmp / f"run-delay-{delay}"
    config = TrainConfig.from_flat(replays=str(GAMES), output=str(out), epochs=1, max_frames=3000, max_replays=2, delay=delay, **TINY)
    train(config, verbose=0)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0, 18])
def test_a_bundle_passes_umi_conform_in_the_arena_sandbox(tmp_path, request, delay):
    run = _trained_run(tmp_path, delay)
    result = CliRunner().invoke(app, ["umi", "bundle", "--model", str(run), "--out", str(tmp_path / "bot"), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["delay"] == delay and info["characters"] != "ALL" and info["bytes"] < 5_000_000
    assert (tmp_path / "bot" / "requirements.txt").read_text().split() == ["numpy>=1.24", "umi-melee>=0.1,<0.2", "threadpoolctl>=3.5"]

    # A folder the bot's user can reach (pytest's own is its owner's alone).
    arena_dir = Path(tempfile.mkdtemp(prefix="keras-lstm-umi-"))
    request.addfinalizer(lambda: shutil.rmtree(arena_dir, ignore_errors=True))
    arena_dir.chmod(0o755)
    bot = _read_only_copy(tmp_path / "bot", arena_dir / "bot")
    site = _site_of_bot_packages(arena_dir / "site")
    home = arena_dir / "home"  # the bot's only writable folder, as the arena's tmpfs
    home.mkdir()
    home.chmod(0o777)
    # `-S`: no site-packages, so nothing but the bundle and BOT_PACKAGES can be imported.
    prefix, python = _sandbox()
    argv = [*prefix, "env", f"PYTHONPATH={site}", f"HOME={home}", f"TMPDIR={home}", f"XDG_CACHE_HOME={home}",
            python, "-S", "-B", str(bot / "run.py")]
    # A callable command is how umi-conform runs a bot image: it opens the socket folder to the bot's user.
    checks = DummyArena(lambda sock_dir: argv, steps=30).run()
    report = "\n".join(f"{c.status} {c.name} {c.detail}" for c in checks)
    assert [c for c in checks if c.status in ("fail", "warn")] == [], report
    passed = {c.name for c in checks if c.status == "pass"}
    assert {"hello", "hello fields", "ready", "reply time N=1", "lanes and game churn", "characters", "shutdown"} <= passed, report
    assert f"delay {delay}" in next(c.detail for c in checks if c.name == "hello fields")
    assert not list(bot.rglob("__pycache__"))


def test_bundle_refuses_an_existing_folder_and_a_bad_name(tmp_path):
    from test_export import make_run

    make_run(tmp_path / "run")
    (tmp_path / "taken").mkdir()
    result = CliRunner().invoke(app, ["umi", "bundle", "--model", str(tmp_path / "run"), "--out", str(tmp_path / "taken")])
    assert result.exit_code == 2 and "already exists" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(app, ["umi", "bundle", "--model", str(tmp_path / "run"), "--out", str(tmp_path / "b"), "--name", " "])
    assert result.exit_code == 2 and "--name" in result.output
    result = CliRunner().invoke(app, ["umi", "bundle", "--model", str(tmp_path / "run"), "--out", str(tmp_path / "b"), "--characters", "WALUIGI"])
    assert result.exit_code == 2 and "--characters" in result.output
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".tmp-*"))
