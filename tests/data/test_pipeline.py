"""The tf.data pipeline over a prepared dataset: the same windows and targets
as the in-memory path, shuffling that loses nothing, shards that partition.
(What training takes from the stream: tests/training/test_inputs.py.)"""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_lstm.data import controller, pipeline
from keras_lstm.data import prepared as prepared_dataset

from conftest import reference_windows

tfds.disable_progress_bar()


def _collect(ds: tf.data.Dataset):
    """Unbatched (x, y) windows -> numpy arrays."""
    xs, ys = [], []
    for x, y in tfds.as_numpy(ds.batch(1024)):
        xs.append(x)
        ys.append(y)
    x = {k: np.concatenate([b[k] for b in xs]) for k in ("numeric", "categorical")}
    return x, {h: np.concatenate([b[h] for b in ys]) for h in controller.HEADS}


def _window_keys(x, y) -> Counter:
    keys = []
    for i in range(len(x["numeric"])):
        h = hashlib.sha256(x["numeric"][i].tobytes() + x["categorical"][i].tobytes())
        for head in controller.HEADS:
            h.update(np.ascontiguousarray(y[head][i]).tobytes())
        keys.append(h.hexdigest())
    return Counter(keys)


def test_targets_as_input_tf_matches_numpy(prepared):
    _, _, builder = prepared
    traj = prepared_dataset.read_trajectories(builder, "train")[0]
    expected = controller.targets_as_input(traj.targets)
    got = pipeline.targets_as_input_tf({h: tf.constant(v) for h, v in traj.targets.items()}).numpy()
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("W, stride, delay", [(12, 5, 0), (1, 3, 2), (20, 7, 4)])
@pytest.mark.parametrize("split", ["train", "validation"])
def test_unshuffled_windows_and_targets_are_identical_to_make_windows(prepared, W, stride, delay, split):
    folder, _, builder = prepared
    ref = reference_windows(folder, builder, split, W, stride, delay)
    x, y = _collect(pipeline.window_dataset(builder, split, W, stride, delay))
    ref_x, ref_y = ref.gather(ref.ends)
    assert len(x["numeric"]) == len(ref) > 0
    for k in x:
        np.testing.assert_array_equal(x[k], ref_x[k])
        assert x[k].dtype == ref_x[k].dtype
    for h in controller.HEADS:
        np.testing.assert_array_equal(y[h], ref_y[h])
        assert y[h].dtype == ref_y[h].dtype, h


def test_targets_of_the_last_frames_are_identical_to_make_windows(prepared):
    folder, _, builder = prepared
    ref = reference_windows(folder, builder, "train", 8, 5, 0)
    _, y = _collect(pipeline.window_dataset(builder, "train", 8, 5, target_frames=3))
    _, ref_y = ref.gather(ref.ends, target_frames=3)
    for h in controller.HEADS:
        np.testing.assert_array_equal(y[h], ref_y[h])


def test_shuffled_pass_is_a_permutation_and_deterministic_per_seed(prepared):
    folder, _, builder = prepared
    W, stride = 8, 11
    plain = _window_keys(*_collect(pipeline.window_dataset(builder, "train", W, stride)))
    shuffled = pipeline.window_dataset(builder, "train", W, stride, shuffle=True, seed=3, shuffle_buffer=64)
    sx, sy = _collect(shuffled)
    assert _window_keys(sx, sy) == plain
    again_x, _ = _collect(pipeline.window_dataset(builder, "train", W, stride, shuffle=True, seed=3, shuffle_buffer=64))
    np.testing.assert_array_equal(again_x["numeric"], sx["numeric"])
    other_x, _ = _collect(pipeline.window_dataset(builder, "train", W, stride, shuffle=True, seed=4, shuffle_buffer=64))
    assert not np.array_equal(other_x["numeric"], sx["numeric"])
    ref = reference_windows(folder, builder, "train", W, stride, 0)
    assert not np.array_equal(sx["numeric"], ref.gather(ref.ends)[0]["numeric"])  # it did shuffle


def test_repeated_stream_reshuffles_each_epoch(prepared):
    folder, _, builder = prepared
    n = len(reference_windows(folder, builder, "train", 8, 11, 0))
    ds = pipeline.window_dataset(
        builder, "train", 8, 11, shuffle=True, seed=0, repeat=True, shuffle_buffer=64, cycle_length=2, example_buffer=2
    )
    x, y = _collect(ds.take(2 * n))
    first = {"numeric": x["numeric"][:n], "categorical": x["categorical"][:n]}
    # Over two epochs' worth nearly every window appears twice (an endless
    # stream: the buffers carry some across the boundary), in another order.
    both = _window_keys(x, y)
    assert set(both.values()) <= {1, 2, 3}
    assert sum(v == 2 for v in both.values()) >= 0.8 * n
    assert not np.array_equal(first["numeric"], x["numeric"][n:])


def test_shards_partition_the_split(prepared):
    _, _, builder = prepared
    whole = _window_keys(*_collect(pipeline.window_dataset(builder, "train", 8, 13)))
    parts = [_window_keys(*_collect(pipeline.window_dataset(builder, "train", 8, 13, shard_index=k, num_shards=2))) for k in range(2)]
    assert parts[0] + parts[1] == whole
    assert not set(parts[0]) & set(parts[1])
    with pytest.raises(ValueError, match="too few"):
        pipeline.read_examples(builder, "train", 0, 100)


def test_streamed_batches_are_augmented_and_resume_with_the_same_draws(prepared):
    _, _, builder = prepared
    context = tf.distribute.InputContext()
    options = dict(shuffle_buffer=64, cycle_length=2, example_buffer=2)

    def batches(augmentations, skip_steps=0):
        make = pipeline.dataset_fn(builder, "train", 16, 8, 11, 0, seed=3, skip_steps=skip_steps, augmentations=augmentations, **options)
        return [(x["numeric"].numpy(), y["main_x"].numpy()) for x, y in make(context).take(6 - skip_steps)]

    plain, full, resumed = batches(()), batches(("mirror", "swap-buttons")), batches(("mirror", "swap-buttons"), skip_steps=2)
    assert any(not np.array_equal(p[0], f[0]) for p, f in zip(plain, full))
    for (fx, fy), (rx, ry) in zip(full[2:], resumed):
        np.testing.assert_array_equal(fx, rx)
        np.testing.assert_array_equal(fy, ry)
