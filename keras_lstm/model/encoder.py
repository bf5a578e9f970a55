"""The frame encoder: one frame's numeric features and categorical ids -> `[.., embed]`.

The spec is `FrameEncoder`, a Keras layer inside the policy (any backend).
Its two fast forms for one frame per game: `NumpyEncoder` beside it (numpy
over a snapshot of the weights, what `PolicyStepper` runs in the frame loop)
and TensorFlow's `keras_lstm.model.encoder_tf.encode_tf` (plain TF ops over
the layer's variables, what the SavedModel runs).
`tests/model/test_encoder.py` holds all three equal.
"""

from __future__ import annotations

import keras
import numpy as np

from keras_lstm.data import features
from keras_lstm.model import numpy_policy

ACTION_EMBED = 32
CHARACTER_EMBED = 8
STAGE_EMBED = 4

RELATIVE_SIZE = features.RELATIVE_SIZE
relative_columns = features.relative_columns  # the one copy is with the other feature math


@keras.saving.register_keras_serializable(package="keras_lstm")
class FrameEncoder(keras.layers.Layer):
    """One frame's numeric features and categorical ids -> `[.., embed_size]`.

    Action states, characters and the stage go through learned embeddings (the
    action-state table is shared by self and opponent), which keeps the
    backbone's input narrow instead of ~1,000 one-hot columns. With
    `relative_features`, the numeric columns are joined by
    `relative_columns` (False: the seed's encoder, and what an encoder saved
    before the option was).
    """

    def __init__(self, embed_size: int = 128, relative_features: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.embed_size = embed_size
        self.relative_features = relative_features
        self.action_embedding = keras.layers.Embedding(features.ACTION_STATES, ACTION_EMBED, name="action_embedding")
        self.character_embedding = keras.layers.Embedding(features.CHARACTERS, CHARACTER_EMBED, name="character_embedding")
        self.stage_embedding = keras.layers.Embedding(features.STAGES, STAGE_EMBED, name="stage_embedding")
        self.projection = keras.layers.Dense(embed_size, activation="relu", name="projection")

    def build(self, input_shape):
        numeric_shape, _ = input_shape
        self.action_embedding.build(None)
        self.character_embedding.build(None)
        self.stage_embedding.build(None)
        width = numeric_shape[-1] + (RELATIVE_SIZE if self.relative_features else 0) + 2 * ACTION_EMBED + 2 * CHARACTER_EMBED + STAGE_EMBED
        self.projection.build((None, width))

    def call(self, inputs):
        numeric, categorical = inputs
        ids = keras.ops.cast(categorical, "int32")
        parts = [
            numeric,
            *([relative_columns(numeric, keras.ops)] if self.relative_features else []),
            self.action_embedding(ids[..., 0]),
            self.action_embedding(ids[..., 1]),
            self.character_embedding(ids[..., 2]),
            self.character_embedding(ids[..., 3]),
            self.stage_embedding(ids[..., 4]),
        ]
        return self.projection(keras.ops.concatenate(parts, axis=-1))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0][:-1]) + (self.embed_size,)

    def get_config(self):
        return {**super().get_config(), "embed_size": self.embed_size, "relative_features": self.relative_features}


def _tables(encoder) -> list:
    """The embedding table for each categorical column, in column order:
    self and opponent action state, self and opponent character, stage."""
    actions, characters = encoder.action_embedding.embeddings, encoder.character_embedding.embeddings
    return [actions, actions, characters, characters, encoder.stage_embedding.embeddings]


class NumpyEncoder:
    """`FrameEncoder` in numpy over a snapshot of its weights, one frame per
    game: `encoder(numeric [B, F], categorical [B, C]) -> [B, embed]`
    (`keras_lstm.model.numpy_policy.encode`). Ids out of a table's range are
    clipped into it."""

    def __init__(self, encoder: FrameEncoder):
        self.relative_features = encoder.relative_features
        self.tables = [np.asarray(t.numpy(), np.float32) for t in _tables(encoder)]
        self.projection_w = np.asarray(encoder.projection.kernel.numpy(), np.float32)
        self.projection_b = np.asarray(encoder.projection.bias.numpy(), np.float32)

    def __call__(self, numeric_BxF: np.ndarray, categorical_BxC: np.ndarray) -> np.ndarray:
        return numpy_policy.encode(self.tables, self.projection_w, self.projection_b, self.relative_features, numeric_BxF, categorical_BxC)
