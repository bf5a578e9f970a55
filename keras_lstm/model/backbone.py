"""The recurrent backbone: `[batch, seq, embed] -> [batch, hidden]`.

`num_layers` x (`LSTM(hidden_size, return_sequences=True)` -> `Dropout`), then
the last timestep. GRU is the drop-in alternative: one state per layer instead
of two, and fewer parameters. The backbone knows nothing of controllers or
losses; `keras_lstm.model.policy` wraps it with inputs, heads and the loss.

Backend-neutral (`keras.layers`, `keras.ops`): it runs under any Keras
backend. The state has one layout everywhere: a tuple with one entry per
layer, `(h, c)` for LSTM and `(h,)` for GRU, each `[batch, hidden]`.
`keras_layers_unroll` runs the layers from a given state and returns the
final state (what truncated BPTT, evaluation and play need); under
TensorFlow, `unroll` and `step` run TensorFlow's faster forms of the same
math instead (`keras_lstm.model.recurrent`, held equal by
`tests/model/test_recurrent_forms.py`).
"""

from __future__ import annotations

import contextlib

import keras

from keras_lstm.config import CELL_TYPES, dimension


def recurrent_param_count(cell_type: str, input_size: int, hidden_size: int) -> int:
    """Exact parameters of one Keras recurrent layer.

    LSTM: 4 gates x (kernel + recurrent kernel + bias). Keras' GRU defaults to
    `reset_after=True`, which keeps two biases per gate.
    """
    d, u = input_size, hidden_size
    if cell_type == "lstm":
        return 4 * (u * (d + u) + u)
    if cell_type == "gru":
        return 3 * (u * (d + u) + 2 * u)
    raise ValueError(f"cell_type must be one of {CELL_TYPES}, got {cell_type!r}")


def check_positive(**values: int | float) -> None:
    """ValueError naming the value (as given: `**{"batch-size": n}` for an
    option's name) unless each is a finite number > 0, a whole one at most
    int32's largest (what these sizes and counts are held in)."""
    for name, value in values.items():
        dimension(name, value)


@keras.saving.register_keras_serializable(package="keras_lstm")
class LastTimestep(keras.layers.Layer):
    """`[batch, seq, features] -> [batch, features]`: the final timestep."""

    def call(self, x_BxTxF):
        return x_BxTxF[:, -1, :]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])


