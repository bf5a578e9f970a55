"""Training with the state carried across segments: the batches walk games in
order, the train step carries and resets the state, the result is a plain
policy."""

from __future__ import annotations

import gc
import weakref

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_lstm.data import controller, features
from keras_lstm.data.features import PolicyArrays
from keras_lstm.evaluation import one_pass
from keras_lstm.model.backbone import build_backbone
from keras_lstm.model.policy import BehaviorCloningPolicy
from keras_lstm.model.recurrent import backbone_unroll, zero_state
from keras_lstm.training import carried_training
from keras_lstm.training.carried_training import CarriedStatePolicy, cut_pieces, segment_batches, segment_dataset, steps_per_epoch
from keras_lstm.training.train import TrainConfig, train

from conftest import GAMES

S = 5  # segment frames


def _arrays(length: int, seed: int) -> PolicyArrays:
    rng = np.random.default_rng(seed)
    numeric = rng.normal(size=(length, features.NUMERIC_SIZE)).astype(np.float32)
    numeric[:, 0] = np.arange(length) + 1000 * seed  # frame id, to check the order
    categorical = np.stack([rng.integers(0, n, length) for n in features.CATEGORICAL_SIZES], axis=1).astype(np.int32)
    targets = {"buttons": (rng.random((length, len(controller.BUTTONS))) < 0.2).astype(np.float32)}
    for head in controller.CLASS_HEADS:
        targets[head] = rng.integers(0, controller.HEAD_CLASSES[head], length).astype(np.int32)
    return PolicyArrays(numeric, categorical, targets)


def test_pieces_cover_whole_segments_only():
    arrays = [_arrays(23, 0), _arrays(4, 1), _arrays(40, 2)]
    pieces = cut_pieces(arrays, S, piece_frames=15)
    # 23 frames -> 4 segments (3 + 1); 4 frames -> none; 40 -> 8 (3 + 3 + 2).
    assert pieces == [(0, 0, 3), (0, 15, 1), (2, 0, 3), (2, 15, 3), (2, 30, 2)]
    assert steps_per_epoch(arrays, S, streams=2, piece_frames=15) == 6


def test_rows_walk_pieces_in_order_and_reset_at_piece_starts():
    arrays = [_arrays(30, 1), _arrays(20, 2)]
    batches = segment_batches(arrays, S, streams=2, piece_frames=10, seed=0)
    previous_last = [None, None]
    for _ in range(12):
        x, targets, reset = next(batches)
        assert x["numeric"].shape == (2, S, features.NUMERIC_SIZE)
        assert targets["main_x"].shape == (2, S)
        for row in range(2):
            ids = x["numeric"][row, :, 0]
            np.testing.assert_array_equal(np.diff(ids), 1)  # consecutive frames
            if reset[row] == 0:
                assert ids[0] == previous_last[row] + 1  # continues where it stopped
            else:
                assert ids[0] % 10 == 0  # a piece starts on a piece boundary
            previous_last[row] = ids[-1]


def test_augmented_segments_transform_whole_pieces_and_keep_the_order():
    from keras_lstm.data import augment

    arrays = [_arrays(30, 1), _arrays(20, 2), _arrays(25, 3)]
    plain = segment_batches(arrays, S, streams=2, piece_frames=10, seed=4)
    drawn = segment_batches(arrays, S, streams=2, piece_frames=10, seed=4, augmentations=("mirror", "swap-buttons"))
    augmented = segment_dataset(arrays, S, streams=2, piece_frames=10, seed=4, augmentations=("mirror", "swap-buttons")).as_numpy_iterator()
    seen, previous = set(), None
    for _ in range(30):
        (x, targets, reset), (x2, _, reset2, draws), (xa, targets_a, reset_a) = next(plain), next(drawn), next(augmented)
        np.testing.assert_array_equal(x["numeric"], x2["numeric"])  # the same pieces in the same order
        np.testing.assert_array_equal(reset, reset2)
        np.testing.assert_array_equal(reset, reset_a)
        if previous is not None:  # a row keeps its draws until it starts a new piece
            np.testing.assert_array_equal(draws[reset == 0], previous[reset == 0])
        previous = draws
        seen.update(map(tuple, draws))
        want_x, want_y = augment.transform(x, targets, draws[:, 0], draws[:, 1])
        np.testing.assert_array_equal(xa["numeric"], want_x["numeric"])
        np.testing.assert_array_equal(xa["categorical"], x["categorical"])
        for head in targets:
            np.testing.assert_array_equal(targets_a[head], want_y[head])
    assert len(seen) == 4  # every combination drawn, including none
    only_mirror = segment_batches(arrays, S, streams=2, piece_frames=10, seed=4, augmentations=("mirror",))
    assert not any(next(only_mirror)[3][:, 1].any() for _ in range(30))


