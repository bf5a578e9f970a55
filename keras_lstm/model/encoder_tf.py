"""TensorFlow's one-frame form of `keras_lstm.model.encoder.FrameEncoder`: what the
SavedModel runs (`tests/model/test_encoder.py` holds it equal to the layer)."""

from __future__ import annotations

import tensorflow as tf

from keras_lstm.model.encoder import FrameEncoder, _tables, relative_columns


def encode_tf(encoder: FrameEncoder, numeric_BxF, categorical_BxC):
    """`FrameEncoder` for one frame per game, `[B, F]`, `[B, C]` -> `[B, embed]`,
    in as few TF ops as possible (each costs microseconds at batch 1). Ids out
    of a table's range are clipped into it."""
    max_ids = tf.constant([t.shape[0] - 1 for t in _tables(encoder)], tf.int32)
    ids = tf.clip_by_value(tf.cast(categorical_BxC, tf.int32), 0, max_ids)
    action_ids, character_ids, stage_ids = tf.split(ids, [2, 2, 1], axis=1)

    def embed(table, ids_BxK):  # -> [B, K * width]; static shape, so no tf.shape op
        return tf.reshape(tf.gather(table, ids_BxK), [-1, ids_BxK.shape[1] * table.shape[1]])

    actions = embed(encoder.action_embedding.embeddings, action_ids)
    characters = embed(encoder.character_embedding.embeddings, character_ids)
    stage = embed(encoder.stage_embedding.embeddings, stage_ids)
    relative = [relative_columns(numeric_BxF, tf)] if encoder.relative_features else []
    x = tf.concat([numeric_BxF, *relative, actions, characters, stage], axis=1)
    return tf.nn.relu(tf.matmul(x, encoder.projection.kernel) + encoder.projection.bias)
