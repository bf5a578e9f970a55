"""Run by tests/model/test_backends.py in a process of its own under another
Keras backend (`KERAS_BACKEND=jax`), where none of our TensorFlow modules may run.

    python backend_worker.py step LR IN.keras BATCH.npz OUT.npz [IN.keras BATCH.npz OUT.npz ...]
        per policy, one SGD step by the backend's own trainer: the loss and the weights after it
    python backend_worker.py fit IN.keras BATCH.npz OUT.keras OUT.npz
        a few Adam steps under fit; the trained policy saved, and its logits on the batch
"""

from __future__ import annotations

import sys

import keras
import numpy as np

import keras_lstm.model.policy  # noqa: F401 - registers the policy's classes for loading


def _batch(path):
    data = np.load(path)
    x = {k[2:]: data[k] for k in data.files if k.startswith("x_")}
    y = {k[2:]: data[k] for k in data.files if k.startswith("y_")}
    return x, y


def main(argv):
    command = argv[0]
    if command == "step":
        learning_rate, jobs = float(argv[1]), argv[2:]
        for model_path, batch_path, out in zip(jobs[0::3], jobs[1::3], jobs[2::3]):  # one process for all: JAX starts once
            policy = keras.models.load_model(model_path)
            x, y = _batch(batch_path)
            policy.compile(optimizer=keras.optimizers.SGD(learning_rate))
            logs = policy.train_on_batch(x, y, return_dict=True)
            np.savez(out, loss=np.float32(logs["loss"]), **{f"w{i}": w for i, w in enumerate(policy.get_weights())})
    elif command == "fit":
        model_path, batch_path, saved, out = argv[1:5]
        policy = keras.models.load_model(model_path)
        x, y = _batch(batch_path)
        policy.compile(optimizer=keras.optimizers.Adam(1e-2))
        policy.fit(x, y, batch_size=len(next(iter(x.values()))), epochs=3, verbose=0)
        policy.save(saved)
        logits = policy.predict(x, verbose=0)
        np.savez(out, **logits)
    else:
        raise SystemExit(f"unknown command {command!r}")
    # Keras' own data adapters may look TensorFlow up where it is installed;
    # none of our TensorFlow modules may run here.
    ours = {"keras_lstm.model.tf_training", "keras_lstm.model.recurrent", "keras_lstm.model.encoder_tf"}
    assert not ours & set(sys.modules), f"TensorFlow's forms were imported: {sorted(ours & set(sys.modules))}"


if __name__ == "__main__":
    main(sys.argv[1:])
