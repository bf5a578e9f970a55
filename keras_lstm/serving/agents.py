"""Agents: one frame in, one controller out, for the play loop
(`keras_lstm.serving.play`).

- `StepperAgent`: a run folder from `keras-lstm train`, stepped with the numpy
  `PolicyStepper`;
- `SavedModelAgent`: a SavedModel version folder from `keras-lstm export`,
  stepped through its `serving_default` signature (state held in the model);
- `load_agent`: the right one for a path.

Each acts on the most likely value of each head (argmax, the default), or on
a value drawn from the predicted distributions (`make_sampler`, a
`keras_lstm.serving.decode.ControllerSampler`: `keras-lstm play --sample
--temperature T --seed S`). A run folder's agent samples from the head
logits; a SavedModel returns probabilities, not logits, so its agent samples
from those: the same distributions, except where float32 rounded a
probability to exactly 0 or 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from keras_lstm.config import check_seed
from keras_lstm.model.heads import check_keep_bias, fold_keep_bias
from keras_lstm.serving.decode import ControllerSampler, check_temperature, decode_controller, logits_from_probabilities
from keras_lstm.serving.export import METADATA_FILE, load_saved_model
from keras_lstm.serving.inference import PolicyStepper
from keras_lstm.training.run_folder import MODEL_FILE, load_run


def describe_decoding(sampler: ControllerSampler | None, keep_bias: float = 0.0) -> dict:
    """How an agent chooses its action, for the report (with the keep bias
    its heads decide with, when there is one)."""
    described = {"mode": "argmax"} if sampler is None else sampler.describe()
    return {**described, "keep_bias": keep_bias} if keep_bias else described


def check_decoding_options(sample: bool, temperature: float | None = None, seed: int | None = None, keep_bias: float | None = None) -> None:
    """How an agent decides, checked before a model loads (`play`, `umi`): a
    temperature > 0, a seed numpy takes and both only with --sample, a keep
    bias >= 0. Each message names its option."""
    if temperature is not None:
        check_temperature(temperature)
    if seed is not None:
        check_seed(seed)  # else numpy's "expected non-negative integer", naming no option
    if keep_bias is not None:
        check_keep_bias(keep_bias)
    if not sample and (temperature is not None or seed is not None):
        raise ValueError("--temperature and --seed apply to sampled actions: add --sample")


def make_sampler(sample: bool, temperature: float | None = None, seed: int | None = None) -> ControllerSampler | None:
    """The sampler `keras-lstm play --sample` acts with (temperature 1.0 and
    seed 0 unless given), or None to act by argmax."""
    if not sample:
        return None
    return ControllerSampler(1.0 if temperature is None else temperature, 0 if seed is None else seed)


class StepperAgent:
    """A trained policy stepped in numpy (`keras_lstm.serving.inference.PolicyStepper`),
    acting by argmax or, given a `sampler`, by sampling from its head logits.
    A `keep_bias` is folded into `policy`'s head weights in place
    (`keras_lstm.model.heads.fold_keep_bias`): pass a policy of its own."""

    kind = "keras run (numpy step)"

    def __init__(self, policy, delay: int = 0, sampler: ControllerSampler | None = None, keep_bias: float = 0.0):
        if keep_bias:
            fold_keep_bias(policy, keep_bias)
        self.keep_bias = keep_bias
        self.stepper = PolicyStepper(policy)
        self.delay = delay
        self.source = ""
        self.sampler = sampler
        self._decode = decode_controller if sampler is None else sampler

    @property
    def decoding(self) -> dict:
        return describe_decoding(self.sampler, self.keep_bias)

    def reset(self) -> None:
        self.stepper.reset()

    def act(self, numeric_1xF, categorical_1xC) -> dict:
        # PolicyStepper.act is decode_controller(logits): the same, with the decoder chosen here
        return self._decode(self.stepper.logits(numeric_1xF, categorical_1xC))


class SavedModelAgent:
    """An exported SavedModel stepped through `serving_default` (state held in
    the model; `reset` at the start of a game). With a `sampler`, the pad is
    drawn from the probabilities the signature returns (it returns no logits)."""

    kind = "SavedModel (serving_default)"

    def __init__(self, path: str | Path, sampler: ControllerSampler | None = None):
        import tensorflow as tf

        self.source = str(path)
        self.sampler = None  # the warm-up call below draws nothing
        loaded, self.meta = load_saved_model(path)  # one-line errors naming the damaged file
        self.delay = int(self.meta.get("delay", 0))
        self._loaded = loaded  # keeps the variables alive
        self._serve = loaded.signatures["serving_default"]
        self._reset = loaded.signatures["reset"]
        self._tf = tf
        # The first call of a loaded signature initialises it (tens of ms):
        # pay that now, not in the first frame of a game.
        numeric = np.zeros((1, int(self.meta["numeric_size"])), np.float32)
        self.act(numeric, np.zeros((1, int(self.meta["categorical_size"])), np.int32))
        self.reset()
        self.sampler = sampler

    @property
    def decoding(self) -> dict:
        return describe_decoding(self.sampler, float(self.meta.get("keep_bias", 0.0)))

    def reset(self) -> None:
        self._reset()

    def act(self, numeric_1xF, categorical_1xC) -> dict:
        tf = self._tf
        try:
            out = self._serve(numeric=tf.constant(numeric_1xF, tf.float32), categorical=tf.constant(categorical_1xC, tf.int32))
        except tf.errors.InvalidArgumentError as err:
            # The model's own input check (NaN or inf in the frame); its held state is unchanged.
            lines = [line.strip() for line in err.message.splitlines() if line.strip()]
            reason = next((line for line in lines if "NaN or inf" in line), lines[-1] if lines else type(err).__name__)
            raise ValueError(f"{self.source}: serving_default rejected the frame ({reason[:200]})") from None
        pad = {k: v.numpy() for k, v in out.items()}
        if self.sampler is not None:
            pad.update(self.sampler.pad(logits_from_probabilities(pad)))
        return pad


def _saved_model_version(path: Path) -> Path | None:
    """`path` itself if it is a SavedModel version folder (it holds
    `saved_model.pb` or `keras_lstm.json`: a damaged one is reported, not
    skipped), else its highest version folder holding a SavedModel, else None."""
    if path.is_file() and path.name in ("saved_model.pb", METADATA_FILE):
        return path.parent
    if not path.is_dir():
        return None
    if (path / "saved_model.pb").exists() or (path / METADATA_FILE).exists():
        return path
    versions = sorted((int(p.name), p) for p in path.iterdir() if p.name.isdigit() and p.is_dir())
    with_model = [p for _, p in versions if (p / "saved_model.pb").exists()]
    if with_model:
        return with_model[-1]
    if (path / MODEL_FILE).exists():
        return None  # a run folder
    if versions:
        raise FileNotFoundError(
            f"{path}: no SavedModel in its version folders {[v for v, _ in versions]} (no saved_model.pb); export the model again"
        )
    names = sorted(p.name for p in path.iterdir() if p.is_dir() and _saved_model_names(p))
    if names:
        raise FileNotFoundError(f"{path}: a SavedModel base folder (models: {', '.join(names)}); give --model {path / names[0]}")
    return None


def _saved_model_names(folder: Path) -> bool:
    """Whether `folder` is a model name folder: a version folder with a SavedModel."""
    try:
        return any(p.name.isdigit() and (p / "saved_model.pb").exists() for p in folder.iterdir())
    except OSError:  # unreadable: not what the user meant
        return False


def locate_model(model: str | Path, keep_bias: float = 0.0) -> tuple[Path, Path | None]:
    """`(path, SavedModel version folder or None)` for `--model`: a run
    folder (or its `.keras` file), a SavedModel version folder, or a name
    folder (its highest version); one-line errors for anything else, and for
    a keep bias asked of a SavedModel (it keeps the one it was exported with)."""
    path = Path(model).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such model (a run folder from keras-lstm train or a SavedModel from keras-lstm export)")
    saved = _saved_model_version(path)
    if saved is not None:
        if keep_bias:
            raise ValueError(f"{saved}: a SavedModel keeps the keep bias it was exported with; give --keep-bias to keras-lstm export")
        return path, saved
    if path.is_file() and path.suffix != ".keras":
        raise ValueError(
            f"{path}: not a model (--model takes a run folder from keras-lstm train, its model.keras, "
            "or a SavedModel folder from keras-lstm export)"
        )
    return path, None


def load_agent(model: str | Path, sampler: ControllerSampler | None = None, keep_bias: float = 0.0):
    """An agent for a run folder (or its `.keras` file), a SavedModel version
    folder, or a SavedModel name folder (its highest version); acting by
    argmax, or by sampling with `sampler` (see `make_sampler`); a run's
    heads with `keep_bias` folded in (`keras_lstm.model.heads.fold_keep_bias`;
    a SavedModel decides with the bias it was exported with)."""
    path, saved = locate_model(model, keep_bias)
    if saved is not None:
        return SavedModelAgent(saved, sampler)
    policy, run_info = load_run(path)
    agent = StepperAgent(policy, int(run_info.get("config", {}).get("delay", 0)), sampler, keep_bias)
    agent.source = str(path)
    return agent
