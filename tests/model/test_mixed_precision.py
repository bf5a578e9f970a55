"""`--mixed-precision bfloat16|float16`: the recurrence trains in the lower
precision by either implementation (Keras' `mixed_*` policy on the Keras
layers, the matmuls on the fused path), while the variables, the state, the
heads and the loss stay float32, evaluation is untouched, and float16 scales
its loss (a step whose gradients overflow is skipped).

Tolerances: bfloat16 keeps 8 bits of mantissa (relative rounding 2^-9 ~ 2e-3),
float16 11 bits (2^-12 ~ 2.4e-4); after a few hundred accumulations into
float32 the loss stays within 1e-2 (bfloat16) and 2e-3 (float16) of the
float32 step's. That the lower precision ran is read off the backbone's
training outputs: off float32's by at least 1e-5 (inputs rounded to float16
already move them by ~6e-5; float32 forms of the same math agree to ~1e-7)
and at most 2e-2 (outputs of size ~0.16)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_lstm.model import tf_training
from keras_lstm.model.policy import build_policy, compile_for_fit, compile_optimizer
from test_recurrent_impl import batch, targets

TOLERANCE = {"bfloat16": 1e-2, "float16": 2e-3}


def policy(impl, mixed_precision, truncate_bptt=None, loss_frames=1):
    keras.utils.set_random_seed(7)
    p = build_policy("lstm", embed_size=8, hidden_size=12, num_layers=2, dropout=0.0, truncate_bptt=truncate_bptt,
                     loss_frames=loss_frames, recurrent_impl=impl, mixed_precision=mixed_precision)
    compile_for_fit(p, compile_optimizer(keras.optimizers.Adam(1e-3), mixed_precision))
    return p


@pytest.mark.parametrize("impl,mixed_precision,truncate_bptt,loss_frames", [("keras", "bfloat16", 4, 3), ("fused", "float16", 4, 3)])
def test_a_mixed_precision_step_is_close_to_float32_and_keeps_float32(impl, mixed_precision, truncate_bptt, loss_frames):
    reference, mixed = policy(impl, None, truncate_bptt, loss_frames), policy(impl, mixed_precision, truncate_bptt, loss_frames)
    mixed.set_weights(reference.get_weights())
    x, rng = batch()
    y = targets(rng, loss_frames)
    frames, state = reference.encode(x), reference.initial_state(x["numeric"].shape[0])
    want_out, _ = tf_training.run_backbone(reference, frames, state, training=True, all_timesteps=True)
    got_out, _ = tf_training.run_backbone(mixed, frames, state, training=True, all_timesteps=True)
    assert got_out.dtype == tf.float32
    assert 1e-5 < np.abs(got_out.numpy() - want_out.numpy()).max() < 2e-2  # the lower precision did run
    before = mixed.get_weights()
    want = reference.train_on_batch(x, y, return_dict=True)["loss"]
    got = mixed.train_on_batch(x, y, return_dict=True)["loss"]
    assert got == pytest.approx(want, rel=TOLERANCE[mixed_precision])
    after = mixed.get_weights()
    assert all(w.dtype == np.float32 and np.isfinite(w).all() for w in after)
    assert sum(np.abs(a - b).max() > 0 for a, b in zip(before, after)) == len(before)  # every variable was updated
    for layer in mixed.backbone.recurrent_layers:  # the policy is as built once the step is done
        assert layer.dtype_policy.name == "float32" and layer.cell.dtype_policy.name == "float32"
    logits, state = mixed.step({k: v[:, -1] for k, v in x.items()}, mixed.initial_state(x["numeric"].shape[0]))
    assert all(t.dtype == tf.float32 for t in tf.nest.flatten((logits, state)))


def test_evaluation_is_float32_whatever_the_training_precision():
    reference, mixed = policy("keras", None), policy("keras", "bfloat16")
    mixed.set_weights(reference.get_weights())
    x, rng = batch(1)
    y = targets(rng, 1)
    assert mixed.test_on_batch(x, y, return_dict=True)["loss"] == reference.test_on_batch(x, y, return_dict=True)["loss"]


def test_float16_scales_the_loss_and_skips_a_step_that_overflows():
    mixed = policy("keras", "float16")
    assert isinstance(mixed.optimizer, keras.optimizers.LossScaleOptimizer)
    x, rng = batch(2)
    y = targets(rng, 1)
    mixed.train_on_batch(x, y)  # builds the optimizer
    mixed.optimizer.dynamic_scale.assign(1e38)  # the scaled gradients overflow float32
    before = mixed.get_weights()
    mixed.train_on_batch(x, y)
    assert all((a == b).all() for a, b in zip(before, mixed.get_weights()))
    assert float(mixed.optimizer.dynamic_scale) == pytest.approx(0.5e38)
    assert not isinstance(policy("keras", "bfloat16").optimizer, keras.optimizers.LossScaleOptimizer)


def test_the_setting_round_trips_and_refuses_matmul_bfloat16_beside_it():
    p = policy("fused", "float16")
    assert type(p).from_config(p.get_config()).mixed_precision == "float16"
    with pytest.raises(ValueError, match="not both"):
        build_policy(embed_size=8, hidden_size=8, num_layers=1, mixed_precision="bfloat16", matmul_dtype="bfloat16")
    with pytest.raises(ValueError, match="mixed_precision must be"):
        build_policy(embed_size=8, hidden_size=8, num_layers=1, mixed_precision="int8")
