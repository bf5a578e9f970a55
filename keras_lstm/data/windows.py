"""Windows over aligned trajectories, and input over them: `tf.data`
(`Windows.dataset`, TensorFlow's) or a `keras.utils.PyDataset` of numpy
batches (`WindowBatches`, any Keras backend, no TensorFlow).

All trajectories are concatenated into one array per input; a window is named
by the row of its last frame (`ends`), and only windows that lie wholly inside
one trajectory exist. Each window predicts the controller at its last frame.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from keras_lstm.data import features
from keras_lstm.data.features import PolicyArrays


@dataclasses.dataclass
class Windows:
    """Concatenated aligned arrays and the end rows of the windows over them."""

    numeric: np.ndarray  # [N, NUMERIC_SIZE]
    categorical: np.ndarray  # [N, CATEGORICAL_SIZE]
    targets: dict  # head -> [N] or [N, 8]
    ends: np.ndarray  # [M] int64, row of each window's last frame
    window_size: int
    trajectories_too_short: int = 0

    def __len__(self) -> int:
        return len(self.ends)

    def previous_targets(self) -> dict:
        """The controller one frame before each predicted frame (for the
        repeat-previous baseline); always inside the same trajectory."""
        return {k: v[self.ends - 1] for k, v in self.targets.items()}

    def predicted_targets(self) -> dict:
        return {k: v[self.ends] for k, v in self.targets.items()}

    def gather(self, ends: np.ndarray, target_frames: int = 1):
        """`(x, y)` of the windows ending at `ends`: y is the controller at
        the last frame (`[B, ...]`), or at the last `target_frames` frames
        (`[B, target_frames, ...]`) when that is over 1."""
        rows = ends[:, None] + np.arange(1 - self.window_size, 1)[None, :]
        x = {"numeric": self.numeric[rows], "categorical": self.categorical[rows]}
        at = ends if target_frames == 1 else rows[:, -target_frames:]
        y = {k: v[at] for k, v in self.targets.items()}
        return x, y

    def dataset(
        self, batch_size: int, shuffle: bool, seed: int = 0, drop_remainder: bool = False, target_frames: int = 1
    ) -> tf.data.Dataset:
        """`(x, y)` batches (`target_frames` as in `gather`). Shuffled with a
        fixed seed (reshuffled each epoch) so that runs repeat."""
        import tensorflow as tf

        W = self.window_size
        F, C = self.numeric.shape[1], self.categorical.shape[1]
        heads = list(self.targets)

        def gather_np(ends):
            x, y = self.gather(ends, target_frames)
            return [x["numeric"], x["categorical"]] + [y[h] for h in heads]

        def gather_tf(ends):
            dtypes = [tf.float32, tf.int32] + [tf.as_dtype(self.targets[h].dtype) for h in heads]
            out = tf.numpy_function(gather_np, [ends], dtypes, stateful=False)
            n = None if not drop_remainder else batch_size
            out[0].set_shape([n, W, F])
            out[1].set_shape([n, W, C])
            y = {}
            for h, t in zip(heads, out[2:]):
                t.set_shape([n] + ([] if target_frames == 1 else [target_frames]) + list(self.targets[h].shape[1:]))
                y[h] = t
            return {"numeric": out[0], "categorical": out[1]}, y

        ds = tf.data.Dataset.from_tensor_slices(self.ends)
        if shuffle:
            ds = ds.shuffle(len(self.ends), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        return ds.map(gather_tf, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


class WindowBatches(keras.utils.PyDataset):
    """`(x, y)` batches of `windows` as numpy arrays (`Windows.gather`), for
    `fit` under any Keras backend: the input for JAX, where `tf.data` may not
    be installed. Shuffled by `seed`, in a new order each epoch (epoch `e`'s
    order is a function of `seed` and `e` alone, so runs repeat).

    Example:
    >>> batches = WindowBatches(make_windows(arrays, 60, stride=4), batch_size=64)
    >>> policy.fit(batches, epochs=3)
    """

    def __init__(self, windows: Windows, batch_size: int, shuffle: bool = True, seed: int = 0, target_frames: int = 1,
                 drop_remainder: bool = False, **kwargs):
        super().__init__(**kwargs)
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.windows, self.batch_size, self.shuffle, self.seed = windows, batch_size, shuffle, seed
        self.target_frames, self.drop_remainder = target_frames, drop_remainder
        self.epoch = 0
        self._order = self._epoch_order()

    def _epoch_order(self) -> np.ndarray:
        ends = self.windows.ends
        return ends[np.random.default_rng([self.seed, self.epoch]).permutation(len(ends))] if self.shuffle else ends

    def __len__(self) -> int:
        n = len(self.windows)
        return n // self.batch_size if self.drop_remainder else -(-n // self.batch_size)

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} of {len(self)}")
        return self.windows.gather(self._order[index * self.batch_size : (index + 1) * self.batch_size], self.target_frames)

    def on_epoch_end(self):
        self.epoch += 1
        self._order = self._epoch_order()


def make_windows(arrays: list[PolicyArrays], window_size: int, stride: int = 1) -> Windows:
    """Windows of `window_size` frames every `stride` frames of each trajectory.

    A trajectory shorter than one window gives none and is counted.
    """
    if window_size < 1 or stride < 1:
        raise ValueError(f"window_size and stride must be positive, got {window_size} and {stride}")
    ends, offset, too_short = [], 0, 0
    for a in arrays:
        n = len(a)
        # Need row `end - 1` inside the trajectory too (repeat baseline).
        first_end = max(window_size - 1, 1)
        if n <= first_end:
            too_short += 1
        else:
            ends.append(offset + np.arange(first_end, n, stride, dtype=np.int64))
        offset += n

    def cat(parts, width, dtype):
        return np.concatenate(parts) if parts else np.zeros((0,) + width, dtype)

    heads = list(arrays[0].targets) if arrays else []
    return Windows(
        numeric=cat([a.numeric for a in arrays], (features.NUMERIC_SIZE,), np.float32),
        categorical=cat([a.categorical for a in arrays], (features.CATEGORICAL_SIZE,), np.int32),
        targets={h: np.concatenate([a.targets[h] for a in arrays]) for h in heads},
        ends=np.concatenate(ends) if ends else np.zeros((0,), np.int64),
        window_size=window_size,
        trajectories_too_short=too_short,
    )
