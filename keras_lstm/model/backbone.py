"""The recurrent backbone: `[batch, seq, embed] -> [batch, hidden]`.

`num_layers` x (`LSTM(hidden_size, return_sequences=True)` -> `Dropout`), then
the last timestep. GRU is the drop-in alternative: one state per layer instead
of two, and fewer parameters. The backbone knows nothing of controllers or
losses; `keras_lstm.model.policy` wraps it with inputs, heads and the loss.
"""

from __future__ import annotations

import keras

from keras_lstm.config import CELL_TYPES, dimension
from keras_lstm.model import recurrent


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
        return recurrent.zero_state(self, batch_size)

    def unroll(self, frames_BxTxE, state, training: bool = False) -> tuple:
        """`(outputs [B, T, hidden], new_state)` over a sequence from `state`."""
        return recurrent.backbone_unroll(self, frames_BxTxE, state, training)

    def step(self, frame_BxE, state) -> tuple:
        """`(output [B, hidden], new_state)` for one frame per sequence (inference: no dropout)."""
        return recurrent.tf_step(self.cell_type, [layer.cell for layer in self.recurrent_layers], frame_BxE, state)

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
