"""Evaluating a trained policy as it is deployed: whole games, state carried.

Training and `keras_lstm.evaluation.evaluate` see windows: each prediction starts from
the zero state `window_size` frames earlier. In play the policy is stepped
once per frame from the first frame of the game with its state carried, so
by frame 10,000 the state has run 10,000 steps, far longer than anything
seen in training. This module measures what that does to the loss.

`deployed_logits` runs the backbone over each whole aligned trajectory from
the zero state (the backbone's `unroll`, in fixed-size chunks
so memory stays bounded, the state carried from chunk to chunk), then the
heads on every timestep. That is exactly stepping frame by frame with the
state carried: the recurrence is causal, so neither the chunk size nor the
padding after a short trajectory changes any output
(`tests/evaluation/test_deploy_eval.py` holds it to the windowed model on the first
window and to itself across chunk sizes).

`evaluate_deployed` compares, on the same predicted frames (the windows'
last frames), the windowed loss with the deployed loss, and also gives the
deployed loss on every frame and by time since the start of the game.
"""

from __future__ import annotations

import weakref

import numpy as np
import tensorflow as tf

from keras_lstm.data import controller, features
from keras_lstm.data.features import PolicyArrays
from keras_lstm.data.windows import make_windows
from keras_lstm.evaluation import baselines
from keras_lstm.evaluation.evaluate import frame_losses, predict_logits
from keras_lstm.model.backbone import keras_layers_unroll

DEFAULT_CHUNK_FRAMES = 256

# Edges (frames since the first aligned frame) of the bins for the loss over
# the course of a game: the first window, then roughly 1 s, 10 s, 1 min, ...
POSITION_EDGES = (0, 60, 600, 3600, 7200, 14400)


_RUNNERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _chunk_runner(policy, chunk_frames: int, impl: str = "keras"):
    """A `tf.function` `(numeric, categorical, state) -> (logits, state)` over
    one `[rows, chunk_frames]` chunk (any number of rows), traced once per
    policy and chunk length (a validation each epoch reuses it). `impl`: the
    backbone's recurrence by its Keras layers (`keras`, the default:
    TensorFlow's own loop, traced in well under a second and faster over
    long chunks on a CPU) or by our unroll (`fused`: one graph node per
    frame, several seconds to trace at 256 frames); the same values
    (`tests/model/test_recurrent_forms.py`)."""
    runners = _RUNNERS.setdefault(policy, {})
    key = (chunk_frames, impl)
    if key not in runners:
        runners[key] = _new_chunk_runner(policy, chunk_frames, impl)
    return runners[key]


def _new_chunk_runner(policy, chunk_frames: int, impl: str):
    if impl not in ("fused", "keras"):
        raise ValueError(f"impl must be fused or keras, got {impl!r}")
    backbone = policy.backbone
    state_spec = tf.nest.map_structure(lambda _: tf.TensorSpec([None, backbone.hidden_size], tf.float32), backbone.initial_state(1))

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, chunk_frames, features.NUMERIC_SIZE], tf.float32),
            tf.TensorSpec([None, chunk_frames, features.CATEGORICAL_SIZE], tf.int32),
            state_spec,
        ],
    )
    def run(numeric_BxTxF, categorical_BxTxC, state):
        frames_BxTxE = policy.encode({"numeric": numeric_BxTxF, "categorical": categorical_BxTxC}, training=False)
        if impl == "keras":
            outputs_BxTxU, state = keras_layers_unroll(backbone, frames_BxTxE, state)
        else:
            outputs_BxTxU, state = backbone.unroll(frames_BxTxE, state)
        return policy.apply_heads(outputs_BxTxU, numeric_BxTxF), state

    return run


def deployed_logits(
    policy, arrays: list[PolicyArrays], chunk_frames: int = DEFAULT_CHUNK_FRAMES, max_batch: int = 64, impl: str = "keras"
) -> list[dict]:
    """Per trajectory, `{head: [T, classes]}` logits of every frame, the state
    carried from the trajectory's first frame (the zero state) to its last.

    Trajectories run side by side, up to `max_batch` at a time (similar
    lengths together). Each chunk runs only the rows with frames left in
    it: a row whose trajectory has ended drops out, so no time goes to
    padding past a short game (only the last chunk of each is padded, and
    padding only follows real frames, so it changes nothing).
    """
    if chunk_frames < 1 or max_batch < 1:
        raise ValueError(f"chunk_frames and max_batch must be positive, got {chunk_frames} and {max_batch}")
    order = sorted(range(len(arrays)), key=lambda i: len(arrays[i]))
    out: list = [None] * len(arrays)
    for first in range(0, len(order), max_batch):
        group = order[first : first + max_batch]
        for i, logits in zip(group, _deployed_batch(policy, [arrays[i] for i in group], chunk_frames, impl)):
            out[i] = logits
    return out


