"""The whole policy in numpy alone: frame encoder, recurrent step and heads over
plain arrays, with no TensorFlow or Keras import.

This is the frame loop's fast path (`keras_lstm.serving.inference.PolicyStepper`
runs it) and what a UMI bot bundle carries (`keras_lstm.serving.umi_bundle`):
a bot that starts in a second and installs in a few megabytes. Its spec is
the Keras policy (`keras_lstm.model.policy`); the Keras layers' own fast forms
call these functions (`recurrent.numpy_step`, `encoder.NumpyEncoder`,
`heads.previous_input_numpy`), so there is one copy of the numpy math, and
`tests/model/test_numpy_policy.py` holds it equal to the Keras model.

    policy_np = NumpyPolicy.from_keras(policy)   # a snapshot of the weights
    state = policy_np.initial_state(n_games)
    logits_BxK, state = policy_np.logits(numeric_BxF, categorical_BxC, state)
    policy_np.save("policy.npz"); NumpyPolicy.load("policy.npz")
"""

from __future__ import annotations

import json

import numpy as np

from keras_lstm.data import controller, features

N_BUTTONS = len(controller.BUTTONS)
# What the heads see of the previous input: 8 buttons as 0/1, then each stick
# axis one-hot (17), then the shoulder one-hot (5).
PREVIOUS_INPUT_SIZE = N_BUTTONS + len(controller.STICK_HEADS) * controller.STICK_CLASSES + controller.SHOULDER_CLASSES
HEAD_SIZES = [N_BUTTONS] + [controller.HEAD_CLASSES[h] for h in controller.CLASS_HEADS]
FORMAT = 1  # of the saved arrays


def sigmoid(x):
    """Logistic sigmoid with one transcendental: equal to 1 / (1 + e^-x)."""
    return 0.5 * np.tanh(0.5 * x) + 0.5


def fuse_cell(cell_type: str, kernel, recurrent_kernel, bias) -> tuple[np.ndarray, np.ndarray]:
    """A Keras cell's weights as one `[in + hidden, gates]` matrix and a bias,
    so that `[x, h] @ W` computes every gate at once. For the GRU
    (`reset_after=True`) the candidate's recurrent part stays separate (the
    reset gate scales it): four blocks, `[z+r from x and h | candidate from x
    | candidate from h]`."""
    kernel = np.asarray(kernel, np.float32)
    recurrent = np.asarray(recurrent_kernel, np.float32)
    bias = np.asarray(bias, np.float32)
    if cell_type == "lstm":
        return np.ascontiguousarray(np.concatenate([kernel, recurrent], axis=0)), bias
    d, u = kernel.shape[0], recurrent.shape[0]
    input_bias, recurrent_bias = bias[0], bias[1]
    w = np.zeros((d + u, 4 * u), np.float32)
    w[:d, : 2 * u] = kernel[:, : 2 * u]
    w[d:, : 2 * u] = recurrent[:, : 2 * u]
    w[:d, 2 * u : 3 * u] = kernel[:, 2 * u :]
    w[d:, 3 * u :] = recurrent[:, 2 * u :]
    b = np.concatenate([input_bias[: 2 * u] + recurrent_bias[: 2 * u], input_bias[2 * u :], recurrent_bias[2 * u :]])
    return w, b.astype(np.float32)


def numpy_step(cell_type: str, fused_layers, x_BxD: np.ndarray, state) -> tuple[np.ndarray, tuple]:
    """One frame through every layer with weights from `fuse_cell`; returns
    `(y_BxU, new_state)`; the state is a tuple per layer, `(h, c)` for LSTM
    and `(h,)` for GRU."""
    new_state = []
    for (w, b), layer_state in zip(fused_layers, state):
        h = layer_state[0]
        u = h.shape[1]
        z = np.concatenate([x_BxD, h], axis=1) @ w
        z += b
        if cell_type == "lstm":
            c = layer_state[1]
            i = sigmoid(z[:, :u])
            f = sigmoid(z[:, u : 2 * u])
            g = np.tanh(z[:, 2 * u : 3 * u])
            o = sigmoid(z[:, 3 * u :])
            c = f * c + i * g
            x_BxD = o * np.tanh(c)
            new_state.append((x_BxD, c))
        else:
            update = sigmoid(z[:, :u])
            reset = sigmoid(z[:, u : 2 * u])
            candidate = np.tanh(z[:, 2 * u : 3 * u] + reset * z[:, 3 * u :])
            x_BxD = update * h + (1.0 - update) * candidate
            new_state.append((x_BxD,))
    return x_BxD, tuple(new_state)


