"""Stateful inference: one frame in, one action out, the state carried.

Every network here has the same explicit-state API, so training and play call
the same code: `initial_state(batch)`, `step(frame, state) -> (output, state)`
and `unroll(frames, state) -> (outputs, state)`, with one state layout (a
tuple per layer, `(h, c)` for LSTM and `(h,)` for GRU, each `[batch, hidden]`):

- `RecurrentBackbone` and `BehaviorCloningPolicy` (TF; `step` is the
  SavedModel's one-frame form, `recurrent.tf_step`);
- `NumpyBackbone` (numpy over a snapshot of the weights, `recurrent.numpy_step`:
  no TensorFlow dispatch, the frame loop's fast path) and `PolicyStepper`, the
  whole policy on it (features -> encoder -> backbone -> heads -> controller);
- `stateful_twin(backbone)`: the Keras way, a `stateful=True` copy at batch 1
  (`reset_twin` zeroes it).

The seed's names stay as thin aliases:

    hidden = initial_hidden(1, hidden_size=256, cell_type="lstm")
    output_BxU, hidden = step(backbone, frame_BxE, hidden)

`tests/model/test_recurrent_forms.py` holds every form equal to the Keras layers.
The numpy paths snapshot the weights when they are built (`step` caches one
snapshot per model): after changing a model's weights, call `refresh(model)`
or build a new `NumpyBackbone` / `PolicyStepper`.

Run a frame loop inside `with frame_loop():` (the play loop and the
benchmark do): multi-threaded BLAS on a shared CPU turns a 0.1 ms step into
many milliseconds, and a full garbage collection can take tens.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import weakref

import keras
import numpy as np
from threadpoolctl import ThreadpoolController

from keras_lstm.data import features
from keras_lstm.model import recurrent
from keras_lstm.model import numpy_policy
from keras_lstm.model.numpy_policy import NumpyPolicy
from keras_lstm.serving.decode import decode_controller
from keras_lstm.model.backbone import CELL_TYPES, LastTimestep

# ---------------------------------------------------------------------------
# BLAS threads
#
# A batch-1 step is a few small matrix-vector products. numpy's OpenBLAS
# splits them over every core; on a busy machine a step then waits for a
# descheduled helper thread, and we measured a median of 16 ms instead of
# 0.2 ms. A frame loop should run its numpy math on one thread.


@functools.lru_cache(maxsize=1)
def _blas_controller() -> ThreadpoolController:
    # Scanning the loaded libraries takes about a millisecond: once.
    return ThreadpoolController()


@contextlib.contextmanager
def blas_threads(n: int = 1):
    """Run numpy's matrix products on `n` threads inside the block
    (threadpoolctl; a no-op for a BLAS it does not know)."""
    with _blas_controller().limit(limits=int(n), user_api="blas"):
        yield


@contextlib.contextmanager
def frame_loop():
    """What a frame loop in Python needs to keep its worst frame short: numpy
    on one BLAS thread (`blas_threads(1)`), and the garbage collector's old
    objects frozen (`gc.freeze`), so that a full collection over the many
    objects TensorFlow and Keras create (tens of ms) never lands in a frame."""
    gc.collect()
    gc.freeze()
    try:
        with blas_threads(1):
            yield
    finally:
        gc.unfreeze()


# ---------------------------------------------------------------------------
# State


def initial_hidden(batch: int, hidden_size: int = 256, num_layers: int = 2, cell_type: str = "lstm") -> tuple:
    """The zero state, one tuple per layer: `(h, c)` for LSTM, `(h,)` for GRU;
    each a `[batch, hidden_size]` float32 array."""
    if cell_type not in CELL_TYPES:
        raise ValueError(f"cell_type must be one of {CELL_TYPES}, got {cell_type!r}")
    for name, value in (("batch", batch), ("hidden_size", hidden_size), ("num_layers", num_layers)):
        if int(value) != value or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return numpy_policy.zero_state(cell_type, batch, hidden_size, num_layers)


# Whether `check_frame` and `step` reject NaN and inf. Always True, except
# inside `keras_lstm.benchmarks.inference`, which switches it off for a
# moment to measure what the checks cost (`unchecked_finite`).
_CHECK_FINITE = True


@contextlib.contextmanager
def unchecked_finite():
    """For the benchmark only: the same paths without the NaN/inf checks."""
    global _CHECK_FINITE
    before, _CHECK_FINITE = _CHECK_FINITE, False
    try:
        yield
    finally:
        _CHECK_FINITE = before


def _non_finite(arr: np.ndarray, name: str) -> ValueError:
    """The ValueError for an array holding NaN or inf: how many, and where the first is."""
    bad = ~np.isfinite(arr)
    first = np.argwhere(bad)[0]
    value = arr[tuple(first)]
    where = ", ".join(str(int(i)) for i in first)
    return ValueError(
        f"{name} has {int(bad.sum())} non-finite value(s) (NaN or inf; first: {value} at [{where}]); "
        "rejected, the recurrent state is unchanged"
    )


def check_frame(frame, width: int, name: str = "frame", dtype=np.float32) -> np.ndarray:
    """`frame` as a C-contiguous `[batch, width]` array of `dtype`, or a
    ValueError stating the expected shape and dtype, or naming the NaN or
    inf it holds (a float frame must be finite: one NaN would make the
    recurrent state NaN for every later frame)."""
    expected = f"expected {name} of shape [batch, {width}] and dtype {np.dtype(dtype).name}"
    arr = np.asarray(frame)
    if arr.ndim != 2 or arr.shape[1] != width or arr.shape[0] < 1:
        raise ValueError(f"{expected}, got shape {list(arr.shape)}")
    if np.issubdtype(np.dtype(dtype), np.floating):
        if not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"{expected}, got dtype {arr.dtype}")
        arr = np.ascontiguousarray(arr, dtype=dtype)
        if _CHECK_FINITE and not np.isfinite(arr).all():
            raise _non_finite(arr, name)
        return arr
    elif not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{expected}, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=dtype)


def _check_hidden(hidden, batch: int, hidden_size: int, num_layers: int, per_layer: int) -> None:
    try:
        ok = len(hidden) == num_layers and all(len(layer) == per_layer for layer in hidden)
    except TypeError:
        ok = False
    if ok:
        ok = all(np.shape(s) == (batch, hidden_size) for layer in hidden for s in layer)
    if not ok:
        kind = "(h, c)" if per_layer == 2 else "(h,)"
        raise ValueError(
            f"expected hidden: {num_layers} layer(s) of {kind}, each of shape [{batch}, {hidden_size}] "
            "(see initial_hidden)"
        )
    if _CHECK_FINITE:
        parts = ("h", "c")
        for i, layer in enumerate(hidden):
            for part, s in zip(parts, layer):
                if not np.isfinite(s).all():
                    raise _non_finite(np.asarray(s), f"hidden layer {i} {part}")


# ---------------------------------------------------------------------------
# The numpy fast path


class NumpyBackbone:
    """A numpy snapshot of a `RecurrentBackbone`'s weights that steps one
    frame: the explicit-state API (`initial_state`, `step`) over
    `recurrent.numpy_step`, with each layer's gate matrices fused
    (`recurrent.fuse_numpy`).

    Args:
        backbone: a built `RecurrentBackbone` (LSTM or GRU).

    Example:
    >>> fast = NumpyBackbone(backbone)
    >>> out_BxU, hidden = fast.step(frame_BxE, fast.initial_hidden(1))
    """

    def __init__(self, backbone):
        self.cell_type = backbone.cell_type
        self.embed_size = backbone.embed_size
        self.hidden_size = backbone.hidden_size
        self.num_layers = backbone.num_layers
        self.layers = [recurrent.fuse_numpy(self.cell_type, layer.cell) for layer in backbone.recurrent_layers]

    def initial_state(self, batch: int) -> tuple:
        """The zero state, numpy, in the one layout (see `initial_hidden`)."""
        return initial_hidden(batch, self.hidden_size, self.num_layers, self.cell_type)

    initial_hidden = initial_state  # the seed's name

    def step(self, frame_BxE, hidden) -> tuple[np.ndarray, tuple]:
        """One frame `[B, embed_size]` from `hidden` -> `(output [B, hidden_size], new_hidden)`."""
        x = check_frame(frame_BxE, self.embed_size)
        _check_hidden(hidden, x.shape[0], self.hidden_size, self.num_layers, 2 if self.cell_type == "lstm" else 1)
        return self._step(x, hidden)

    def _step(self, x, hidden):
        return recurrent.numpy_step(self.cell_type, self.layers, x, hidden)


_SNAPSHOTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _snapshot(model) -> NumpyBackbone:
    if not hasattr(model, "recurrent_layers"):
        raise ValueError(f"step needs a RecurrentBackbone (or a NumpyBackbone), got {type(model).__name__}")
    fast = _SNAPSHOTS.get(model)
    if fast is None:
        fast = _SNAPSHOTS[model] = NumpyBackbone(model)
    return fast


def refresh(model) -> None:
    """Forget the weight snapshot `step` took of `model` (call after training
    it further or loading new weights)."""
    _SNAPSHOTS.pop(model, None)


def step(model, frame, hidden) -> tuple[np.ndarray, tuple]:
    """One frame through a backbone, carrying the recurrent state.

    Args:
        model: a `RecurrentBackbone` (its weights are snapshotted on first use,
            see `refresh`) or a `NumpyBackbone`.
        frame: `[batch, embed_size]` float (one encoded frame per game).
        hidden: the state from `initial_hidden` or the previous `step`.

    Returns:
        `(output [batch, hidden_size] float32, new_hidden)`; `output` is what
        the windowed backbone returns for the window ending at this frame.

    Raises:
        ValueError: a frame or state of the wrong shape or dtype, or holding
            NaN or inf (one would make every later state NaN); the message
            names which, and `hidden` is left as it was.
    """
    fast = model if isinstance(model, NumpyBackbone) else _snapshot(model)
    return fast.step(frame, hidden)


# ---------------------------------------------------------------------------
# The whole policy, one frame at a time


class PolicyStepper:
    """A numpy snapshot of a whole `BehaviorCloningPolicy` that acts one frame
    at a time: features -> encoder -> backbone step -> heads -> controller.

    Args:
        policy: a trained `BehaviorCloningPolicy`.
        batch: games stepped together (the state's batch size).

    Example:
    >>> stepper = PolicyStepper(policy)
    >>> action = stepper.act(numeric_1xF, categorical_1xC)  # decoded controller
    >>> stepper.reset()                                      # new game

    Many games in one process: one row per game, all stepped in one call.
    >>> stepper = PolicyStepper(policy, batch=64)
    >>> actions = stepper.act(numeric_64xF, categorical_64xC)  # actions["main_x"][g]: game g's
    >>> stepper.reset(games=[3])                               # game 3 starts anew, the others go on
    """

    def __init__(self, policy, batch: int = 1):
        # The math is `numpy_policy.NumpyPolicy`'s, the form a UMI bundle carries.
        self.policy = NumpyPolicy.from_keras(policy)
        self.batch = batch
        self.state = self.policy.initial_state(batch)

    @property
    def hidden(self) -> tuple:
        """The carried state (the seed's name for `state`)."""
        return self.state

    @hidden.setter
    def hidden(self, value) -> None:
        self.state = value

    def reset(self, games=None) -> None:
        """Back to the zero state: every game, or only `games` (indices into
        the batch) when they start anew while the others play on."""
        if games is None:
            self.state = self.policy.initial_state(self.batch)
            return
        rows = np.asarray(games, dtype=np.int64).reshape(-1)
        if rows.size and (rows.min() < -self.batch or rows.max() >= self.batch):
            raise ValueError(f"games must be indices of the {self.batch} game(s) this stepper holds, got {rows.tolist()}")
        state = tuple(tuple(part.copy() for part in layer) for layer in self.state)
        for layer in state:
            for part in layer:
                part[rows] = 0.0
        self.state = state

    def encode(self, numeric_BxF, categorical_BxC) -> np.ndarray:
        """The frame encoder in numpy: `[B, NUMERIC_SIZE]`, `[B, CATEGORICAL_SIZE]` -> `[B, embed]`."""
        p = self.policy
        return numpy_policy.encode(p.tables, p.projection_w, p.projection_b, p.relative_features, numeric_BxF, categorical_BxC)

    def logits(self, numeric, categorical) -> dict:
        """One frame per game -> head logits `{head: [B, ...]}`; advances the state.
        ValueError for frames of the wrong shape or with NaN or inf in
        `numeric`: the state is then not advanced."""
        numeric = check_frame(numeric, features.NUMERIC_SIZE, "numeric")
        categorical = check_frame(categorical, features.CATEGORICAL_SIZE, "categorical", np.int64)
        if numeric.shape[0] != self.batch or categorical.shape[0] != self.batch:
            raise ValueError(
                f"expected numeric [{self.batch}, {features.NUMERIC_SIZE}] and categorical "
                f"[{self.batch}, {features.CATEGORICAL_SIZE}] (this stepper holds {self.batch} game(s)), "
                f"got {list(numeric.shape)} and {list(categorical.shape)}"
            )
        logits, self.state = self.policy.logits(numeric, categorical, self.state)
        return logits

    def act(self, numeric, categorical) -> dict:
        """One frame per game -> the decoded controller (see `decode_controller`)."""
        return decode_controller(self.logits(numeric, categorical))


# ---------------------------------------------------------------------------
# The Keras `stateful=True` twin


def stateful_twin(backbone) -> keras.Model:
    """A `stateful=True` copy of `backbone`: batch 1, one frame per call
    (`[1, 1, embed_size]` -> `[1, hidden_size]`), state kept between calls.

    Built from the trained weights with `set_weights(get_weights())` (the two
    models hold the same weights in the same order; the state is not a
    weight). Keras 3 models have no `reset_state()`: use `reset_twin`.
    Call it with `twin(x, training=False)` or `predict_on_batch`, never
    `predict()` in a frame loop.
    """
    layer_cls = keras.layers.LSTM if backbone.cell_type == "lstm" else keras.layers.GRU
    frames = keras.Input(batch_shape=(1, 1, backbone.embed_size), name="frame")
    x = frames
    recurrent_layers = []
    for i in range(backbone.num_layers):
        layer = layer_cls(backbone.hidden_size, return_sequences=True, stateful=True, name=f"{backbone.cell_type}_{i}")
        recurrent_layers.append(layer)
        x = layer(x)
    last = LastTimestep(name="last_timestep")(x)
    twin = keras.Model(frames, last, name=f"{backbone.name}_stateful")
    twin.set_weights(backbone.get_weights())
    twin.recurrent_layers = recurrent_layers
    return twin


def reset_twin(twin: keras.Model) -> None:
    """Zero every recurrent layer's state (start of a new game)."""
    for layer in twin.layers:
        if getattr(layer, "stateful", False):
            layer.reset_state()
