"""TensorFlow's train and test steps for `BehaviorCloningPolicy`: the CPU fast path.

Under the TensorFlow backend `BehaviorCloningPolicy.train_step` and
`test_step` come here. They compute the same loss as the backend-neutral
path (`BehaviorCloningPolicy.call(training=True)` + `compute_loss`, which
every other backend's trainer runs; `tests/model/test_backends.py` holds the
two equal), but faster on a CPU:

- the chunks of a window before the first frame with a loss run before the
  gradient tape opens (`state_before_tape`): no activations kept for them;
- with `recurrent_impl="fused"` the backbone runs
  `keras_lstm.model.recurrent.backbone_last_hidden`, whose backward pass is
  written by hand (docs/TRAINING_SPEED.md), and only the last timestep of
  the top layer is computed past its recurrence when the loss is on the
  last frame;
- the loss is scaled for a `tf.distribute` strategy's replicas.
"""

from __future__ import annotations

import tensorflow as tf

from keras_lstm.data import controller
from keras_lstm.model.backbone import keras_layers_unroll
from keras_lstm.model.losses import flatten_time, policy_loss
from keras_lstm.model.recurrent import backbone_last_hidden
from keras_lstm.model.tbptt import carry_state, chunk_bounds, last_chunk_start, stop_gradient


def scaled_for_replicas(loss):
    """Under a distribution strategy the optimizer sums the replicas'
    gradients: scale each replica's loss so that the sum is the global
    batch's mean."""
    replica = tf.distribute.get_replica_context()
    if replica is not None and replica.num_replicas_in_sync > 1:
        return loss / replica.num_replicas_in_sync
    return loss


def training_objective(policy, loss):
    """What a train step differentiates (inside its tape): the loss plus
    any layer regularisation, scaled for the replicas
    (`scaled_for_replicas`) and by the optimizer's loss scale (float16:
    `compile_optimizer`; 1 otherwise)."""
    return policy.optimizer.scale_loss(scaled_for_replicas(loss + tf.add_n(policy.losses) if policy.losses else loss))


def apply_gradients(policy, tape, loss) -> None:
    """One optimizer step on `loss` (recorded by `tape`)."""
    grads = tape.gradient(loss, policy.trainable_variables)
    policy.optimizer.apply(grads, policy.trainable_variables)


def state_before_tape(policy, x, end: int):
    """The state after the first `end` frames of each window (the zero
    state for 0). Those frames only set up the state: they run before the
    gradient tape opens, so they cost no memory or backward pass."""
    state = policy.backbone.initial_state(tf.shape(x["numeric"])[0])
    if end == 0:
        return state
    prefix = {k: v[:, :end] for k, v in x.items()}
    return carry_state(
        policy.backbone, policy.encode(prefix, training=True), state, policy.truncate_bptt, True, policy.training_dtype, policy.recurrent_impl
    )


def run_backbone(policy, frames_BxTxE, state, training: bool, all_timesteps: bool = False):
    """The backbone over a chunk with gradients: `(last output [B, U] or,
    with `all_timesteps`, outputs [B, T, U]; new state)`, by the policy's
    `recurrent_impl`: the hand-written backward pass, or the Keras layers
    (cuDNN on a GPU). Training computes in `training_dtype`; evaluation in
    float32."""
    dtype = policy.training_dtype if training else None
    if policy.recurrent_impl == "keras":
        outputs_BxTxU, state = keras_layers_unroll(policy.backbone, frames_BxTxE, state, training, dtype)
        return (outputs_BxTxU if all_timesteps else outputs_BxTxU[:, -1]), state
    frames_TxBxE = tf.transpose(frames_BxTxE, [1, 0, 2])
    out, state = backbone_last_hidden(policy.backbone, frames_TxBxE, state, training, dtype, all_timesteps=all_timesteps)
    return (tf.transpose(out, [1, 0, 2]) if all_timesteps else out), state


