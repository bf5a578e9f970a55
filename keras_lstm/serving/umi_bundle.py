"""`keras-lstm umi bundle`: a run folder -> a submission folder for the
Computer Melee Championship, which runs on numpy and `umi-melee` alone.

    run.py            the bot: `umi.serve` of a `PolicyBot` whose class body
                      declares its name, characters and delay (the arena reads them)
    requirements.txt  numpy and umi-melee: a few megabytes, where TensorFlow is hundreds
    policy.npz        the weights (`NumpyPolicy.save`: plain arrays, no pickle)
    bundle.json       where it came from: the run, its options, the decoding
    keras_lstm/       the TensorFlow-free modules the bot runs, copied as they
                      are from this package (features, controller, UMI frames,
                      the numpy policy, the bot)

The folder is written beside its destination and renamed into place: it
appears whole or not at all. It writes nothing when it runs (a read-only
copy plays), and reads no network.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import keras_lstm
from keras_lstm.data import features
from keras_lstm.files import atomic
from keras_lstm.serving.umi_policy import load_served_policy

# The modules the bot imports, relative to the package: numpy and umi only.
BOT_MODULES = (
    "__init__.py",
    "stderr.py",
    "data/__init__.py",
    "data/controller.py",
    "data/features.py",
    "data/melee_ids.py",
    "data/players.py",
    "data/replays.py",
    "data/umi_frames.py",
    "model/__init__.py",
    "model/numpy_policy.py",
    "serving/__init__.py",
    "serving/decode.py",
    "serving/umi_bot.py",
)
# threadpoolctl (pure Python, tens of kilobytes): one BLAS thread for small batches (`umi_bot.BlasThreads`).
REQUIREMENTS = "numpy>=1.24\numi-melee>=0.1,<0.2\nthreadpoolctl>=3.5\n"

RUN_PY = '''"""{name}: a keras-lstm policy as a Computer Melee Championship bot
(written by `keras-lstm umi bundle`; check it with `umi-conform --cmd "python run.py"`)."""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # the keras_lstm modules beside this file

import umi  # noqa: E402

from keras_lstm.model.numpy_policy import NumpyPolicy  # noqa: E402
from keras_lstm.serving.decode import ControllerSampler, argmax_pad  # noqa: E402
from keras_lstm.serving.umi_bot import DelayMismatch, NumpyActor, PolicyBot  # noqa: E402


class Bot(PolicyBot):
    name = {name!r}
    characters = {characters!r}
    delay = {delay!r}


def main():
    with open(os.path.join(HERE, "bundle.json")) as f:
        decoding = json.load(f)["decoding"]
    policy = NumpyPolicy.load(os.path.join(HERE, "policy.npz"))
    if decoding["mode"] == "sample":
        decoder = ControllerSampler(decoding["temperature"], decoding["seed"]).pad
    else:
        decoder = argmax_pad
    try:
        umi.serve(Bot(NumpyActor(policy, decoder)))
    except DelayMismatch as err:
        sys.exit(f"error: {{err}}")


if __name__ == "__main__":
    main()
'''


def check_bot_name(name: str) -> str:
    if not name or not name.strip() or len(name) > 64 or any(ord(c) < 32 for c in name):
        raise ValueError(f"--name must be 1 to 64 printable characters, got {name!r}")
    return name


def check_umi_delay(delay: int, source: str) -> int:
    from umi.frame import MAX_DELAY, valid_delay

    if not valid_delay(delay):
        raise ValueError(f"{source}: trained at --delay {delay}; the championship takes delays 0 to {MAX_DELAY} (leaderboards at 18 and 21)")
    return delay


def write_bundle(model, out, name: str | None = None, sample: bool = False, temperature: float | None = None,
                 seed: int | None = None, keep_bias: float = 0.0, characters: str | None = None, on_warning=None) -> dict:
    """Write the submission folder `out` for the run at `model`; returns what
    `bundle.json` records. Refuses an `out` that exists (FileExistsError)."""
    out = Path(out).expanduser()
    if out.exists():
        raise FileExistsError(f"{out}: already exists; give --out a new folder (a bundle is never written over)")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"{out.parent}: no such folder (the parent of --out)")
    served = load_served_policy(model, sample, temperature, seed, keep_bias, characters, on_warning)
    if served.numpy_policy is None:
        raise ValueError(f"{served.source}: a SavedModel; a bundle is made from a run folder (keras-lstm train's --output)")
    check_umi_delay(served.delay, served.source)
    name = check_bot_name(name or Path(served.source).resolve().name)
    info = {
        "name": name,
        "characters": served.characters,
        "delay": served.delay,
        "decoding": served.decoding,
        "keep_bias": keep_bias,
        "source_run": str(Path(served.source).resolve()),
        "keras_lstm_version": _package_version(),
        "feature_version": features.FEATURE_VERSION,
    }
    tmp = atomic.temporary_path(out)
    atomic.remove_stale_temporaries(out.parent)
    try:
        with atomic.disk_errors_name(out):  # a full or read-only disk: one line naming --out
            package = Path(keras_lstm.__file__).parent
            for module in BOT_MODULES:
                target = tmp / "keras_lstm" / module
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(package / module, target)
            served.numpy_policy.save(tmp / "policy.npz")
            (tmp / "run.py").write_text(RUN_PY.format(name=name, characters=served.characters, delay=served.delay))
            (tmp / "requirements.txt").write_text(REQUIREMENTS)
            (tmp / "bundle.json").write_text(json.dumps(info, indent=1) + "\n")
            atomic.fsync_tree(tmp)
            os.rename(tmp, out)  # whole or not at all
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {**info, "path": str(out), "bytes": sum(p.stat().st_size for p in out.rglob("*") if p.is_file())}


def _package_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("keras-lstm")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return None
