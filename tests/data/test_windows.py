"""Windows and the game-level split."""

import numpy as np
import pytest

from keras_lstm.data import controller, features
from keras_lstm.data.features import PolicyArrays
from keras_lstm.data.split import split_by_game
from keras_lstm.data.windows import WindowBatches, make_windows


def fake_arrays(n, start=0):
    rows = np.arange(start, start + n)
    return PolicyArrays(
        numeric=np.repeat(rows[:, None], features.NUMERIC_SIZE, 1).astype(np.float32),
        categorical=np.zeros((n, features.CATEGORICAL_SIZE), np.int32),
        targets={
            "buttons": np.zeros((n, 8), np.float32),
            **{h: (rows % controller.HEAD_CLASSES[h]).astype(np.int32) for h in controller.CLASS_HEADS},
        },
    )


def test_windows_stay_inside_one_trajectory():
    arrays = [fake_arrays(10, 0), fake_arrays(3, 100), fake_arrays(7, 200)]
    w = make_windows(arrays, window_size=4, stride=2)
    assert w.trajectories_too_short == 1  # the 3-frame one
    x, y = w.gather(w.ends)
    first_col = x["numeric"][:, :, 0]
    # consecutive rows of one trajectory in each window
    assert (np.diff(first_col, axis=1) == 1).all()
    assert w.ends.tolist() == [3, 5, 7, 9, 16, 18]
    np.testing.assert_array_equal(y["main_x"], w.targets["main_x"][w.ends])


def test_dataset_batches_match_gather():
    w = make_windows([fake_arrays(50)], window_size=5, stride=3)
    ds = w.dataset(batch_size=4, shuffle=False, drop_remainder=True)
    x, y = next(iter(ds))
    ex, ey = w.gather(w.ends[:4])
    np.testing.assert_array_equal(x["numeric"].numpy(), ex["numeric"])
    np.testing.assert_array_equal(y["shoulder"].numpy(), ey["shoulder"])
    assert x["numeric"].shape == (4, 5, features.NUMERIC_SIZE)


def test_split_is_by_file_deterministic_and_stable():
    files = [f"/r/game_{i}.slp" for i in range(20)]
    train, val = split_by_game(files, 0.2, seed=0)
    assert len(val) == 4 and not set(train) & set(val) and sorted(train + val) == sorted(files)
    assert split_by_game(files, 0.2, seed=0) == (train, val)
    assert split_by_game(files, 0.2, seed=1)[1] != val
    # a file's side depends on its name, not on which other files exist
    _, val_more = split_by_game(files + ["/r/extra.slp"], 0.2, seed=0)
    assert len(set(val) & set(val_more)) >= 3
    assert split_by_game(files[:1], 0.5, 0) == (files[:1], [])
    with pytest.raises(ValueError, match="val_fraction"):
        split_by_game(files, 1.0, 0)


def test_split_takes_names_that_are_not_utf8_and_keeps_the_others_in_place():
    import os

    files = [f"/r/game_{i}.slp" for i in range(20)]
    odd = [os.fsdecode(b"/r/g\xff%d.slp" % i) for i in range(5)]  # surrogate escapes, as os.listdir gives them
    train, val = split_by_game(files + odd, 0.2, seed=0)
    assert sorted(train + val) == sorted(files + odd) and len(val) == 5
    # Valid names hash as before (their UTF-8 bytes): adding odd names moves none of them.
    _, val_plain = split_by_game(files, 0.2, seed=0)
    assert set(val_plain) == {"/r/game_10.slp", "/r/game_16.slp", "/r/game_5.slp", "/r/game_6.slp"}  # as before this change


def test_window_batches_are_the_windows_in_a_seeded_order_new_each_epoch():
    w = make_windows([fake_arrays(50), fake_arrays(30, 100)], window_size=5, stride=2)
    batches = WindowBatches(w, batch_size=8, seed=3)
    assert len(batches) == -(-len(w) // 8) and len(WindowBatches(w, 8, drop_remainder=True)) == len(w) // 8

    def epoch(b):
        return np.concatenate([b[i][0]["numeric"][:, -1, 0] for i in range(len(b))])

    first = epoch(batches)
    # Every window exactly once, each batch what `gather` gives for its ends.
    np.testing.assert_array_equal(np.sort(first), np.sort(w.numeric[w.ends, 0]))
    x, y = batches[1]
    ex, ey = w.gather(batches._order[8:16])
    np.testing.assert_array_equal(x["numeric"], ex["numeric"]) and np.testing.assert_array_equal(y["main_x"], ey["main_x"])
    assert not np.array_equal(first, np.sort(first))  # shuffled
    np.testing.assert_array_equal(epoch(WindowBatches(w, batch_size=8, seed=3)), first)  # the same seed, the same order
    batches.on_epoch_end()
    second = epoch(batches)
    assert not np.array_equal(second, first) and np.array_equal(np.sort(second), np.sort(first))
    np.testing.assert_array_equal(epoch(WindowBatches(w, 8, shuffle=False)), w.numeric[w.ends, 0])
    with pytest.raises(IndexError):
        batches[len(batches)]
