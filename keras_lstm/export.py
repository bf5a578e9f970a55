"""Export a trained policy as a SavedModel for TF Serving (or any TF runtime).

`export_run(run_dir)` writes `savedmodels/<name>/<version>/` (TF Serving's
`model_base_path` layout: one integer-named folder per version; the next
free version by default). The export is written to a hidden temporary folder
beside it and renamed into place, so a crash never leaves a half-written
version where a server would load it (TF Serving ignores folders whose name
is not a number).

Signatures (`saved_model_cli show --dir savedmodels/<name>/<version> --all`):

- `serving_default(numeric [1, F], categorical [1, C])`: the whole policy,
  one frame of one game; the recurrent state lives in variables inside the
  model and advances with each call. Call `reset` at the start of a game.
  Outputs: `buttons_prob [1, 8]`, `<head>_prob` for main_x, main_y, c_x, c_y
  `[1, 17]` and shoulder `[1, 5]`, and the decoded controller: `buttons
  [1, 8]` (0/1), `main_x`, `main_y`, `c_x`, `c_y` in [-1, 1] and `shoulder`
  in [0, 1] (`[1]` each).
- `reset()`: zero the held state; returns `{"reset": True}` (a signature
  may not return nothing).
- `step(numeric [B, F], categorical [B, C], h [B, L, U], c [B, L, U])`:
  stateless, for serving many games from one server (TF Serving treats a
  model as a pure function, so held state would be shared by every client):
  the same outputs plus the new `h` and `c`. GRU models have no `c`.
  Start a game with zeros.
- `window(numeric [B, T, F], categorical [B, T, C])`: the windowed policy
  as trained; the same outputs for the last frame of each window.

Here F = `features.NUMERIC_SIZE`, C = `features.CATEGORICAL_SIZE`, L the
number of layers and U the hidden size. The one-frame step (`_core`) is
written out over the policy's own Keras variables in as few TF ops as
possible; the tests hold it equal to the Keras model.

`keras_lstm.json` beside `saved_model.pb` records what a client needs to
build inputs (feature version, delay, sizes, signature names).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_lstm import controller, features

DEFAULT_BASE_DIR = "savedmodels"
METADATA_FILE = "keras_lstm.json"
SIGNATURES = ("serving_default", "reset", "step", "window")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def decode_controller_tf(logits: dict) -> dict:
    """TF twin of `keras_lstm.inference.decode_controller` (the export test
    holds the two equal): probabilities and the decoded controller. The four
    stick heads go through one softmax and one argmax (fewer ops per call)."""
    out = {"buttons_prob": tf.sigmoid(logits["buttons"])}
    out["buttons"] = tf.cast(out["buttons_prob"] > 0.5, tf.float32)
    sticks_BxSxK = tf.stack([logits[h] for h in controller.STICK_HEADS], axis=1)
    stick_probs = tf.unstack(tf.nn.softmax(sticks_BxSxK, axis=-1), axis=1)
    stick_values_BxS = tf.cast(tf.argmax(sticks_BxSxK, axis=-1), tf.float32) * (2.0 / (controller.STICK_CLASSES - 1)) - 1.0
    for head, probs, value in zip(controller.STICK_HEADS, stick_probs, tf.unstack(stick_values_BxS, axis=1)):
        out[f"{head}_prob"] = probs
        out[head] = value
    out["shoulder_prob"] = tf.nn.softmax(logits["shoulder"], axis=-1)
    out["shoulder"] = tf.cast(tf.argmax(logits["shoulder"], axis=-1), tf.float32) * (1.0 / (controller.SHOULDER_CLASSES - 1))
    return out


class _Untracked:
    """Holds a model without making it a SavedModel dependency."""

    def __init__(self, model):
        self.model = model


class PolicyServingModule(tf.Module):
    """The policy wrapped for `tf.saved_model.save`, with the signatures above.

    Args:
        policy: a trained `BehaviorCloningPolicy`.
    """

    def __init__(self, policy):
        super().__init__(name="keras_lstm_policy")
        backbone = policy.backbone
        # Track the layers the signatures use, not the policy itself: a
        # trained policy also holds its optimizer's slots (twice the weights).
        self.encoder = policy.encoder
        self.backbone = backbone
        self.heads = [policy.head_layers[name] for name in controller.HEADS]
        self._policy = _Untracked(policy)
        self.cell_type = backbone.cell_type
        self.num_layers = backbone.num_layers
        self.hidden_size = backbone.hidden_size
        self.has_c = backbone.cell_type == "lstm"
        self._max_ids = tf.constant([size - 1 for size in features.CATEGORICAL_SIZES], tf.int32)
        self._head_sizes = [len(controller.BUTTONS)] + [controller.HEAD_CLASSES[h] for h in controller.CLASS_HEADS]
        # The held state of `serving_default`: one variable per layer and part,
        # so a step reads and writes them without slicing or stacking.
        per_layer = ("h", "c") if self.has_c else ("h",)
        self.held_state = [
            [tf.Variable(tf.zeros([1, self.hidden_size]), trainable=False, name=f"held_{part}_{i}") for part in per_layer]
            for i in range(self.num_layers)
        ]

        F, C, L, U = features.NUMERIC_SIZE, features.CATEGORICAL_SIZE, backbone.num_layers, backbone.hidden_size
        numeric_1 = tf.TensorSpec([1, F], tf.float32, name="numeric")
        categorical_1 = tf.TensorSpec([1, C], tf.int32, name="categorical")
        numeric_B = tf.TensorSpec([None, F], tf.float32, name="numeric")
        categorical_B = tf.TensorSpec([None, C], tf.int32, name="categorical")
        h_B = tf.TensorSpec([None, L, U], tf.float32, name="h")
        c_B = tf.TensorSpec([None, L, U], tf.float32, name="c")

        # Explicit input signatures: a stateful model must keep batch 1, and
        # without a signature a tf.function retraces per batch size.
        self.serving_default = tf.function(self._held_step, input_signature=[numeric_1, categorical_1])
        self.reset = tf.function(self._reset, input_signature=[])
        if self.has_c:
            self.step = tf.function(self._stateless_lstm_step, input_signature=[numeric_B, categorical_B, h_B, c_B])
        else:
            self.step = tf.function(self._stateless_gru_step, input_signature=[numeric_B, categorical_B, h_B])
        self.window = tf.function(
            self._window,
            input_signature=[
                tf.TensorSpec([None, None, F], tf.float32, name="numeric"),
                tf.TensorSpec([None, None, C], tf.int32, name="categorical"),
            ],
        )

    # -- the one step all signatures share ----------------------------------

    def _core(self, numeric_BxF, categorical_BxC, state):
        """One frame per game through encoder, backbone and heads; `state` is
        per layer `(h, c)` (LSTM) or `(h,)` (GRU), each `[B, U]`. Written in
        as few TF ops as possible (each op costs microseconds of dispatch at
        batch 1); the same math as the Keras layers, which
        `tests/test_export.py` holds equal. Returns `(outputs, new_state)`."""
        encoder = self.encoder
        ids = tf.clip_by_value(categorical_BxC, 0, self._max_ids)
        action_ids, character_ids, stage_ids = tf.split(ids, [2, 2, 1], axis=1)

        def embed(table, ids_BxK):  # -> [B, K * width]; static shape, so no tf.shape op
            return tf.reshape(tf.gather(table, ids_BxK), [-1, ids_BxK.shape[1] * table.shape[1]])

        actions = embed(encoder.action_embedding.embeddings, action_ids)
        characters = embed(encoder.character_embedding.embeddings, character_ids)
        stage = embed(encoder.stage_embedding.embeddings, stage_ids)
        x = tf.concat([numeric_BxF, actions, characters, stage], axis=1)
        x = tf.nn.relu(tf.matmul(x, encoder.projection.kernel) + encoder.projection.bias)

        new_state = []
        for layer, layer_state in zip(self.backbone.recurrent_layers, state):
            cell = layer.cell
            if self.has_c:
                h, c = layer_state
                z = tf.matmul(x, cell.kernel) + tf.matmul(h, cell.recurrent_kernel) + cell.bias
                i, f, g, o = tf.split(z, 4, axis=1)  # Keras' gate order
                c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
                x = tf.sigmoid(o) * tf.tanh(c)
                new_state.append((x, c))
            else:
                (h,) = layer_state
                input_bias, recurrent_bias = tf.unstack(cell.bias)
                x_z, x_r, x_h = tf.split(tf.matmul(x, cell.kernel) + input_bias, 3, axis=1)
                h_z, h_r, h_h = tf.split(tf.matmul(h, cell.recurrent_kernel) + recurrent_bias, 3, axis=1)
                update = tf.sigmoid(x_z + h_z)
                reset = tf.sigmoid(x_r + h_r)
                x = update * h + (1.0 - update) * tf.tanh(x_h + reset * h_h)
                new_state.append((x,))

        kernel = tf.concat([layer.kernel for layer in self.heads], axis=1)
        bias = tf.concat([layer.bias for layer in self.heads], axis=0)
        logits = dict(zip(controller.HEADS, tf.split(tf.matmul(x, kernel) + bias, self._head_sizes, axis=1)))
        return decode_controller_tf(logits), new_state

    def _held_step(self, numeric, categorical):
        outputs, new_state = self._core(numeric, categorical, self.held_state)
        for variables, values in zip(self.held_state, new_state):
            for variable, value in zip(variables, values):
                variable.assign(value)
        return outputs

    def _reset(self):
        for variables in self.held_state:
            for variable in variables:
                variable.assign(tf.zeros_like(variable))
        return {"reset": tf.constant(True)}

    def _stateless_lstm_step(self, numeric, categorical, h, c):
        state = list(zip(tf.unstack(h, self.num_layers, axis=1), tf.unstack(c, self.num_layers, axis=1)))
        outputs, new_state = self._core(numeric, categorical, state)
        return {**outputs, "h": tf.stack([s[0] for s in new_state], axis=1), "c": tf.stack([s[1] for s in new_state], axis=1)}

    def _stateless_gru_step(self, numeric, categorical, h):
        state = [(layer_h,) for layer_h in tf.unstack(h, self.num_layers, axis=1)]
        outputs, new_state = self._core(numeric, categorical, state)
        return {**outputs, "h": tf.stack([s[0] for s in new_state], axis=1)}

    def _window(self, numeric, categorical):
        logits = self._policy.model({"numeric": numeric, "categorical": categorical}, training=False)
        return decode_controller_tf(logits)

    def signatures(self) -> dict:
        return {name: getattr(self, name) for name in SIGNATURES}


def next_version(model_dir: Path) -> int:
    """One more than the highest integer-named version folder (1 if none)."""
    versions = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()] if model_dir.is_dir() else []
    return max(versions, default=0) + 1


def export_policy(policy, base_dir: str | os.PathLike, name: str, version: int | None = None, metadata: dict | None = None) -> Path:
    """Write `policy` to `<base_dir>/<name>/<version>/` and return that path.

    Raises ValueError for a bad name or version, or a version that exists
    (versions are never overwritten: a server may be reading them).
    """
    if not _NAME_RE.match(name or ""):
        raise ValueError(f"--name must be letters, digits, '.', '_' or '-' (not starting with a symbol), got {name!r}")
    model_dir = Path(base_dir).expanduser() / name
    if version is None:
        version = next_version(model_dir)
    if version <= 0:
        raise ValueError(f"--version must be a positive integer, got {version}")
    final = model_dir / str(version)
    if final.exists():
        raise ValueError(f"{final} already exists (versions are never overwritten; pick another --version or omit it)")
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = model_dir / f".tmp-{version}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        module = PolicyServingModule(policy)
        tf.saved_model.save(module, str(tmp), signatures=module.signatures())
        backbone = policy.backbone
        meta = {
            "format": "keras_lstm.savedmodel/1",
            "feature_version": features.FEATURE_VERSION,
            "numeric_size": features.NUMERIC_SIZE,
            "categorical_size": features.CATEGORICAL_SIZE,
            "cell_type": backbone.cell_type,
            "hidden_size": backbone.hidden_size,
            "num_layers": backbone.num_layers,
            "embed_size": backbone.embed_size,
            "heads": list(controller.HEADS),
            "buttons": list(controller.BUTTONS),
            "signatures": list(SIGNATURES),
            **(metadata or {}),
        }
        (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=1))
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def export_run(model: str | os.PathLike, base_dir: str | os.PathLike = DEFAULT_BASE_DIR, name: str | None = None, version: int | None = None) -> Path:
    """Export a run folder written by `keras-lstm train` (or its `.keras` file)."""
    from keras_lstm.train import load_run

    policy, run_info = load_run(model)
    path = Path(model).expanduser()
    run_dir = path.parent if path.suffix == ".keras" else path
    if name is None:
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", run_dir.resolve().name) or "policy"
    cfg = run_info.get("config", {})
    metadata = {
        "delay": cfg.get("delay", 0),
        "window_size": cfg.get("window_size"),
        "trained_feature_version": run_info.get("feature_version"),
        "source_run": str(run_dir.resolve()),
    }
    return export_policy(policy, base_dir, name, version, metadata)


def read_metadata(saved_model_dir: str | os.PathLike) -> dict:
    """`keras_lstm.json` of an exported version folder."""
    path = Path(saved_model_dir) / METADATA_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing (not a folder written by keras-lstm export)")
    return json.loads(path.read_text())


def zeros_state(meta: dict, batch: int = 1) -> dict:
    """Zero `h` (and `c` for LSTM) for the stateless `step` signature."""
    shape = (batch, meta["num_layers"], meta["hidden_size"])
    state = {"h": np.zeros(shape, np.float32)}
    if meta["cell_type"] == "lstm":
        state["c"] = np.zeros(shape, np.float32)
    return state