def _tiny_policy(streams, **kwargs):
    keras.utils.set_random_seed(0)
    backbone = build_backbone("lstm", embed_size=8, hidden_size=8, num_layers=2, dropout=0.0)
    policy = CarriedStatePolicy(backbone, streams=streams, **kwargs)
    policy.compile(optimizer=keras.optimizers.SGD(0.0))  # weights stay put: check the state only
    return policy


# Mixed precision: the Keras layers compute in bfloat16 (8-bit mantissa:
# measured 4.4e-3 off float32 here after 2 x S steps of a state in [-1, 1]);
# the carried state itself stays float32.
@pytest.mark.parametrize("impl,mixed_precision,atol", [("fused", None, 1e-5), ("keras", "bfloat16", 2e-2)])
def test_train_step_carries_the_state_and_resets_it(impl, mixed_precision, atol):
    streams = 2
    policy = _tiny_policy(streams, recurrent_impl=impl, mixed_precision=mixed_precision)
    a = _arrays(2 * S, 3)
    x = {"numeric": np.stack([a.numeric] * streams), "categorical": np.stack([a.categorical] * streams)}
    targets = {h: np.stack([v] * streams) for h, v in a.targets.items()}

    def batch(lo, hi, reset):
        return (
            {k: tf.constant(v[:, lo:hi]) for k, v in x.items()},
            {h: tf.constant(v[:, lo:hi]) for h, v in targets.items()},
            tf.constant(reset, tf.float32),
        )

    policy.train_on_batch(*batch(0, S, [1.0, 1.0]))
    # Row 0 carries on; row 1 is told to reset, so it starts again from zero.
    policy.train_on_batch(*batch(S, 2 * S, [0.0, 1.0]))
    frames = policy.encode({k: tf.constant(v) for k, v in x.items()})
    _, whole = backbone_unroll(policy.backbone, frames, zero_state(policy.backbone, streams))
    _, second_only = backbone_unroll(policy.backbone, frames[:, S:], zero_state(policy.backbone, streams))
    carried = policy._carried.variables
    gaps = []
    for (h, c), (hw, cw), (hs, cs) in zip(carried, whole, second_only):
        assert h.dtype == c.dtype == tf.float32
        np.testing.assert_allclose(h.numpy()[0], hw.numpy()[0], atol=atol)
        np.testing.assert_allclose(c.numpy()[0], cw.numpy()[0], atol=atol)
        np.testing.assert_allclose(h.numpy()[1], hs.numpy()[1], atol=atol)
        gaps.append(np.abs(hs.numpy()[1] - hw.numpy()[1]).max())
    assert max(gaps) > 2 * atol  # carrying and resetting differ by more than the tolerance


def test_to_policy_is_a_plain_policy_with_the_same_outputs():
    policy = _tiny_policy(2)
    plain = policy.to_policy()
    assert type(plain) is BehaviorCloningPolicy
    a = _arrays(7, 4)
    x = {"numeric": a.numeric[None], "categorical": a.categorical[None]}
    for head in controller.HEADS:
        np.testing.assert_allclose(plain(x)[head].numpy(), policy(x)[head].numpy(), atol=1e-6)


@pytest.mark.slow
def test_train_with_carried_state_on_real_replays(tmp_path, monkeypatch):
    # The training frames must be freed before the final evaluation takes its
    # memory (the corpus run's peak): watch them from the dataset to that point.
    watched, alive_at_evaluation = [], []
    make_dataset, evaluate_games = carried_training.segment_dataset, one_pass.evaluate_games

    def watching_dataset(arrays, *args, **kwargs):
        watched.extend(weakref.ref(a.numeric) for a in arrays)
        return make_dataset(arrays, *args, **kwargs)

    def evaluating(*args, **kwargs):
        gc.collect()
        alive_at_evaluation.append(sum(ref() is not None for ref in watched))
        return evaluate_games(*args, **kwargs)

    monkeypatch.setattr(carried_training, "segment_dataset", watching_dataset)
    monkeypatch.setattr(one_pass, "evaluate_games", evaluating)
    config = TrainConfig.from_flat(
        replays=str(GAMES), output=str(tmp_path), embed_size=8, hidden_size=8, num_layers=1,
        window_size=12, stride=12, batch_size=8, epochs=2, max_frames=3000,
        carried_state=True, carried_streams=4, carried_piece_frames=600, backup_every_steps=3,
    )
    summary = train(config, verbose=0)
    for name in ("model.keras", "best.keras", "run.json", "metrics.json", "history.json"):
        assert (tmp_path / name).is_file(), name
    assert not (tmp_path / "backup").exists() and summary["epochs_run"] == 2
    assert np.isfinite(summary["val_loss"])
    assert watched and alive_at_evaluation == [0]
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert type(loaded) is BehaviorCloningPolicy
