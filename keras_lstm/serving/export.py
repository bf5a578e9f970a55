"""Export a trained policy as a SavedModel for TF Serving (or any TF runtime).

`export_run(run_dir)` writes `savedmodels/<name>/<version>/` (TF Serving's
`model_base_path` layout: one integer-named folder per version; the next
free version by default). The export is written to a hidden temporary folder
beside it (`.tmp-<pid>-export-...`, see `keras_lstm.files.atomic`) and
renamed into place, so a crash never leaves a half-written version where a
server would load it (TF Serving ignores folders whose name is not a
number); the next export removes the temporary folders of killed ones. The
version is chosen and the folder renamed under a lock on the model folder
(`<name>/.lock`), so two exports at once get versions N and N+1.

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

Every signature that takes frames fails the call (InvalidArgumentError
naming the input) on NaN or inf in `numeric`, or in `h`/`c` for `step`,
and `step` fails when `h`, `c` or `categorical` has another batch size
than `numeric` (rather than broadcasting one game's state over all):
`serving_default` then leaves its held state as it was.

`keras-lstm export --xla` compiles the one-frame math of `serving_default`
and `step` with XLA (`jit_compile`; the checks above stay outside it, as
XLA drops assertions): faster on a CPU (`keras-lstm bench serve`), and TF
Serving runs it only when started with `--xla_cpu_compilation_enabled=true`.

Here F = `features.NUMERIC_SIZE`, C = `features.CATEGORICAL_SIZE`, L the
number of layers and U the hidden size. The one-frame step (`_core`) is
written out over the policy's own Keras variables in as few TF ops as
possible; the tests hold it equal to the Keras model.

`keras_lstm.json` beside `saved_model.pb` records what a client needs to
build inputs (feature version, delay, sizes, signature names).
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow as tf

from keras_lstm.data import controller, features
from keras_lstm.files.atomic import disk_errors_name, fsync_dir, fsync_tree, read_json, remove_stale_temporaries, temporary_path, writer_gone
from keras_lstm.files.lock import FolderBusyError, FolderLock
from keras_lstm.model import recurrent
from keras_lstm.model.encoder_tf import encode_tf
from keras_lstm.serving.decode import decode_controller_tf

DEFAULT_BASE_DIR = "savedmodels"
METADATA_FILE = "keras_lstm.json"
SIGNATURES = ("serving_default", "reset", "step", "window")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class _Untracked:
    """Holds a model without making it a SavedModel dependency."""

    def __init__(self, model):
        self.model = model


class PolicyServingModule(tf.Module):
    """The policy wrapped for `tf.saved_model.save`, with the signatures above.

    Every signature that takes frames fails the call (InvalidArgumentError)
    on NaN or inf in `numeric` (and in `h`/`c` for `step`), before anything
    is computed or assigned: one NaN frame would otherwise make the held
    state NaN for every later frame, and the decoded controller ("no
    buttons, sticks at -1") would look like a real action. `step` also fails
    when `h`, `c` and `categorical` do not have `numeric`'s batch size.

    Args:
        policy: a trained `BehaviorCloningPolicy`.
        check_inputs: leave True; False builds the same graph without those
            checks, only for `keras-lstm bench inference` to measure what
            they cost.
        jit_compile: compile the one-frame math of `serving_default` and
            `step` with XLA. The input checks and the held state's reads and
            writes stay outside the compiled part: XLA drops assertions.
            TF Serving runs it only with `--xla_cpu_compilation_enabled=true`.
    """

    def __init__(self, policy, check_inputs: bool = True, jit_compile: bool = False):
        super().__init__(name="keras_lstm_policy")
        self._check_inputs = bool(check_inputs)
        self.jit_compile = bool(jit_compile)
        # The math every frame signature runs: one XLA cluster when compiled.
        self._frame = tf.function(self._core, jit_compile=True) if self.jit_compile else self._core
        backbone = policy.backbone
        # Track the layers the signatures use, not the policy itself: a
        # trained policy also holds its optimizer's slots (twice the weights).
        self.encoder = policy.encoder
        self.backbone = backbone
        self.heads = [policy.head_layers[name] for name in controller.HEADS]
        self.previous_input = policy.previous_input
        self._policy = _Untracked(policy)
        self.cell_type = backbone.cell_type
        self.num_layers = backbone.num_layers
        self.hidden_size = backbone.hidden_size
        self.has_c = backbone.cell_type == "lstm"
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
        `tests/serving/test_export.py` holds equal. Returns `(outputs, new_state)`."""
        x = encode_tf(self.encoder, numeric_BxF, categorical_BxC)
        cells = [layer.cell for layer in self.backbone.recurrent_layers]
        x, new_state = recurrent.tf_step(self.cell_type, cells, x, state)
        if self.previous_input is not None:  # heads that also see the previous input (model/heads.py)
            x = tf.concat([x, self.previous_input(numeric_BxF)], axis=1)

        kernel = tf.concat([layer.kernel for layer in self.heads], axis=1)
        bias = tf.concat([layer.bias for layer in self.heads], axis=0)
        logits = dict(zip(controller.HEADS, tf.split(tf.matmul(x, kernel) + bias, self._head_sizes, axis=1)))
        return decode_controller_tf(logits), new_state

    # -- input checks (in the graph, so every TF runtime gets them) ---------

    def _finite(self, tensor, name: str, signature: str):
        """`tensor`, after a check that fails the call on NaN or inf. Use the
        returned tensor: whatever is computed from it (and every state
        assignment, see `_held_step`) runs only once the check has passed."""
        if not self._check_inputs:
            return tensor
        return tf.debugging.assert_all_finite(
            tensor, f"{signature}: {name} has NaN or inf values (the input must be finite; nothing was computed or updated)"
        )

    def _same_batch(self, numeric, others: dict):
        """Fail the call unless every tensor in `others` has `numeric`'s batch
        size (TF would otherwise broadcast an `h`/`c` of batch 1 over every game)."""
        if not self._check_inputs:
            return []
        names = list(others)
        names = ", ".join(names[:-1]) + " and " + names[-1]
        batch = tf.shape(numeric, out_type=tf.int32)[0]
        others_batch = tf.stack([tf.shape(t, out_type=tf.int32)[0] for t in others.values()])
        return [
            tf.debugging.assert_equal(
                others_batch,
                batch,
                message=f"step: {names} must have the batch size (first dimension) of numeric",
                summarize=len(others),
            )
        ]

    def _held_step(self, numeric, categorical):
        numeric = self._finite(numeric, "numeric", "serving_default")
        held = [[variable.read_value() for variable in layer] for layer in self.held_state]
        outputs, new_state = self._frame(numeric, categorical, held)
        # The check comes first: the held state is only assigned once the
        # input is known finite, so a rejected frame leaves it as it was.
        with tf.control_dependencies([numeric]):
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
        with tf.control_dependencies(self._same_batch(numeric, {"h": h, "c": c, "categorical": categorical})):
            numeric = self._finite(numeric, "numeric", "step")
            h = self._finite(h, "h", "step")
            c = self._finite(c, "c", "step")
        state = list(zip(tf.unstack(h, self.num_layers, axis=1), tf.unstack(c, self.num_layers, axis=1)))
        outputs, new_state = self._frame(numeric, categorical, state)
        return {**outputs, "h": tf.stack([s[0] for s in new_state], axis=1), "c": tf.stack([s[1] for s in new_state], axis=1)}

    def _stateless_gru_step(self, numeric, categorical, h):
        with tf.control_dependencies(self._same_batch(numeric, {"h": h, "categorical": categorical})):
            numeric = self._finite(numeric, "numeric", "step")
            h = self._finite(h, "h", "step")
        state = [(layer_h,) for layer_h in tf.unstack(h, self.num_layers, axis=1)]
        outputs, new_state = self._frame(numeric, categorical, state)
        return {**outputs, "h": tf.stack([s[0] for s in new_state], axis=1)}

    def _window(self, numeric, categorical):
        numeric = self._finite(numeric, "numeric", "window")
        logits = self._policy.model({"numeric": numeric, "categorical": categorical}, training=False)
        return decode_controller_tf(logits)

    def signatures(self) -> dict:
        return {name: getattr(self, name) for name in SIGNATURES}


def next_version(model_dir: Path) -> int:
    """One more than the highest integer-named version folder (1 if none)."""
    versions = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()] if model_dir.is_dir() else []
    return max(versions, default=0) + 1


