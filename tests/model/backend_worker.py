"""Run by tests/model/test_backends.py in a process of its own under another
Keras backend (`KERAS_BACKEND=jax`), with TensorFlow made unimportable, as on
a machine that has JAX alone.

    python backend_worker.py step LR IN.keras BATCH.npz OUT.npz [IN.keras BATCH.npz OUT.npz ...]
        per policy, one SGD step by the backend's own trainer: the loss and the weights after it
    python backend_worker.py fit IN.keras REPLAY BATCH.npz OUT.keras OUT.npz
        a JAX-only machine's whole path: the replay's windows as numpy batches
        (`WindowBatches`), 2 epochs of Adam under fit from IN.keras, the policy
        saved, and its logits on the batch
"""

from __future__ import annotations

import importlib.abc
import sys


class _NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ImportError("TensorFlow is not installed here")


sys.meta_path.insert(0, _NoTensorFlow())

import keras  # noqa: E402 - after TensorFlow is blocked
import numpy as np  # noqa: E402

# The whole model layer imports here; the policy's module registers its classes for loading.
import keras_lstm.model  # noqa: E402,F401
import keras_lstm.model.backbone  # noqa: E402,F401
import keras_lstm.model.encoder  # noqa: E402,F401
import keras_lstm.model.heads  # noqa: E402,F401
import keras_lstm.model.losses  # noqa: E402,F401
import keras_lstm.model.numpy_policy  # noqa: E402,F401
import keras_lstm.model.policy  # noqa: E402,F401
import keras_lstm.model.tbptt  # noqa: E402,F401


def _batch(path):
    data = np.load(path)
    x = {k[2:]: data[k] for k in data.files if k.startswith("x_")}
    y = {k[2:]: data[k] for k in data.files if k.startswith("y_")}
    return x, y


def _fit_from_replay(model_path, replay, batch_path, saved, out):
    from keras_lstm.data import features
    from keras_lstm.data.replays import read_game
    from keras_lstm.data.windows import WindowBatches, make_windows

    policy = keras.models.load_model(model_path)
    x, _ = _batch(batch_path)
    window, loss_frames = x["numeric"].shape[1], policy.loss_frames
    trajectories, _ = features.game_to_trajectories(read_game(replay), replay)
    windows = make_windows([features.align(t, 0) for t in trajectories], window, stride=50)
    policy.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = policy.fit(WindowBatches(windows, batch_size=32, target_frames=loss_frames), epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all(), history.history
    policy.save(saved)
    np.savez(out, **policy.predict(x, verbose=0))
    try:  # TensorFlow's hand-written backward pass is refused here, in words
        keras_lstm.model.policy.build_policy(embed_size=8, hidden_size=8, num_layers=1, recurrent_impl="fused")
        raise AssertionError("fused was accepted under JAX")
    except ValueError as err:
        assert "fused is TensorFlow's" in str(err), err


def main(argv):
    assert keras.backend.backend() == "jax", keras.backend.backend()
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
        _fit_from_replay(*argv[1:6])
    else:
        raise SystemExit(f"unknown command {command!r}")
    tf_modules = [m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow.")]
    assert not tf_modules, tf_modules


if __name__ == "__main__":
    main(sys.argv[1:])