def _deployed_batch(policy, arrays: list[PolicyArrays], chunk_frames: int, impl: str) -> list[dict]:
    lengths = np.array([len(a) for a in arrays])
    run = _chunk_runner(policy, chunk_frames, impl)
    state = [[np.zeros_like(s.numpy()) for s in layer] for layer in policy.initial_state(len(arrays))]
    out = [{} for _ in arrays]
    for start in range(0, int(lengths.max()), chunk_frames):
        rows = np.flatnonzero(lengths > start)  # the trajectories with frames in this chunk
        numeric = np.zeros((len(rows), chunk_frames, features.NUMERIC_SIZE), np.float32)
        categorical = np.zeros((len(rows), chunk_frames, features.CATEGORICAL_SIZE), np.int32)
        for j, r in enumerate(rows):
            piece = slice(start, min(start + chunk_frames, lengths[r]))
            numeric[j, : piece.stop - start] = arrays[r].numeric[piece]
            categorical[j, : piece.stop - start] = arrays[r].categorical[piece]
        rows_state = tuple(tuple(tf.constant(part[rows]) for part in layer) for layer in state)
        logits, new_state = run(tf.constant(numeric), tf.constant(categorical), rows_state)
        for layer, new_layer in zip(state, new_state):
            for part, new_part in zip(layer, new_layer):
                part[rows] = new_part.numpy()
        for head, value in logits.items():
            value = value.numpy()
            for j, r in enumerate(rows):
                if head not in out[r]:
                    out[r][head] = np.empty((lengths[r],) + value.shape[2:], np.float32)
                n = min(chunk_frames, lengths[r] - start)
                out[r][head][start : start + n] = value[j, :n]
    return out


def _summed(losses: dict) -> np.ndarray:
    return np.sum([losses[h] for h in controller.HEADS], axis=0)


def _accuracy(logits: dict, targets: dict) -> dict:
    return {
        "buttons": float(np.mean((logits["buttons"] > 0) == (targets["buttons"] > 0.5))),
        **{h: float(np.mean(logits[h].argmax(-1) == targets[h])) for h in controller.CLASS_HEADS},
    }


def _side(logits: dict, targets: dict) -> dict:
    losses = frame_losses(logits, targets)
    return {
        "loss": float(_summed(losses).mean()),
        "per_head_loss": {h: float(losses[h].mean()) for h in controller.HEADS},
        "per_head_accuracy": _accuracy(logits, targets),
    }


def _position_bins(position: np.ndarray, loss: np.ndarray, edges=POSITION_EDGES) -> list[dict]:
    """Mean deployed loss by frames since the start of the game."""
    bins = []
    bounds = list(edges) + [None]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        mask = position >= lo if hi is None else (position >= lo) & (position < hi)
        if mask.any():
            bins.append({"from_frame": int(lo), "to_frame": None if hi is None else int(hi), "frames": int(mask.sum()), "loss": float(loss[mask].mean())})
    return bins


def evaluate_deployed(
    policy,
    arrays: list[PolicyArrays],
    window_size: int,
    stride: int,
    stats: baselines.BaselineStats | None = None,
    batch_size: int = 256,
    chunk_frames: int = DEFAULT_CHUNK_FRAMES,
) -> dict:
    """The policy's validation loss as trained (windows) and as deployed.

    Args:
        policy: a `BehaviorCloningPolicy`.
        arrays: aligned trajectories (`features.align`), each a whole game
            from its first frame.
        window_size, stride: the windows of the windowed evaluation (as in
            training); their last frames are the "same frames" compared.
        stats: baseline statistics from the training split; when given, the
            repeat-previous baseline is reported on the same frames.

    Returns a dict with `windowed`, `deployed_same_frames` and
    `deployed_all_frames` (each `loss`, `per_head_loss`,
    `per_head_accuracy`), `gap_ratio` (deployed / windowed loss on the same
    frames), `deployed_loss_by_position` (every frame, binned by frames
    since the start of the game), `gap_by_position` (both losses on the same
    frames, binned the same way) and the frame counts.
    """
    arrays = [a for a in arrays if len(a) > 0]
    windows = make_windows(arrays, window_size, stride)
    if len(windows) == 0:
        raise ValueError(f"no validation window of {window_size} frames to compare with (every game is shorter)")

    per_traj = deployed_logits(policy, arrays, chunk_frames)
    deployed_all = {h: np.concatenate([t[h] for t in per_traj]) for h in controller.HEADS}
    ends = windows.ends
    deployed_same = {h: v[ends] for h, v in deployed_all.items()}
    windowed = predict_logits(policy, windows, batch_size)

    targets_all = windows.targets
    targets_same = windows.predicted_targets()
    position = np.concatenate([np.arange(len(a)) for a in arrays])

    result = {
        "windowed": _side(windowed, targets_same),
        "deployed_same_frames": _side(deployed_same, targets_same),
        "deployed_all_frames": _side(deployed_all, targets_all),
        "frames_same": int(len(ends)),
        "frames_all": int(len(position)),
        "trajectories": len(arrays),
        "longest_trajectory_frames": int(max(len(a) for a in arrays)),
        "window_size": int(window_size),
        "stride": int(stride),
    }
    result["gap_ratio"] = result["deployed_same_frames"]["loss"] / result["windowed"]["loss"]
    result["deployed_loss_by_position"] = _position_bins(position, _summed(frame_losses(deployed_all, targets_all)))
    windowed_bins = _position_bins(position[ends], _summed(frame_losses(windowed, targets_same)))
    deployed_bins = _position_bins(position[ends], _summed(frame_losses(deployed_same, targets_same)))
    result["gap_by_position"] = [
        {
            "from_frame": w["from_frame"],
            "to_frame": w["to_frame"],
            "frames": w["frames"],
            "windowed_loss": w["loss"],
            "deployed_loss": d["loss"],
            "ratio": d["loss"] / w["loss"],
        }
        for w, d in zip(windowed_bins, deployed_bins)
    ]
    if stats is not None:
        result["baseline_repeat_same_frames"] = baselines.repeat_baseline(stats, targets_same, windows.previous_targets())["loss"]
    return result
