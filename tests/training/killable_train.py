"""Run `train` in this process and kill it with SIGKILL at a chosen point.

    python tests/training/killable_train.py CONFIG_JSON KILL_POINT

KILL_POINT:
- `batch:N`: after the N-th training batch of the whole run (counting from 1);
- `backup:N`: while writing the N-th backup, after its variables are on disk
  and before it is renamed into place;
- `final-save`: halfway through writing model.keras at the end;
- `none`: do not kill.

The kill lands where the hook is, whatever the machine's speed: the tests
that use this never depend on timing.
"""

import json
import os
import signal
import sys

import keras

from keras_lstm.training import run_backup
from keras_lstm.training.train import TrainConfig, train


def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class KillAtBatch(keras.callbacks.Callback):
    def __init__(self, n):
        super().__init__()
        self.n, self.seen = n, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.n:
            die()


def main():
    config = TrainConfig.from_flat(**json.loads(sys.argv[1]))
    point = sys.argv[2]
    callbacks = []
    if point.startswith("batch:"):
        callbacks.append(KillAtBatch(int(point.split(":")[1])))
    elif point.startswith("backup:"):
        target, count = int(point.split(":")[1]), [0]
        savez = run_backup.np.savez

        def savez_then_die(path, **arrays):
            savez(path, **arrays)
            count[0] += 1
            if count[0] == target:
                die()

        run_backup.np.savez = savez_then_die
    elif point == "final-save":
        save = keras.Model.save

        def half_save_then_die(self, filepath, *args, **kwargs):
            if str(filepath).endswith("model.keras"):
                save(self, filepath, *args, **kwargs)
                with open(filepath, "r+b") as f:  # leave it half written
                    f.truncate(os.path.getsize(filepath) // 2)
                die()
            return save(self, filepath, *args, **kwargs)

        keras.Model.save = half_save_then_die
    elif point != "none":
        raise SystemExit(f"unknown kill point {point}")
    summary = train(config, callbacks=callbacks, verbose=0)
    print(json.dumps({"val_loss": summary["val_loss"]}))


if __name__ == "__main__":
    main()
