"""What `keras-lstm umi` serves: a run folder or a SavedModel export -> an
actor for `keras_lstm.serving.umi_bot.PolicyBot`, with what the bot declares
(its delay, the characters it plays).

- a run folder (or its `model.keras`): the numpy policy
  (`keras_lstm.model.numpy_policy.NumpyPolicy`), argmax or sampled, with a
  keep bias folded into the heads (`keras_lstm.model.heads.fold_keep_bias`);
- a SavedModel from `keras-lstm export`: its stateless `step` signature,
  batched, the state travelling with each call (it keeps the keep bias it was
  exported with).

The characters are those the run imitated (read from its training games'
first frames, as the features name them), or "ALL": the policy takes any
character id, but has learned only the ones it saw.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from keras_lstm.data import features, umi_frames
from keras_lstm.data.replays import ReplayError, read_game
from keras_lstm.serving.decode import ControllerSampler, argmax_pad, logits_from_probabilities


@dataclasses.dataclass
class ServedPolicy:
    actor: object  # initial_state(n), act(numeric, categorical, state) -> (pad, state)
    delay: int
    characters: str  # umi's form: "ALL" or names joined by "+"
    source: str
    decoding: dict  # `agents.describe_decoding`: argmax, or sampled at a temperature and seed
    numpy_policy: object | None = None  # the NumpyPolicy of a run folder (what a bundle carries)


class SavedModelActor:
    """A SavedModel's `step` signature as an actor: state `(h, c)` (LSTM) or
    `(h,)` (GRU), each `[B, layers, hidden]`."""

    def __init__(self, path, sampler: ControllerSampler | None = None):
        import tensorflow as tf

        from keras_lstm.serving.export import load_saved_model

        self._tf = tf
        self.loaded, self.meta = load_saved_model(path)
        self._step = self.loaded.signatures["step"]
        self.sampler = sampler
        self.lstm = self.meta["cell_type"] == "lstm"

    def initial_state(self, n: int):
        shape = (n, int(self.meta["num_layers"]), int(self.meta["hidden_size"]))
        return tuple(np.zeros(shape, np.float32) for _ in range(2 if self.lstm else 1))

    def act(self, numeric, categorical, state):
        tf = self._tf
        kwargs = {"numeric": tf.constant(numeric, tf.float32), "categorical": tf.constant(categorical, tf.int32), "h": tf.constant(state[0])}
        if self.lstm:
            kwargs["c"] = tf.constant(state[1])
        out = {k: v.numpy() for k, v in self._step(**kwargs).items()}
        new_state = (out.pop("h"),) + ((out.pop("c"),) if self.lstm else ())
        if self.sampler is not None:
            out.update(self.sampler.pad(logits_from_probabilities(out)))
        return out, new_state


def trained_characters(train_files) -> tuple[list[int], int]:
    """The external ids of the players a run imitated, from its training
    games, and how many of those games could not be read (moved, or named
    relative to another folder)."""
    found, unreadable = set(), 0
    for path in train_files:
        if not Path(path).is_file():
            unreadable += 1
            continue
        try:
            trajectories, _ = features.game_to_trajectories(read_game(path), path)
        except ReplayError:
            continue  # a game with nobody to imitate (training skipped it too)
        found.update(int(t.state_categorical[0, 2]) for t in trajectories)
    return sorted(found), unreadable


def characters_option(value: str | None, run_info: dict | None, on_warning=None) -> str:
    """`--characters`: "trained" (default: the run's, else ALL), "ALL", "12",
    or names (FOX+FALCO) -> umi's canonical form; ValueError naming the option.
    `on_warning` hears when the run's training games cannot all be read."""
    import umi

    if value is None or value.lower() == "trained":
        if run_info is None:
            return "ALL"
        files = run_info.get("train_files", [])
        ids, unreadable = trained_characters(files)
        names = umi_frames.roster_names(ids)
        if unreadable and on_warning is not None:
            declared = "+".join(names) if names else "ALL"
            on_warning(f"{unreadable} of the run's {len(files)} training games could not be read (run from the folder the run "
                       f"was trained in, or give --characters): declaring {declared}")
        return umi.canonical_characters(names) if names else "ALL"
    try:
        return umi.canonical_characters(value.replace(",", "+").upper())
    except ValueError as err:
        raise ValueError(f"--characters: {err}") from None


def load_served_policy(model, sample: bool = False, temperature: float | None = None, seed: int | None = None,
                       keep_bias: float = 0.0, characters: str | None = None, on_warning=None) -> ServedPolicy:
    """The policy at `model` (a run folder, its `.keras`, or a SavedModel
    version or name folder) ready to serve."""
    from keras_lstm.model.heads import fold_keep_bias
    from keras_lstm.model.numpy_policy import NumpyPolicy
    from keras_lstm.serving.agents import check_decoding_options, describe_decoding, locate_model, make_sampler
    from keras_lstm.serving.umi_bot import NumpyActor
    from keras_lstm.training.run_folder import load_run

    check_decoding_options(sample, temperature, seed, keep_bias)  # before the model loads
    if characters is not None:
        characters_option(characters, None)
    sampler = make_sampler(sample, temperature, seed)
    path, saved = locate_model(model, keep_bias)
    if saved is not None:
        actor = SavedModelActor(saved, sampler)
        decoding = describe_decoding(sampler, float(actor.meta.get("keep_bias", 0.0)))
        return ServedPolicy(actor, int(actor.meta.get("delay", 0)), characters_option(characters, None), str(saved), decoding)
    policy, run_info = load_run(path)
    if keep_bias:
        fold_keep_bias(policy, keep_bias)
    numpy_policy = NumpyPolicy.from_keras(policy)
    actor = NumpyActor(numpy_policy, argmax_pad if sampler is None else sampler.pad)
    delay = int(run_info["config"].get("delay", 0))
    return ServedPolicy(actor, delay, characters_option(characters, run_info, on_warning), str(path), describe_decoding(sampler, keep_bias),
                        numpy_policy)
