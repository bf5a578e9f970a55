"""The policy: frame encoder -> recurrent backbone -> controller heads, and its loss.

Inputs are a dict `{"numeric": [B, T, NUMERIC_SIZE] float32,
"categorical": [B, T, CATEGORICAL_SIZE] int32}`; outputs are logits per head
for the last frame of the window: `buttons` `[B, 8]` (independent
Bernoullis), `main_x`, `main_y`, `c_x`, `c_y` `[B, 17]`, `shoulder` `[B, 5]`.
The loss is `keras_lstm.model.losses.policy_loss`.

Backend-neutral: the model is `keras.layers` and `keras.ops`, trained under
`model.fit` with truncated BPTT in `call(training=True)` (the state carried
across chunks with `keras.ops.stop_gradient`) and the loss in
`compute_loss`, which every backend's trainer calls; `KERAS_BACKEND=jax`
trains the same policy. Under TensorFlow, `train_step` and `test_step` run
TensorFlow's faster form of the same step instead
(`keras_lstm.model.tf_training`: the hand-written backward pass on a CPU);
`tests/model/test_backends.py` holds the two equal.
"""

from __future__ import annotations

import keras

from keras_lstm.data import controller, features
from keras_lstm.model.backbone import RecurrentBackbone, check_positive, keras_layers_unroll, resolve_recurrent_impl
from keras_lstm.model.encoder import FrameEncoder
from keras_lstm.model.heads import PreviousInput
from keras_lstm.model.losses import head_correct, policy_loss
from keras_lstm.model.tbptt import chunk_bounds, stop_gradient

MIXED_PRECISIONS = (None, "bfloat16", "float16")


def compile_optimizer(optimizer, mixed_precision: str | None):
    """`optimizer`, wrapped in Keras' dynamic loss scaling for float16 (whose
    small gradients would otherwise round to zero); the train steps scale the
    loss with `optimizer.scale_loss` and `apply` unscales and skips a step
    whose gradients overflowed."""
    if mixed_precision == "float16":
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def compile_for_fit(model: keras.Model, optimizer) -> None:
    """`model.compile(optimizer=optimizer)`, the optimizer's slots made at
    once (the model is built at construction). Made inside the first
    training step instead, they would have TensorFlow trace that step twice."""
    model.compile(optimizer=optimizer)
    model.optimizer.build(model.trainable_variables)


def _on_tensorflow() -> bool:
    return keras.backend.backend() == "tensorflow"


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
        recurrent_impl: how training runs the recurrence: "fused" (our
            hand-written backward pass; TensorFlow only), "keras" (the Keras
            layers: cuDNN on a GPU) or "auto"
            (`backbone.resolve_recurrent_impl`).
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
        recurrent_impl: str = "auto",
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

    def call(self, inputs, training=None, mask=None):
        """The last frame's logits from the zero state; while training, the
        logits `training_logits` puts the loss on."""
        if training:
            return self.training_logits(inputs)
        return super().call(inputs, training=training, mask=mask)

    def training_logits(self, x) -> dict:
        """Logits for the frames that carry the loss: the last frame
        (`loss_frames` 1: `[B, ...]`) or the last `loss_frames` (`[B, N,
        ...]`), the backbone run by its Keras layers chunk by chunk
        (`truncate_bptt`), the state carried with its gradient stopped at
        each boundary. Backend-neutral; TensorFlow's `train_step` computes
        the same faster (`tf_training`)."""
        window = x["numeric"].shape[1]
        burn_in = window - self.loss_frames
        frames_BxTxE = self.encode(x, training=True)
        state = self.backbone.initial_state(keras.ops.shape(frames_BxTxE)[0])
        parts = []
        for start, end in chunk_bounds(window, self.truncate_bptt):
            outputs_BxTxU, state = keras_layers_unroll(
                self.backbone, frames_BxTxE[:, start:end], state, training=True, compute_dtype=self.mixed_precision
            )
            state = stop_gradient(state)
            if end > burn_in:
                first = max(start, burn_in)
                parts.append(self.apply_heads(outputs_BxTxU[:, first - start :], x["numeric"][:, first:end]))
        logits = {h: keras.ops.concatenate([p[h] for p in parts], axis=1) for h in controller.HEADS}
        return {h: v[:, 0] for h, v in logits.items()} if self.loss_frames == 1 else logits

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss, _ = policy_loss(y, y_pred)
        return loss + keras.ops.sum(self.losses) if self.losses else loss

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        for head, correct in head_correct(y, y_pred).items():
            self.accuracy_trackers[head].update_state(correct)
        return self.get_metrics_result()

    @property
    def metrics(self):
        # The trainer's loss tracker (`loss`), made at compile: every
        # backend's trainer updates it, and TensorFlow's steps (`record`).
        tracker = [self._loss_tracker] if getattr(self, "_loss_tracker", None) is not None else []
        return [*tracker, *self.accuracy_trackers.values()]

    def record(self, loss, targets, logits) -> dict:
        """Update the loss and accuracy trackers; the logs of a step."""
        self._loss_tracker.update_state(loss)
        for head, correct in head_correct(targets, logits).items():
            self.accuracy_trackers[head].update_state(correct)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, *args):
        if _on_tensorflow():
            from keras_lstm.model import tf_training

            return tf_training.train_step(self, *args)
        return super().train_step(*args)

    def test_step(self, *args):
        if _on_tensorflow():
            from keras_lstm.model import tf_training

            return tf_training.validation_step(self, *args)
        return super().test_step(*args)

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
        if not _on_tensorflow() and config.get("recurrent_impl") == "fused":
            # Saved by TensorFlow's fast path: how it trained, not what it
            # computes. Elsewhere the Keras layers train it (bfloat16 matmuls
            # are that path's alone).
            config.update(recurrent_impl="auto", matmul_dtype=None)
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
    recurrent_impl: str = "auto",
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