# Called with the temporary folder once the SavedModel and its metadata are
# written, before a version number is chosen. Tests set it to run a second
# export at exactly that point; it is None otherwise.
_before_publish: Callable[[Path], None] | None = None
# How long an export waits for another export's lock on the model folder (it
# is held only while a version is chosen and renamed into place: milliseconds).
LOCK_WAIT_S = 60.0
_sleep = time.sleep  # tests replace it to release a lock at a controlled point
_LEGACY_TMP_RE = re.compile(r"^\.tmp-(\d+)-(\d+)$")  # `.tmp-<version>-<pid>`, before the `.tmp-<pid>-...` scheme


def remove_stale_exports(model_dir: Path) -> list[Path]:
    """Remove the temporary folders of exports whose process is gone (killed
    exports leave them); an export in progress is left alone. Returns what
    was removed."""
    removed = remove_stale_temporaries(model_dir)
    if model_dir.is_dir():
        for entry in model_dir.iterdir():
            match = _LEGACY_TMP_RE.match(entry.name)
            if match and writer_gone(int(match.group(2))):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
    return removed


def _lock_model_dir(model_dir: Path) -> FolderLock:
    """The model folder's lock, waiting up to LOCK_WAIT_S for another export."""
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            return FolderLock(model_dir, "model folder").acquire()
        except FolderBusyError:
            if time.monotonic() >= deadline:
                raise
            _sleep(0.05)


