"""Print how far a killed-and-resumed run ends from the uninterrupted one.

    .venv/bin/python tests/training/resume_difference.py

Trains the tiny configuration of `test_train_resume.py` once uninterrupted,
then once per kill point (mid-epoch 2, while writing the 4th backup, during
the final save of model.keras, just into epoch 3), each killed with SIGKILL
in a subprocess and resumed; prints the validation losses, their relative
difference and the epochs in `history.json`. The tests assert the
difference is within 1e-3; this shows what it is. About a minute on 2 cores.
"""

import json
import sys
import tempfile
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]  # test_train_resume, conftest

import test_train_resume as t  # noqa: E402
from keras_lstm.training.train import TrainConfig, train  # noqa: E402


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="resume-difference-"))
    whole = train(TrainConfig.from_flat(output=str(root / "whole"), **t.CONFIG), verbose=0)["val_loss"]
    steps = t.steps_per_epoch()
    for point in (f"batch:{steps + 8}", "backup:4", "final-save", f"batch:{2 * steps + 1}"):
        out = root / point.replace(":", "-")
        t.run_until_killed(out, point)
        resumed = train(TrainConfig.from_flat(output=str(out), **t.CONFIG), verbose=0)["val_loss"]
        epochs = len(json.loads((out / "history.json").read_text())["loss"])
        print(f"killed at {point:12s} val_loss {resumed:.9f}  uninterrupted {whole:.9f}  "
              f"relative difference {abs(resumed - whole) / whole:.2e}  epochs in history {epochs}")


if __name__ == "__main__":
    main()