def train_step(policy, data):
    """One step with the loss on each window's last frame, or on its last
    `loss_frames` (`sequence_train_step`)."""
    if policy.loss_frames > 1:
        return sequence_train_step(policy, data)
    x, targets = data[0], data[1]
    last_start = last_chunk_start(x["numeric"].shape[1], policy.truncate_bptt)
    state = state_before_tape(policy, x, last_start)  # everything before the last chunk
    last_chunk = {k: v[:, last_start:] for k, v in x.items()}
    with tf.GradientTape() as tape:
        hidden, _ = run_backbone(policy, policy.encode(last_chunk, training=True), state, training=True)
        logits = policy.apply_heads(hidden, x["numeric"][:, -1])
        loss, _ = policy_loss(targets, logits)
        total = training_objective(policy, loss)
    apply_gradients(policy, tape, total)
    return policy.record(loss, targets, logits)


def sequence_train_step(policy, data):
    """The loss on the last `loss_frames` frames of the window: chunk by
    chunk (`truncate_bptt`), the state carried with the gradient stopped
    at each boundary. The chunks wholly in the burn-in only set up the
    state (`state_before_tape`), as `train_step`'s prefix does."""
    x, targets = data[0], data[1]
    window = x["numeric"].shape[1]
    burn_in = window - policy.loss_frames
    bounds = chunk_bounds(window, policy.truncate_bptt)
    prefix_end = max([end for _, end in bounds if end <= burn_in], default=0)
    state = state_before_tape(policy, x, prefix_end)  # the chunks wholly in the burn-in
    parts = []
    with tf.GradientTape() as tape:
        frames_BxTxE = policy.encode({k: v[:, prefix_end:] for k, v in x.items()}, training=True)
        for start, end in (b for b in bounds if b[1] > prefix_end):
            chunk_BxTxE = frames_BxTxE[:, start - prefix_end : end - prefix_end]
            outputs_BxTxU, state = run_backbone(policy, chunk_BxTxE, state, training=True, all_timesteps=True)
            first = max(start, burn_in)
            parts.append(policy.apply_heads(outputs_BxTxU[:, first - start :], x["numeric"][:, first:end]))
            state = stop_gradient(state)
        logits = {h: flatten_time(tf.concat([p[h] for p in parts], axis=1)) for h in controller.HEADS}
        targets = {h: flatten_time(v) for h, v in targets.items()}
        loss, _ = policy_loss(targets, logits)
        total = training_objective(policy, loss)
    apply_gradients(policy, tape, total)
    return policy.record(loss, targets, logits)


def validation_step(policy, data):
    """The loss on each window's last frame, from the zero state."""
    x, targets = data[0], data[1]
    frames_BxTxE = policy.encode(x, training=False)
    state = policy.backbone.initial_state(tf.shape(frames_BxTxE)[0])
    hidden, _ = run_backbone(policy, frames_BxTxE, state, training=False)
    logits = policy.apply_heads(hidden, x["numeric"][:, -1])
    loss, _ = policy_loss(targets, logits)
    return policy.record(loss, targets, logits)


def truncated_last_hidden(backbone, frames_BxTxE, state, truncate_bptt: int | None, training: bool = False):
    """The backbone's last-timestep output `[B, hidden]` with gradients
    flowing only through the final chunk of `truncate_bptt` frames, the
    last chunk by the hand-written backward pass.

    A train step that opens its tape after `carry_state` saves the prefix's
    memory too; this function is the same math in one call (tests use it).
    """
    last_start = last_chunk_start(frames_BxTxE.shape[1], truncate_bptt)
    if last_start > 0:
        state = carry_state(backbone, frames_BxTxE[:, :last_start], state, truncate_bptt, training)
    last_chunk_TxBxE = tf.transpose(frames_BxTxE[:, last_start:], [1, 0, 2])
    hidden_BxU, _ = backbone_last_hidden(backbone, last_chunk_TxBxE, state, training=training)
    return hidden_BxU