def _publish(tmp: Path, model_dir: Path, version: int | None) -> Path:
    """Rename the finished `tmp` folder to its version folder, under the model
    folder's lock: two exports at once get two different versions."""
    lock = _lock_model_dir(model_dir)
    try:
        while True:
            if version is None:
                chosen = next_version(model_dir)
                while (model_dir / str(chosen)).exists():  # a file with a version's name
                    chosen += 1
            else:
                chosen = version
            final = model_dir / str(chosen)
            if final.exists():  # only an explicit --version can get here
                raise ValueError(f"{final} already exists (versions are never overwritten; pick another --version or omit it)")
            try:
                os.rename(tmp, final)
            except OSError as err:
                # A writer that does not take the lock made the folder meanwhile.
                if err.errno in (errno.EEXIST, errno.ENOTEMPTY) and version is None:
                    continue
                if err.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    raise ValueError(f"{final} already exists (versions are never overwritten; pick another --version or omit it)") from None
                raise
            break
        fsync_dir(model_dir)
    finally:
        lock.release()
    return final


def export_policy(
    policy, base_dir: str | os.PathLike, name: str, version: int | None = None, metadata: dict | None = None,
    jit_compile: bool = False,
) -> Path:
    """Write `policy` to `<base_dir>/<name>/<version>/` and return that path
    (`jit_compile`: see `PolicyServingModule`).

    The SavedModel and `keras_lstm.json` are written to a temporary folder
    `.tmp-<pid>-export-...` beside the versions, flushed to disk, then renamed
    to the version folder: a version appears whole or not at all, and TF
    Serving ignores the temporary folder (its name is not a number). The
    version is chosen and the rename done under a lock on the model folder
    (`<base_dir>/<name>/.lock`), so two exports at once get versions N and
    N+1. Temporary folders of killed exports are removed at the start.

    Raises ValueError for a bad name or version, or a version that exists
    (versions are never overwritten: a server may be reading them).
    """
    if not _NAME_RE.match(name or ""):
        raise ValueError(f"--name must be letters, digits, '.', '_' or '-' (not starting with a symbol), got {name!r}")
    if version is not None and (int(version) != version or version <= 0):
        raise ValueError(f"--version must be a positive integer, got {version}")
    base = Path(base_dir).expanduser()
    if base.exists() and not base.is_dir():
        raise FileExistsError(f"{base}: is a file, not a folder (--base-dir must be a folder)")
    model_dir = base / name
    if model_dir.exists() and not model_dir.is_dir():
        raise FileExistsError(f"{model_dir}: is a file, not a folder (the model folder <base-dir>/<name> must be a folder)")
    if version is not None and (model_dir / str(version)).exists():  # fail before the slow part
        raise ValueError(f"{model_dir / str(version)} already exists (versions are never overwritten; pick another --version or omit it)")
    model_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_exports(model_dir)
    tmp = temporary_path(model_dir / f"export-{secrets.token_hex(4)}")
    try:
        with disk_errors_name(model_dir):  # a full or read-only disk: one line naming the model folder
            module = PolicyServingModule(policy, jit_compile=jit_compile)
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
                "xla": bool(jit_compile),
                **(metadata or {}),
            }
            (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=1))  # inside the folder that is renamed whole
            fsync_tree(tmp)
            if _before_publish is not None:
                _before_publish(tmp)
            final = _publish(tmp, model_dir, version)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def export_run(
    model: str | os.PathLike, base_dir: str | os.PathLike = DEFAULT_BASE_DIR, name: str | None = None, version: int | None = None,
    jit_compile: bool = False,
    keep_bias: float = 0.0,
) -> Path:
    """Export a run folder written by `keras-lstm train` (or its `.keras`
    file), its heads with `keep_bias` folded in
    (`keras_lstm.model.heads.fold_keep_bias`; recorded in the metadata)."""
    from keras_lstm.model.heads import check_keep_bias, fold_keep_bias
    from keras_lstm.training.run_folder import load_run

    path = Path(model).expanduser()
    if (path / "saved_model.pb").exists() or (path / METADATA_FILE).exists():
        raise ValueError(f"{path}: already a SavedModel (from keras-lstm export); --model takes a run folder from keras-lstm train")
    check_keep_bias(keep_bias)  # before the model loads
    policy, run_info = load_run(model)
    if keep_bias:
        fold_keep_bias(policy, keep_bias)
    run_dir = path.parent if path.suffix == ".keras" else path
    if name is None:
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", run_dir.resolve().name) or "policy"
    cfg = run_info.get("config", {})
    metadata = {
        "delay": cfg.get("delay", 0),
        "window_size": cfg.get("window_size"),
        "trained_feature_version": run_info.get("feature_version"),
        "source_run": str(run_dir.resolve()),
        "keep_bias": keep_bias,
    }
    return export_policy(policy, base_dir, name, version, metadata, jit_compile=jit_compile)