def encode(tables, projection_w, projection_b, relative_features: bool, numeric_BxF, categorical_BxC) -> np.ndarray:
    """The frame encoder for one frame per game: `[B, F]`, `[B, C]` -> `[B, embed]`.
    `tables`: the embedding table of each categorical column in column order.
    Ids out of a table's range are clipped into it."""
    ids = np.clip(categorical_BxC, 0, None)
    parts = [numeric_BxF] + ([features.relative_columns(numeric_BxF, np)] if relative_features else [])
    parts += [t[np.minimum(ids[:, i], len(t) - 1)] for i, t in enumerate(tables)]
    x = np.concatenate(parts, axis=1) @ projection_w
    x += projection_b
    return np.maximum(x, 0.0, out=x)


def previous_input_onehot(numeric_BxF: np.ndarray) -> np.ndarray:
    """The previous controller the heads see, one frame per game:
    `[B, NUMERIC_SIZE]` -> `[B, PREVIOUS_INPUT_SIZE]` (buttons 0/1, stick and
    shoulder classes one-hot)."""
    pad = numeric_BxF[:, features.STATE_NUMERIC_SIZE :]
    out = np.zeros((len(pad), PREVIOUS_INPUT_SIZE), np.float32)
    out[:, :N_BUTTONS] = pad[:, :N_BUTTONS]
    rows = np.arange(len(pad))[:, None]
    n_sticks = len(controller.STICK_HEADS)
    sticks = controller.stick_to_class(pad[:, N_BUTTONS : N_BUTTONS + n_sticks])  # [B, 4] at once: fewer calls per frame
    out[rows, N_BUTTONS + np.arange(n_sticks) * controller.STICK_CLASSES + sticks] = 1.0
    shoulder = controller.shoulder_to_class(pad[:, N_BUTTONS + n_sticks])
    out[rows[:, 0], N_BUTTONS + n_sticks * controller.STICK_CLASSES + shoulder] = 1.0
    return out


def zero_state(cell_type: str, batch: int, hidden_size: int, num_layers: int) -> tuple:
    """The zero state, one tuple per layer: `(h, c)` for LSTM, `(h,)` for GRU;
    each a `[batch, hidden_size]` float32 array (the one layout of every form)."""
    per_layer = 2 if cell_type == "lstm" else 1
    return tuple(tuple(np.zeros((batch, hidden_size), np.float32) for _ in range(per_layer)) for _ in range(num_layers))