@keras.saving.register_keras_serializable(package="keras_lstm")
class RecurrentBackbone(keras.Model):
    """Stacked LSTM or GRU layers with dropout; outputs the last timestep.

    Args:
        embed_size: width of each input frame.
        hidden_size: units per recurrent layer.
        num_layers: how many recurrent layers are stacked.
        dropout: dropout rate after each recurrent layer.
        cell_type: "lstm" or "gru".

    Example:
    >>> backbone = RecurrentBackbone(embed_size=128)
    >>> backbone(np.zeros((4, 60, 128))).shape
    TensorShape([4, 256])
    """

    def __init__(
        self,
        embed_size: int,
        hidden_size: int = 256,
        num_layers: int = 2,
        dropout: float = 0.1,
        cell_type: str = "lstm",
        **kwargs,
    ):
        check_positive(embed_size=embed_size, hidden_size=hidden_size, num_layers=num_layers)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if cell_type not in CELL_TYPES:
            raise ValueError(f"cell_type must be one of {CELL_TYPES}, got {cell_type!r}")
        name = kwargs.pop("name", f"{cell_type}_backbone")

        # === Layers ===
        layer_cls = keras.layers.LSTM if cell_type == "lstm" else keras.layers.GRU
        recurrent_layers = [
            layer_cls(hidden_size, return_sequences=True, name=f"{cell_type}_{i}")
            for i in range(num_layers)
        ]
        dropout_layers = [keras.layers.Dropout(dropout, name=f"dropout_{i}") for i in range(num_layers)]

        # === Functional model ===
        frames = keras.Input(shape=(None, embed_size), name="frames")
        x = frames
        for recurrent, drop in zip(recurrent_layers, dropout_layers):
            x = drop(recurrent(x))
        last = LastTimestep(name="last_timestep")(x)
        super().__init__(inputs=frames, outputs=last, name=name, **kwargs)

        # === Config ===
        self.embed_size = embed_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.dropout = dropout
        self.cell_type = cell_type
        self.recurrent_layers = recurrent_layers
        self.dropout_layers = dropout_layers

    @property
    def states_per_layer(self) -> int:
        return 2 if self.cell_type == "lstm" else 1

    # === Explicit state (shared by training, evaluation, play and export) ===

    def initial_state(self, batch_size) -> tuple:
        """The zero state: per layer `(h, c)` (LSTM) or `(h,)` (GRU), each `[batch, hidden]`."""
        return zero_state(self, batch_size)

    def unroll(self, frames_BxTxE, state, training: bool = False) -> tuple:
        """`(outputs [B, T, hidden], new_state)` over a sequence from `state`."""
        if keras.backend.backend() == "tensorflow":
            from keras_lstm.model import recurrent  # TensorFlow's own form: plain TF ops, faster there

            return recurrent.backbone_unroll(self, frames_BxTxE, state, training)
        return keras_layers_unroll(self, frames_BxTxE, state, training)

    def step(self, frame_BxE, state) -> tuple:
        """`(output [B, hidden], new_state)` for one frame per sequence (inference: no dropout)."""
        if keras.backend.backend() == "tensorflow":
            from keras_lstm.model import recurrent  # as few TF ops as possible (the SavedModel's step)

            return recurrent.tf_step(self.cell_type, [layer.cell for layer in self.recurrent_layers], frame_BxE, state)
        outputs_Bx1xU, state = keras_layers_unroll(self, frame_BxE[:, None], state)
        return outputs_Bx1xU[:, 0], state

    def get_config(self):
        return {
            "embed_size": self.embed_size,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "dropout": self.dropout,
            "cell_type": self.cell_type,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class _FixedCellBackbone(RecurrentBackbone):
    """A `RecurrentBackbone` whose `cell_type` is the class's `CELL`."""

    CELL = ""

    def __init__(self, embed_size: int, hidden_size: int = 256, num_layers: int = 2, dropout: float = 0.1, **kwargs):
        kwargs.pop("cell_type", None)  # a saved config names it; the class fixes it
        super().__init__(embed_size, hidden_size, num_layers, dropout, cell_type=self.CELL, **kwargs)

    @classmethod
    def from_config(cls, config):
        return cls(**{k: v for k, v in config.items() if k != "cell_type"})


@keras.saving.register_keras_serializable(package="keras_lstm")
class LSTMBackbone(_FixedCellBackbone):
    """The LSTM backbone (see `RecurrentBackbone`); `cell_type` is fixed."""

    CELL = "lstm"


@keras.saving.register_keras_serializable(package="keras_lstm")
class GRUBackbone(_FixedCellBackbone):
    """The GRU backbone (see `RecurrentBackbone`); `cell_type` is fixed."""

    CELL = "gru"


def build_backbone(
    backbone: str = "lstm",
    embed_size: int = 128,
    hidden_size: int = 256,
    num_layers: int = 2,
    dropout: float = 0.1,
) -> RecurrentBackbone:
    """The backbone named by `backbone` ("lstm" or "gru")."""
    backbone = backbone.lower()
    if backbone == "lstm":
        return LSTMBackbone(embed_size, hidden_size, num_layers, dropout)
    if backbone == "gru":
        return GRUBackbone(embed_size, hidden_size, num_layers, dropout)
    raise ValueError(f"backbone must be one of {CELL_TYPES}, got {backbone!r}")


# --- the state, and the layers run from it (any backend) ---------------------


def zero_state(backbone, batch_size) -> tuple:
    """The zero state: per layer `(h, c)` for LSTM, `(h,)` for GRU."""
    zeros = keras.ops.zeros([batch_size, backbone.hidden_size], dtype="float32")
    return tuple((zeros, zeros) if backbone.cell_type == "lstm" else (zeros,) for _ in range(backbone.num_layers))


@contextlib.contextmanager
def _calling_as(layer, compute_dtype=None):
    """While inside, `layer` returns `[outputs, *final state]` (the
    backbone's layers are built without `return_state`, which Keras reads at
    each call) and, with `compute_dtype`, computes under Keras'
    `mixed_<compute_dtype>` policy (variables stay float32; Keras casts them
    at each call). Outside, the layer is as built: evaluation, export and
    play run in float32."""
    saved = layer.return_state, layer.dtype_policy, layer.cell.dtype_policy
    layer.return_state = True
    if compute_dtype is not None:
        layer.dtype_policy = layer.cell.dtype_policy = f"mixed_{compute_dtype}"
    try:
        yield
    finally:
        layer.return_state, layer.dtype_policy, layer.cell.dtype_policy = saved


COMPUTE_DTYPES = (None, "float32", "bfloat16", "float16")


def keras_layers_unroll(backbone, x_BxTxE, state, training: bool = False, compute_dtype=None):
    """The backbone's own Keras layers over a sequence from `state`:
    `(y_BxTxU after the last dropout, new_state)`. Autodiff gives the
    gradient; on a GPU the layers run cuDNN's fused kernel (TensorFlow, and
    JAX since Keras 3.14). `compute_dtype` ("bfloat16" or "float16"): the
    layers compute in it (mixed precision); the outputs and the state come
    back float32."""
    if compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(f"compute_dtype must be one of {COMPUTE_DTYPES}, got {compute_dtype!r}")
    compute_dtype = None if compute_dtype == "float32" else compute_dtype
    x, new_state = x_BxTxE, []
    for layer, dropout, layer_state in zip(backbone.recurrent_layers, backbone.dropout_layers, state):
        with _calling_as(layer, compute_dtype):
            if compute_dtype is not None:
                x = keras.ops.cast(x, compute_dtype)
                layer_state = tuple(keras.ops.cast(s, compute_dtype) for s in layer_state)
            result = layer(x, initial_state=list(layer_state), training=training)
        result = [keras.ops.cast(r, "float32") for r in result]
        x = dropout(result[0], training=training)
        new_state.append(tuple(result[1:]))
    return x, tuple(new_state)


RECURRENT_IMPLS = ("auto", "keras", "fused")


def resolve_recurrent_impl(impl: str) -> str:
    """`keras` or `fused` for `impl`. `fused` (the hand-written backward
    pass, faster on a CPU: docs/TRAINING_SPEED.md) is TensorFlow's; `auto` is
    `keras` on any other backend or when TensorFlow sees a GPU (cuDNN's fused
    kernel), and `fused` otherwise."""
    if impl not in RECURRENT_IMPLS:
        raise ValueError(f"recurrent-impl must be one of {', '.join(RECURRENT_IMPLS)}, got {impl!r}")
    backend = keras.backend.backend()
    if backend != "tensorflow":
        if impl == "fused":
            raise ValueError(f"recurrent-impl fused is TensorFlow's hand-written backward pass; under the {backend} backend give keras or auto")
        return "keras"
    if impl == "auto":
        import tensorflow as tf

        return "keras" if tf.config.list_physical_devices("GPU") else "fused"
    return impl