def format_export_summary(path) -> str:
    """`keras-lstm export`'s report: the version folder written and its signatures."""
    return f"exported {path}\nsignatures: {', '.join(SIGNATURES)} (saved_model_cli show --dir {path} --all)"


_REQUIRED_METADATA = ("feature_version", "numeric_size", "categorical_size", "cell_type", "hidden_size", "num_layers")


def read_metadata(saved_model_dir: str | os.PathLike) -> dict:
    """`keras_lstm.json` of an exported version folder (ValueError naming the
    file if it is damaged)."""
    path = Path(saved_model_dir) / METADATA_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (not a folder written by keras-lstm export)")
    meta = read_json(path, f"{METADATA_FILE} (written by keras-lstm export)")
    missing = [key for key in _REQUIRED_METADATA if key not in meta] if isinstance(meta, dict) else list(_REQUIRED_METADATA)
    if missing:
        raise ValueError(f"{path}: damaged or not written by keras-lstm export (missing {', '.join(missing)}); export the model again")
    return meta


def load_saved_model(saved_model_dir: str | os.PathLike):
    """`(loaded, meta)` for a version folder written by `export_policy`, or a
    one-line error naming the file: FileNotFoundError for a missing
    `saved_model.pb` or `keras_lstm.json`, ValueError for a damaged one, a
    SavedModel without our signatures or one exported for other features."""
    folder = Path(saved_model_dir).expanduser()
    pb = folder / "saved_model.pb"
    if not pb.is_file():
        raise FileNotFoundError(f"{pb}: missing (not a SavedModel folder written by keras-lstm export)")
    meta = read_metadata(folder)
    if meta["feature_version"] != features.FEATURE_VERSION or (meta["numeric_size"], meta["categorical_size"]) != (
        features.NUMERIC_SIZE,
        features.CATEGORICAL_SIZE,
    ):
        raise ValueError(
            f"{folder / METADATA_FILE}: exported for features version {meta['feature_version']} "
            f"({meta['numeric_size']} numeric, {meta['categorical_size']} categorical), this keras-lstm computes "
            f"version {features.FEATURE_VERSION} ({features.NUMERIC_SIZE}, {features.CATEGORICAL_SIZE}); "
            "retrain and export again"
        )
    try:
        loaded = tf.saved_model.load(str(folder))
    except Exception as err:  # noqa: BLE001 - TF raises OSError, DecodeError, OpError... for a damaged SavedModel
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        if "cannot parse" in reason.lower() or "saved_model.pb" in reason:
            raise ValueError(f"{pb}: damaged or not a SavedModel (cannot parse it: {type(err).__name__}); export the model again") from None
        raise ValueError(
            f"{folder}: damaged or not a SavedModel (its saved_model.pb or variables/ cannot be read: "
            f"{type(err).__name__}: {reason}); export the model again"
        ) from None
    missing = [name for name in SIGNATURES if name not in loaded.signatures]
    if missing:
        raise ValueError(f"{folder}: not a SavedModel written by keras-lstm export (no {', '.join(missing)} signature)")
    return loaded, meta


def zeros_state(meta: dict, batch: int = 1) -> dict:
    """Zero `h` (and `c` for LSTM) for the stateless `step` signature."""
    shape = (batch, meta["num_layers"], meta["hidden_size"])
    state = {"h": np.zeros(shape, np.float32)}
    if meta["cell_type"] == "lstm":
        state["c"] = np.zeros(shape, np.float32)
    return state