class NumpyPolicy:
    """A snapshot of a `BehaviorCloningPolicy`'s weights, stepped one frame per
    game in numpy.

    Args:
        cell_type: "lstm" or "gru".
        layers: per recurrent layer, `(W [in + hidden, gates], b [gates])` from `fuse_cell`.
        tables: the embedding table of each categorical column, in column order.
        projection: `(W, b)` of the encoder's projection.
        heads: `(W, b)` of every head side by side, in `controller.HEADS` order.
        relative_features: whether the encoder also sees `features.relative_columns`.
        previous_input_heads: whether the heads also see the previous input one-hot.
    """

    def __init__(self, cell_type, layers, tables, projection, heads, relative_features=False, previous_input_heads=True):
        self.cell_type = cell_type
        self.layers = [(np.asarray(w, np.float32), np.asarray(b, np.float32)) for w, b in layers]
        self.tables = [np.asarray(t, np.float32) for t in tables]
        self.projection_w, self.projection_b = (np.asarray(a, np.float32) for a in projection)
        self.heads_w = np.ascontiguousarray(heads[0], np.float32)
        self.heads_b = np.asarray(heads[1], np.float32)
        self.relative_features = bool(relative_features)
        self.previous_input_heads = bool(previous_input_heads)
        self.hidden_size = self.layers[0][0].shape[1] // 4  # LSTM: 4 gates; GRU fused to 4 blocks
        self.num_layers = len(self.layers)
        self._splits = np.cumsum(HEAD_SIZES)[:-1]

    @classmethod
    def from_keras(cls, policy) -> "NumpyPolicy":
        """A snapshot of a trained `BehaviorCloningPolicy` (reads its variables; imports nothing)."""
        backbone, encoder = policy.backbone, policy.encoder
        cells = [layer.cell for layer in backbone.recurrent_layers]
        layers = [fuse_cell(backbone.cell_type, c.kernel.numpy(), c.recurrent_kernel.numpy(), c.bias.numpy()) for c in cells]
        actions, characters = encoder.action_embedding.embeddings.numpy(), encoder.character_embedding.embeddings.numpy()
        tables = [actions, actions, characters, characters, encoder.stage_embedding.embeddings.numpy()]
        head_layers = [policy.head_layers[h] for h in controller.HEADS]
        heads = (
            np.concatenate([layer.kernel.numpy() for layer in head_layers], axis=1),
            np.concatenate([layer.bias.numpy() for layer in head_layers]),
        )
        return cls(
            backbone.cell_type, layers, tables, (encoder.projection.kernel.numpy(), encoder.projection.bias.numpy()), heads,
            relative_features=encoder.relative_features, previous_input_heads=policy.previous_input is not None,
        )

    def initial_state(self, batch: int) -> tuple:
        """The zero state of `batch` games (`zero_state`)."""
        return zero_state(self.cell_type, batch, self.hidden_size, self.num_layers)

    def logits(self, numeric_BxF: np.ndarray, categorical_BxC: np.ndarray, state) -> tuple[dict, tuple]:
        """One frame per game -> `({head: logits [B, ...]}, new_state)`. No
        checks (callers check their frames once, where they come in)."""
        x = encode(self.tables, self.projection_w, self.projection_b, self.relative_features, numeric_BxF, categorical_BxC)
        output_BxU, state = numpy_step(self.cell_type, self.layers, x, state)
        if self.previous_input_heads:
            output_BxU = np.concatenate([output_BxU, previous_input_onehot(numeric_BxF)], axis=1)
        z = output_BxU @ self.heads_w
        z += self.heads_b
        return dict(zip(controller.HEADS, np.split(z, self._splits, axis=1))), state

    # --- saving: one .npz of plain arrays, no pickle

    def save(self, path) -> None:
        """Write the arrays to `path` (.npz; written as given: callers write it atomically)."""
        meta = {"format": FORMAT, "feature_version": features.FEATURE_VERSION, "cell_type": self.cell_type,
                "num_layers": self.num_layers, "relative_features": self.relative_features,
                "previous_input_heads": self.previous_input_heads}
        arrays = {"meta": np.frombuffer(json.dumps(meta).encode(), np.uint8)}
        for i, (w, b) in enumerate(self.layers):
            arrays[f"layer{i}_w"], arrays[f"layer{i}_b"] = w, b
        arrays["action_table"], arrays["character_table"], arrays["stage_table"] = self.tables[0], self.tables[2], self.tables[4]
        arrays["projection_w"], arrays["projection_b"] = self.projection_w, self.projection_b
        arrays["heads_w"], arrays["heads_b"] = self.heads_w, self.heads_b
        with open(path, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path) -> "NumpyPolicy":
        """The policy `save` wrote; ValueError naming the file if it is not one,
        or holds features of another version."""
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(bytes(data["meta"]).decode())
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"{path}: not a policy saved by keras-lstm ({type(err).__name__}: {err})") from None
        if meta.get("format") != FORMAT or meta.get("feature_version") != features.FEATURE_VERSION:
            raise ValueError(
                f"{path}: saved as format {meta.get('format')} with features version {meta.get('feature_version')}; "
                f"this keras-lstm reads format {FORMAT}, features version {features.FEATURE_VERSION}: make it again"
            )
        actions, characters = arrays["action_table"], arrays["character_table"]
        return cls(
            meta["cell_type"],
            [(arrays[f"layer{i}_w"], arrays[f"layer{i}_b"]) for i in range(meta["num_layers"])],
            [actions, actions, characters, characters, arrays["stage_table"]],
            (arrays["projection_w"], arrays["projection_b"]),
            (arrays["heads_w"], arrays["heads_b"]),
            relative_features=meta["relative_features"], previous_input_heads=meta["previous_input_heads"],
        )
