"""The policy under Keras' JAX backend: a JAX train step equals
TensorFlow's from the same weights and batch (loss and updated weights,
float32 tolerance), and a policy trained under JAX from a replay, where
TensorFlow cannot be imported, loads under TensorFlow and exports to the same
SavedModel and play-loop step. JAX runs in a process of its own
(`backend_worker.py`, TensorFlow blocked there): a process picks its Keras
backend once, at import."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from conftest import GAMES
from keras_lstm.data import controller, features
from keras_lstm.model.policy import build_policy, compile_for_fit

WORKER = Path(__file__).with_name("backend_worker.py")
REPO = Path(__file__).resolve().parents[2]
B, T = 6, 16


def _run_under(backend: str, *args: str) -> None:
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, str(WORKER), *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def _batch(seed: int, loss_frames: int):
    rng = np.random.default_rng(seed)
    x = {
        "numeric": rng.normal(0, 0.5, (B, T, features.NUMERIC_SIZE)).astype(np.float32),
        "categorical": np.stack(
            [rng.integers(0, n, (B, T)) for n in (features.ACTION_STATES, features.ACTION_STATES, features.CHARACTERS, features.CHARACTERS, features.STAGES)],
            axis=-1,
        ).astype(np.int32),
    }
    lead = (B,) if loss_frames == 1 else (B, loss_frames)
    y = {"buttons": (rng.random(lead + (len(controller.BUTTONS),)) < 0.3).astype(np.float32)}
    y.update({h: rng.integers(0, controller.HEAD_CLASSES[h], lead).astype(np.int32) for h in controller.CLASS_HEADS})
    return x, y


def _save_batch(path, x, y):
    np.savez(path, **{f"x_{k}": v for k, v in x.items()}, **{f"y_{k}": v for k, v in y.items()})


# (cell, truncate_bptt, loss_frames, recurrent_impl, relative_features): the
# seed's shapes (the loss on the last frame, full and truncated BPTT), the
# corpus recipe's (the loss on many frames across chunk boundaries) and GRU,
# against TensorFlow's fused form. TensorFlow's other form (its Keras layers)
# takes the same step as the fused one: tests/model/test_recurrent_impl.py.
VARIANTS = [
    ("lstm", None, 1, "fused", False),
    ("lstm", 8, 1, "fused", True),
    ("lstm", 8, 12, "fused", False),
    ("gru", 8, 12, "fused", False),
]


def _start(variant, folder):
    cell, truncate_bptt, loss_frames, impl, relative = variant
    keras.utils.set_random_seed(7)
    policy = build_policy(
        cell, embed_size=16, hidden_size=16, num_layers=2, dropout=0.0, truncate_bptt=truncate_bptt,
        loss_frames=loss_frames, recurrent_impl=impl, relative_features=relative,
    )
    x, y = _batch(1, loss_frames)
    policy(x)
    folder.mkdir()
    policy.save(folder / "start.keras")
    _save_batch(folder / "batch.npz", x, y)
    return policy, x, y


@pytest.mark.slow  # one JAX process for every variant: ~30 s
def test_a_jax_train_step_equals_tensorflows(tmp_path):
    learning_rate = 0.05
    starts = {variant: _start(variant, tmp_path / f"v{n}") for n, variant in enumerate(VARIANTS)}
    jobs = [str(tmp_path / f"v{n}" / name) for n in range(len(VARIANTS)) for name in ("start.keras", "batch.npz", "jax.npz")]
    _run_under("jax", "step", str(learning_rate), *jobs)

    for n, (variant, (policy, x, y)) in enumerate(starts.items()):
        before = policy.get_weights()
        compile_for_fit(policy, keras.optimizers.SGD(learning_rate))
        tf_loss = policy.train_on_batch(x, y, return_dict=True)["loss"]
        after = policy.get_weights()
        jax = np.load(tmp_path / f"v{n}" / "jax.npz")
        assert float(jax["loss"]) == pytest.approx(tf_loss, rel=1e-5), variant
        moved = 0
        for i, (w0, w_tf) in enumerate(zip(before, after)):
            update_tf, update_jax = w0 - w_tf, w0 - jax[f"w{i}"]
            # An update far smaller than its weight is known to the weight's float32 spacing only.
            atol = 1e-4 * max(np.abs(update_tf).max(), 1e-6) + 4 * np.finfo(np.float32).eps * np.abs(w0).max()
            np.testing.assert_allclose(update_jax, update_tf, atol=atol, rtol=0, err_msg=f"{variant}, weight {i}")
            moved += np.abs(update_tf).max() > 0
        assert moved >= len(before) - 3, variant  # embeddings of ids not in the batch may not move; the rest do


@pytest.mark.slow  # a JAX process reading a replay and training, then a SavedModel export: ~25 s
def test_a_policy_trained_under_jax_without_tensorflow_loads_and_exports_under_tensorflow(tmp_path):
    import tensorflow as tf

    from keras_lstm.serving import export, inference

    keras.utils.set_random_seed(11)
    policy = build_policy("lstm", embed_size=16, hidden_size=16, num_layers=2, truncate_bptt=8, loss_frames=12)
    x, y = _batch(2, 12)
    policy(x)
    policy.save(tmp_path / "start.keras")
    _save_batch(tmp_path / "batch.npz", x, y)

    replay = GAMES / "py-slippi_v3.14.0.slp"
    _run_under("jax", "fit", str(tmp_path / "start.keras"), str(replay), str(tmp_path / "batch.npz"), str(tmp_path / "trained.keras"), str(tmp_path / "logits.npz"))

    trained = keras.models.load_model(tmp_path / "trained.keras")
    jax_logits = np.load(tmp_path / "logits.npz")
    assert any(np.abs(a - b).max() > 1e-3 for a, b in zip(policy.get_weights(), trained.get_weights()))  # it trained
    ours = trained.predict(x, verbose=0)
    for head in controller.HEADS:
        np.testing.assert_allclose(ours[head], jax_logits[head], atol=1e-4, err_msg=head)

    saved, _ = export.load_saved_model(export.export_policy(trained, tmp_path / "savedmodels", "from_jax"))
    window = saved.signatures["window"](numeric=tf.constant(x["numeric"]), categorical=tf.constant(x["categorical"]))
    np.testing.assert_allclose(window["main_x_prob"].numpy(), tf.nn.softmax(jax_logits["main_x"]).numpy(), atol=1e-5)
    np.testing.assert_allclose(window["buttons_prob"].numpy(), tf.sigmoid(jax_logits["buttons"]).numpy(), atol=1e-5)

    stepper = inference.PolicyStepper(trained, batch=B)
    for t in range(T):
        logits = stepper.logits(x["numeric"][:, t], x["categorical"][:, t])
    np.testing.assert_allclose(logits["main_x"], jax_logits["main_x"], atol=1e-4)
