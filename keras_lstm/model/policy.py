"""The policy: frame encoder -> recurrent backbone -> controller heads, and its loss.

Inputs are a dict `{"numeric": [B, T, NUMERIC_SIZE] float32,
"categorical": [B, T, CATEGORICAL_SIZE] int32}`; outputs are logits per head
for the last frame of the window: `buttons` `[B, 8]` (independent
Bernoullis), `main_x`, `main_y`, `c_x`, `c_y` `[B, 17]`, `shoulder` `[B, 5]`.

The loss is the sum of the 8 button cross-entropies and the 5 class
cross-entropies, in nats, averaged over predicted frames.

`train_step` implements truncated BPTT (`keras_lstm.model.tbptt`) inside
`model.fit`, so every Keras callback works, and runs the backbone through
`keras_lstm.model.recurrent.backbone_last_hidden` (hand-written backward pass over
the Keras layers' own variables; docs/TRAINING_SPEED.md has the speed).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_lstm.data import controller, features
from keras_lstm.model.backbone import RecurrentBackbone, check_positive
from keras_lstm.model.encoder import FrameEncoder
from keras_lstm.model.heads import PreviousInput
from keras_lstm.model.recurrent import backbone_last_hidden, keras_layers_unroll, resolve_recurrent_impl
from keras_lstm.model.tbptt import carry_state, chunk_bounds, last_chunk_start

def policy_loss(targets: dict, logits: dict) -> tuple[tf.Tensor, dict]:
    """Mean over frames of the summed head cross-entropies (nats), and each
    head's mean loss."""
    per_head = {
        "buttons": tf.reduce_sum(
            tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.cast(targets["buttons"], tf.float32), logits=logits["buttons"]),
            axis=-1,
        )
    }
    for head in controller.CLASS_HEADS:
        per_head[head] = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.cast(targets[head], tf.int32), logits=logits[head]
        )
    total = tf.add_n(list(per_head.values()))
    return tf.reduce_mean(total), {h: tf.reduce_mean(v) for h, v in per_head.items()}


MIXED_PRECISIONS = (None, "bfloat16", "float16")


def compile_optimizer(optimizer, mixed_precision: str | None):
    """`optimizer`, wrapped in Keras' dynamic loss scaling for float16 (whose
    small gradients would otherwise round to zero); the train steps scale the
    loss with `optimizer.scale_loss` and `apply` unscales and skips a step
    whose gradients overflowed."""
    if mixed_precision == "float16":
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def flatten_time(v):
    """`[B, T, ...] -> [B*T, ...]`: per-frame logits or targets as frames."""
    shape = tf.shape(v)
    return tf.reshape(v, tf.concat([[shape[0] * shape[1]], shape[2:]], axis=0))


def head_correct(targets: dict, logits: dict) -> dict:
    """Per head, `[B]` float 1/0 for a correct prediction (buttons: the
    fraction of the 8 buttons right)."""
    correct = {
        "buttons": tf.reduce_mean(
            tf.cast(tf.equal(tf.cast(logits["buttons"] > 0, tf.float32), tf.cast(targets["buttons"], tf.float32)), tf.float32),
            axis=-1,
        )
    }
    for head in controller.CLASS_HEADS:
        predicted = tf.argmax(logits[head], axis=-1, output_type=tf.int32)
        correct[head] = tf.cast(tf.equal(predicted, tf.cast(targets[head], tf.int32)), tf.float32)
    return correct


def scaled_for_replicas(loss):
    """Under a distribution strategy the optimizer sums the replicas'
    gradients: scale each replica's loss so that the sum is the global
    batch's mean."""
    replica = tf.distribute.get_replica_context()
    if replica is not None and replica.num_replicas_in_sync > 1:
        return loss / replica.num_replicas_in_sync
    return loss


@keras.saving.register_keras_serializable(package="keras_lstm")
class BehaviorCloningPolicy(keras.Model):
    """Frame encoder -> backbone -> one linear head per controller part.

    Args:
        backbone: a `RecurrentBackbone` (LSTM or GRU).
        truncate_bptt: chunk length K for truncated BPTT in `train_step`, or
            None for full BPTT over the window.
        matmul_dtype: None (float32) or "bfloat16": the recurrent matmuls in
            `train_step` take bfloat16 inputs (faster on CPUs with
            AVX512_BF16; weights, states and evaluation stay float32).
        loss_frames: `train_step` puts the loss on the last N frames of each
            window (targets `[B, N, ...]`); the frames before are burn-in
            (no loss). 1: the last frame only (targets `[B, ...]`), the seed's
            training. Gradients stop at the `truncate_bptt` chunk boundaries.
        previous_input_heads: the heads also see the previous controller as
            classes (`keras_lstm.model.heads`); False is the seed's policy
            (and what a saved policy without the setting was).
        relative_features: the frame encoder also sees where the opponent is
            from the player and who faces whom (`encoder.relative_columns`);
            False is the seed's (and what a saved policy without it was).
        recurrent_impl: how `train_step` runs the recurrence: "fused" (our
            hand-written backward pass), "keras" (the Keras layers: cuDNN on a
            GPU) or "auto" (`recurrent.resolve_recurrent_impl`).
        mixed_precision: None, "bfloat16" or "float16": `train_step` runs the
            recurrence in that dtype (Keras' `mixed_*` policy on the Keras
            layers, the matmuls on the fused path); variables, the carried
            state, the heads and the loss stay float32, as do evaluation and
            inference. float16 needs loss scaling (`compile_optimizer`).

    Example:
    >>> policy = BehaviorCloningPolicy(build_backbone("lstm", 128))
    >>> policy.compile(optimizer="adam")
    >>> policy.fit(dataset, epochs=3)
    """

    def __init__(
        self,
        backbone: RecurrentBackbone,
        truncate_bptt: int | None = None,
        matmul_dtype: str | None = None,
        loss_frames: int = 1,
        previous_input_heads: bool = True,
        relative_features: bool = False,
        recurrent_impl: str = "fused",
        mixed_precision: str | None = None,
        **kwargs,
    ):
        check_positive(loss_frames=loss_frames)
        recurrent_impl = resolve_recurrent_impl(recurrent_impl)
        if recurrent_impl == "keras" and matmul_dtype == "bfloat16":
            raise ValueError("matmul-dtype bfloat16 applies to the fused recurrent implementation (--recurrent-impl fused)")
        if mixed_precision not in MIXED_PRECISIONS:
            raise ValueError(f"mixed_precision must be None, 'bfloat16' or 'float16', got {mixed_precision!r}")
        if mixed_precision is not None and matmul_dtype == "bfloat16":
            raise ValueError("give mixed-precision or matmul-dtype bfloat16, not both (mixed precision already rounds the matmuls)")
        if truncate_bptt is not None:
            check_positive(truncate_bptt=truncate_bptt)
        if matmul_dtype not in (None, "float32", "bfloat16"):
            raise ValueError(f"matmul_dtype must be None, 'float32' or 'bfloat16', got {matmul_dtype!r}")
        name = kwargs.pop("name", "policy")

        # === Layers ===
        encoder = FrameEncoder(backbone.embed_size, relative_features=relative_features, name="frame_encoder")
        head_layers = {
            "buttons": keras.layers.Dense(len(controller.BUTTONS), name="buttons"),
            **{h: keras.layers.Dense(controller.HEAD_CLASSES[h], name=h) for h in controller.CLASS_HEADS},
        }

        # === Functional model ===
        numeric = keras.Input(shape=(None, features.NUMERIC_SIZE), name="numeric")
        categorical = keras.Input(shape=(None, features.CATEGORICAL_SIZE), dtype="int32", name="categorical")
        previous_input = PreviousInput(name="previous_input") if previous_input_heads else None
        hidden = backbone(encoder([numeric, categorical]))
        if previous_input is not None:
            hidden = keras.layers.Concatenate(name="head_input")([hidden, previous_input(numeric[:, -1])])
        outputs = {h: layer(hidden) for h, layer in head_layers.items()}
        super().__init__(inputs={"numeric": numeric, "categorical": categorical}, outputs=outputs, name=name, **kwargs)

        # === Config ===
        self.backbone = backbone
        self.truncate_bptt = truncate_bptt
        self.matmul_dtype = matmul_dtype
        self.recurrent_impl = recurrent_impl
        self.mixed_precision = mixed_precision
        self.loss_frames = loss_frames
        self.encoder = encoder
        self.head_layers = head_layers
        self.previous_input = previous_input

        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_trackers = {h: keras.metrics.Mean(name=f"acc_{h}") for h in controller.HEADS}

    # -- pieces shared by training, evaluation and stateful inference --------

    def encode(self, x, training=False):
        return self.encoder([x["numeric"], x["categorical"]], training=training)

    def apply_heads(self, hidden, numeric) -> dict:
        """Head logits from the backbone's output `[B, (T,) U]` and the
        frames' numeric inputs `[B, (T,) F]` (for the previous controller)."""
        if self.previous_input is not None:
            hidden = keras.ops.concatenate([hidden, self.previous_input(numeric)], axis=-1)
        return {h: layer(hidden) for h, layer in self.head_layers.items()}

    # -- explicit state: the backbone's, with frames in and logits out --------

    def initial_state(self, batch_size) -> tuple:
        """The backbone's zero state (see `RecurrentBackbone.initial_state`)."""
        return self.backbone.initial_state(batch_size)

    def unroll(self, x, state, training: bool = False) -> tuple:
        """`({head: logits [B, T, ...]}, new_state)`: the controller predicted
        at every frame of `x = {"numeric": [B, T, F], "categorical": [B, T, C]}`
        from `state`."""
        outputs_BxTxU, state = self.backbone.unroll(self.encode(x, training=training), state, training)
        return self.apply_heads(outputs_BxTxU, x["numeric"]), state

    def step(self, x, state) -> tuple:
        """`({head: logits [B, ...]}, new_state)` for one frame per game,
        `x = {"numeric": [B, F], "categorical": [B, C]}` (inference)."""
        frames_BxE = self.encode({k: v[:, None] for k, v in x.items()})[:, 0]
        output_BxU, state = self.backbone.step(frames_BxE, state)
        return self.apply_heads(output_BxU, x["numeric"]), state

    # -- training ------------------------------------------------------------

    @property
    def training_dtype(self) -> str | None:
        """The dtype the recurrence computes in while training: the
        mixed-precision dtype, `matmul_dtype`, or None (float32)."""
        return self.mixed_precision or self.matmul_dtype

    def training_objective(self, loss):
        """What a train step differentiates (inside its tape): the loss plus
        any layer regularisation, scaled for the replicas
        (`scaled_for_replicas`) and by the optimizer's loss scale (float16:
        `compile_optimizer`; 1 otherwise)."""
        return self.optimizer.scale_loss(scaled_for_replicas(loss + tf.add_n(self.losses) if self.losses else loss))

    @property
    def metrics(self):
        return [self.loss_tracker, *self.accuracy_trackers.values()]

    def _record(self, loss, targets, logits):
        self.loss_tracker.update_state(loss)
        for head, correct in head_correct(targets, logits).items():
            self.accuracy_trackers[head].update_state(correct)
        return {m.name: m.result() for m in self.metrics}

    def _state_before_tape(self, x, end: int):
        """The state after the first `end` frames of each window (the zero
        state for 0). Those frames only set up the state: they run before the
        gradient tape opens, so they cost no memory or backward pass."""
        state = self.backbone.initial_state(tf.shape(x["numeric"])[0])
        if end == 0:
            return state
        prefix = {k: v[:, :end] for k, v in x.items()}
        return carry_state(
            self.backbone, self.encode(prefix, training=True), state, self.truncate_bptt, True, self.training_dtype, self.recurrent_impl
        )

    def _run_backbone(self, frames_BxTxE, state, training: bool, all_timesteps: bool = False):
        """The backbone over a chunk with gradients: `(last output [B, U] or,
        with `all_timesteps`, outputs [B, T, U]; new state)`, by the chosen
        implementation (`recurrent_impl`): our hand-written backward pass, or
        the Keras layers (cuDNN on a GPU). Training computes in
        `training_dtype`; evaluation in float32."""
        dtype = self.training_dtype if training else None
        if self.recurrent_impl == "keras":
            outputs_BxTxU, state = keras_layers_unroll(self.backbone, frames_BxTxE, state, training, dtype)
            return (outputs_BxTxU if all_timesteps else outputs_BxTxU[:, -1]), state
        frames_TxBxE = tf.transpose(frames_BxTxE, [1, 0, 2])
        out, state = backbone_last_hidden(self.backbone, frames_TxBxE, state, training, dtype, all_timesteps=all_timesteps)
        return (tf.transpose(out, [1, 0, 2]) if all_timesteps else out), state

    def train_step(self, data):
        if self.loss_frames > 1:
            return self._sequence_train_step(data)
        x, targets = data[0], data[1]
        last_start = last_chunk_start(x["numeric"].shape[1], self.truncate_bptt)
        state = self._state_before_tape(x, last_start)  # everything before the last chunk
        last_chunk = {k: v[:, last_start:] for k, v in x.items()}
        with tf.GradientTape() as tape:
            hidden, _ = self._run_backbone(self.encode(last_chunk, training=True), state, training=True)
            logits = self.apply_heads(hidden, x["numeric"][:, -1])
            loss, _ = policy_loss(targets, logits)
            total = self.training_objective(loss)
        grads = tape.gradient(total, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        return self._record(loss, targets, logits)

    def _sequence_train_step(self, data):
        """The loss on the last `loss_frames` frames of the window: chunk by
        chunk (`truncate_bptt`), the state carried with the gradient stopped
        at each boundary. The chunks wholly in the burn-in only set up the
        state (`_state_before_tape`), as `train_step`'s prefix does."""
        x, targets = data[0], data[1]
        window = x["numeric"].shape[1]
        burn_in = window - self.loss_frames
        bounds = chunk_bounds(window, self.truncate_bptt)
        prefix_end = max([end for _, end in bounds if end <= burn_in], default=0)
        state = self._state_before_tape(x, prefix_end)  # the chunks wholly in the burn-in
        parts = []
        with tf.GradientTape() as tape:
            frames_BxTxE = self.encode({k: v[:, prefix_end:] for k, v in x.items()}, training=True)
            for start, end in (b for b in bounds if b[1] > prefix_end):
                chunk_BxTxE = frames_BxTxE[:, start - prefix_end : end - prefix_end]
                outputs_BxTxU, state = self._run_backbone(chunk_BxTxE, state, training=True, all_timesteps=True)
                first = max(start, burn_in)
                parts.append(self.apply_heads(outputs_BxTxU[:, first - start :], x["numeric"][:, first:end]))
                state = tf.nest.map_structure(tf.stop_gradient, state)
            logits = {h: flatten_time(tf.concat([p[h] for p in parts], axis=1)) for h in controller.HEADS}
            targets = {h: flatten_time(v) for h, v in targets.items()}
            loss, _ = policy_loss(targets, logits)
            total = self.training_objective(loss)
        grads = tape.gradient(total, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        return self._record(loss, targets, logits)

    def test_step(self, data):
        x, targets = data[0], data[1]
        frames_BxTxE = self.encode(x, training=False)
        state = self.backbone.initial_state(tf.shape(frames_BxTxE)[0])
        hidden, _ = self._run_backbone(frames_BxTxE, state, training=False)
        logits = self.apply_heads(hidden, x["numeric"][:, -1])
        loss, _ = policy_loss(targets, logits)
        return self._record(loss, targets, logits)

    # -- serialisation -------------------------------------------------------

    def get_config(self):
        return {
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "truncate_bptt": self.truncate_bptt,
            "matmul_dtype": self.matmul_dtype,
            "recurrent_impl": self.recurrent_impl,
            "mixed_precision": self.mixed_precision,
            "loss_frames": self.loss_frames,
            "previous_input_heads": self.previous_input is not None,
            "relative_features": self.encoder.relative_features,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.setdefault("previous_input_heads", False)  # saved before the option existed
        config.setdefault("relative_features", False)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)


def build_policy(
    backbone: str = "lstm",
    embed_size: int = 128,
    hidden_size: int = 256,
    num_layers: int = 2,
    dropout: float = 0.1,
    truncate_bptt: int | None = None,
    matmul_dtype: str | None = None,
    previous_input_heads: bool = True,
    relative_features: bool = False,
    loss_frames: int = 1,
    recurrent_impl: str = "fused",
    mixed_precision: str | None = None,
) -> BehaviorCloningPolicy:
    from keras_lstm.model.backbone import build_backbone

    return BehaviorCloningPolicy(
        build_backbone(backbone, embed_size, hidden_size, num_layers, dropout),
        truncate_bptt=truncate_bptt,
        matmul_dtype=matmul_dtype,
        previous_input_heads=previous_input_heads,
        relative_features=relative_features,
        loss_frames=loss_frames,
        recurrent_impl=recurrent_impl,
        mixed_precision=mixed_precision,
    )
