"""The options of a training run, grouped by concern, validated in one place.

    ModelConfig     what the policy is (backbone, sizes, dropout, matmul precision, what the heads and encoder see)
    DataConfig      what it learns from (replays or a prepared dataset, windows, split, filters, augmentation)
    OptimConfig     how it learns (epochs and their length, batch, learning rate and schedule, truncation, loss frames, carried state)
    RunConfig       where and how the run goes (run folder, seed, backups, distribution)
    TrainConfig     the four together, plus the checks that span concerns

Each field declares its default, its help text and its check once
(`option(...)`). The `keras-lstm train` options are made from these fields
(`keras_lstm.cli.options`), and the benchmarks build their configurations from
these classes, so a new option is written here and nowhere else.

Field names are unique across the concerns, which lets a run keep its
configuration as one flat dict (`TrainConfig.flat`, `TrainConfig.from_flat`):
that is the form `run.json` has always held.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import typing
from typing import Any, Callable

# This module imports nothing heavy: the CLI builds its options from it
# before TensorFlow loads. The allowed values live here; the modules that use
# them import them from here.
CELL_TYPES = ("lstm", "gru")
STRATEGIES = ("default", "mirrored", "multi-worker")  # keras_lstm.training.distribute
MAX_SEED = 2**32 - 1  # numpy and TensorFlow take seeds in [0, 2**32 - 1]
DEFAULT_PIECE_FRAMES = 3600  # keras_lstm.training.carried_training: frames per piece a game is cut into
LR_SCHEDULES = ("constant", "cosine")
AUGMENTATIONS = ("mirror", "swap-buttons")  # keras_lstm.data.augment
DEFAULT_AUGMENT = "mirror,swap-buttons"
DEFAULT_VAL_MAX_FRAMES = 200_000  # ~55 minutes of play: ~50 MB of validation arrays
SPLITS = ("game", "player")  # keras_lstm.data.split
# The two recipes (`TrainConfig.carried_state`): windows from the zero state
# (--temporal, the seed's), and segments of whole games with the state carried
# (the corpus recipe, `keras-lstm train`'s default; docs/QUALITY.md measured it).
WINDOW_FRAMES = 60
SEGMENT_FRAMES = 30  # twice the updates of 60 at the same frames an epoch (docs/QUALITY.md)
WINDOW_EPOCHS = 3
SEGMENT_EPOCHS = 5
WINDOW_LEARNING_RATE = 1e-3
SEGMENT_LEARNING_RATE = 2e-3
SEGMENT_STREAMS = 64
# What the numbers the options give are held in, so bounded by:
MAX_DIMENSION = 2**31 - 1  # a tensor's dimensions (sizes, batches, windows) and a replay's frame numbers: int32
MAX_COUNT = 2**63 - 1  # counts of frames, replays, steps and epochs: int64 (numpy, Keras' step counter)
FLOAT32_MAX = 3.4028234663852886e38  # numpy.finfo(numpy.float32).max
FLOAT32_TINY = 1.1754943508222875e-38  # its smallest normal number

Check = Callable[[str, Any], None]


def option(default: Any, help: str, check: Check | None = None, cli: bool = True) -> Any:
    """A config field: its default, its `--help` text, the check its value must
    pass (`check(option_name, value)` raises ValueError), and whether the
    CLI offers it."""
    return dataclasses.field(default=default, metadata={"help": help, "check": check, "cli": cli})


def option_name(field_name: str) -> str:
    return field_name.replace("_", "-")


# --- checks (each raises ValueError naming the option) -------------------------


def positive(name: str, value, limit: int = MAX_COUNT) -> None:
    """A number > 0 (finite); a whole number at most `limit` (a count: int64)."""
    if value is None or isinstance(value, bool) or not value > 0 or (isinstance(value, float) and not math.isfinite(value)):
        raise ValueError(f"{name} must be a finite positive number, got {value}" if isinstance(value, float) else f"{name} must be positive, got {value}")
    if isinstance(value, numbers.Integral) and value > limit:
        raise ValueError(f"{name} must be at most {limit:,}{' (a tensor dimension)' if limit == MAX_DIMENSION else ''}, got {value:,}")


def positive_or_none(name: str, value) -> None:
    if value is not None:
        positive(name, value)


def dimension(name: str, value) -> None:
    """A size or a number of frames of a game: positive, at most int32's largest."""
    positive(name, value, MAX_DIMENSION)


def dimension_or_none(name: str, value) -> None:
    if value is not None:
        dimension(name, value)


def non_negative(name: str, value) -> None:
    """Frames of a game (a delay, a minimum length): >= 0, at most int32's largest."""
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    if value > MAX_DIMENSION:
        raise ValueError(f"{name} must be at most {MAX_DIMENSION:,} (frames of a game), got {value:,}")


def float32_positive_or_none(name: str, value) -> None:
    if value is not None:
        float32_positive(name, value)


def float32_positive(name: str, value) -> None:
    """A number > 0 that float32 holds (TensorFlow computes with it in float32):
    at least its smallest normal number, under which it would round to 0, and
    at most its largest, over which it would be inf."""
    positive(name, value)
    if not FLOAT32_TINY <= value <= FLOAT32_MAX:
        raise ValueError(f"{name} must be between {FLOAT32_TINY:.3g} and {FLOAT32_MAX:.3g} (float32), got {value}")


def fraction(name: str, value) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")


def one_of(*choices) -> Check:
    def check(name: str, value) -> None:
        if value not in choices:
            raise ValueError(f"{name} must be one of {choices}, got {value!r}")

    return check


def check_seed(seed: int, option: str = "seed") -> None:
    """ValueError naming `--<option>` unless `seed` is an integer numpy and TensorFlow take."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"--{option} must be between 0 and {MAX_SEED}, got {seed}")


def valid_seed(name: str, value) -> None:
    check_seed(value)


def valid_seed_or_none(name: str, value) -> None:
    if value is not None:
        check_seed(value, name)


def augmentations(name: str, value: str | None) -> tuple[str, ...]:
    """`--augment`'s value (comma-separated names, or "none") as a tuple;
    ValueError naming the option for an unknown name."""
    if value is None or value.strip().lower() in ("", "none"):
        return ()
    names = tuple(n.strip() for n in value.split(","))
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"{name} must list some of {', '.join(AUGMENTATIONS)} (comma-separated) or be none; unknown: {', '.join(unknown)}")
    return names


def matmul_precision(name: str, value) -> None:
    if value not in (None, "float32", "bfloat16"):
        raise ValueError(f"{name} must be float32 or bfloat16, got {value!r}")


def mixed_precision_dtype(name: str, value) -> None:
    if value not in (None, "bfloat16", "float16"):
        raise ValueError(f"{name} must be off, bfloat16 or float16, got {value!r}")


class _Concern:
    """Validation shared by the four concerns: every field's own check."""

    def validate(self) -> None:
        for field in dataclasses.fields(self):
            check = field.metadata.get("check")
            if check is not None:
                check(option_name(field.name), getattr(self, field.name))


# --- the concerns -----------------------------------------------------------------


@dataclasses.dataclass
class ModelConfig(_Concern):
    backbone: str = option("lstm", "Recurrent backbone: lstm or gru.", one_of(*CELL_TYPES))
    embed_size: int = option(128, "Width of each encoded frame fed to the backbone.", dimension)
    hidden_size: int = option(256, "Units per recurrent layer.", dimension)
    num_layers: int = option(2, "Stacked recurrent layers.", dimension)
    dropout: float = option(0.1, "Dropout after each recurrent layer.", fraction)
    # None is float32; "bfloat16": faster recurrent matmuls on CPUs with AVX512_BF16.
    matmul_dtype: str | None = option(
        None,
        "Recurrent matmuls in float32, or bfloat16 (faster on CPUs with AVX512_BF16; see docs/TRAINING_SPEED.md).",
        matmul_precision,
    )
    recurrent_impl: str = option(
        "auto",
        "How training runs the recurrence: fused (our hand-written backward pass, fastest on CPU), keras (the Keras layers: "
        "cuDNN on a GPU), or auto (keras when TensorFlow sees a GPU, else fused). Same math; docs/GPU.md.",
        one_of("auto", "keras", "fused"),
    )
    mixed_precision: str | None = option(
        None,
        "Train the recurrence in bfloat16 or float16 (Keras' mixed_bfloat16 / mixed_float16 policies; float16 with loss "
        "scaling); weights, state, heads and loss stay float32, evaluation and export too. For GPUs: docs/GPU.md. Default off.",
        mixed_precision_dtype,
    )
    previous_input_heads: bool = option(
        True, "The controller heads also see the previous input as classes (docs/QUALITY.md); --no-previous-input-heads is the seed's policy."
    )
    relative_features: bool = option(
        False, "The frame encoder also sees where the opponent is from the player (dx, dy, distance) and who faces whom (docs/QUALITY.md)."
    )

    def policy_args(self) -> dict:
        """The `keras_lstm.model.policy.build_policy` arguments."""
        return dataclasses.asdict(self)


@dataclasses.dataclass
class DataConfig(_Concern):
    replays: str = option("", "Folder of .slp replays (searched recursively).", cli=False)
    data_dir: str | None = option(None, "A dataset made by `keras-lstm prepare`, instead of replays.", cli=False)
    window_size: int | None = option(
        None, f"Frames per training window (default: {WINDOW_FRAMES}), or per step for segments (default: {SEGMENT_FRAMES}; docs/QUALITY.md).",
        dimension_or_none,
    )
    stride: int = option(4, "Frames between consecutive window starts.", dimension)
    delay: int = option(0, "Frames of reaction delay: the game state seen is from t-1-delay.", non_negative)
    val_fraction: float = option(0.15, "Fraction of replay files held out for validation.", fraction)
    split_by: str = option(
        "game",
        "Hold out whole games (game), or whole players (player: by connect code or tag, else the game), so that no "
        "validation player is ever trained on (keras_lstm/data/split.py).",
        one_of(*SPLITS),
    )
    train_games: int | None = option(
        None, "Train on this many of the training games (a seeded sample taken after the split: the validation games stay the same; for learning curves).",
        positive_or_none,
    )
    hide_game_state: bool = option(
        False, "Hide the game state: the policy sees only its own previous inputs (an ablation: what the policy takes from the game).",
    )
    split_seed: int | None = option(
        None, "Seed of the training/validation split (a hash of each file's name, or with --split-by player of each player's key); default: --seed. Fix it to compare "
        "training seeds on the same validation games.", valid_seed_or_none,
    )
    max_replays: int | None = option(None, "Use at most this many replay files (quick runs).", positive_or_none)
    max_frames: int | None = option(None, "Load at most this many frames (quick runs).", positive_or_none)
    # Which games and players to learn from (`keras_lstm.data.filters`); from
    # replays only: a prepared dataset was filtered by `prepare`.
    min_frames: int = option(0, "Leave out games shorter than this many playable frames (60 a second).", non_negative)
    min_slippi_version: str | None = option(None, "Leave out games recorded by an older Slippi, e.g. 3.0.0.")
    humans_only: bool = option(False, "Leave out games with a CPU player (by default the human in them is still imitated).")
    stages: str | None = option(None, "Only games on these stages (comma-separated names or ids, e.g. battlefield,fd,ys,dl,ps,fod).")
    characters: str | None = option(None, "Only imitate players of these characters (comma-separated names or ids, e.g. fox,falco).")
    opponents: str | None = option(None, "Only imitate players facing these characters (comma-separated names or ids).")
    val_max_frames: int | None = option(
        None,
        f"Validate on at most this many frames (whole validation games in order, the last cut to fit), so validation memory and time stay flat on large data "
        f"(default: {DEFAULT_VAL_MAX_FRAMES:,} for windows; every validation frame for segments, evaluated in one pass).",
        positive_or_none,
    )
    augment: str | None = option(
        None,
        f"Training windows (or, for segments, whole pieces of games) also drawn mirrored and with X/Y and L/R swapped, each at random "
        f"(comma-separated from {', '.join(AUGMENTATIONS)}, or none; default: {DEFAULT_AUGMENT} for windows, none for segments; docs/QUALITY.md).",
        augmentations,
    )


@dataclasses.dataclass
class OptimConfig(_Concern):
    epochs: int | None = option(None, f"Training epochs (default: {WINDOW_EPOCHS} for windows, {SEGMENT_EPOCHS} for segments).", positive_or_none)
    steps_per_epoch: int | None = option(
        None, "Batches per epoch (default: one pass over the training windows); for large data, epochs of a chosen length.", positive_or_none
    )
    batch_size: int = option(64, "Windows per batch.", dimension)
    learning_rate: float | None = option(
        None,
        f"Adam learning rate, the peak with a schedule (default: {WINDOW_LEARNING_RATE:g} for windows, {SEGMENT_LEARNING_RATE:g} for segments; docs/QUALITY.md).",
        float32_positive_or_none,
    )
    lr_schedule: str = option(
        "constant", "Learning rate over the run: constant, or cosine (decays to 0 by the last step).", one_of(*LR_SCHEDULES)
    )
    truncate_bptt: int | None = option(None, "Backpropagate through the last K frames only (default: the whole window).", dimension_or_none)
    loss_frames: int | None = option(
        None,
        "The loss on the last N frames of each window, the frames before being burn-in (1: the last frame only, the seed's; default: the last 3/4 of the window).",
        dimension_or_none,
    )
    # Carried-state training (`keras_lstm.training.carried_training`): each of
    # `carried_streams` rows walks through whole games, `window_size` frames a
    # step, the state carried from step to step and the loss on every frame.
    carried_state: bool = option(
        False, "Train as deployed (the corpus recipe): rows walk through whole games --window-size frames a step, the state carried, the loss on "
        "every frame. `keras-lstm train`'s default; --temporal (or --no-carried-state) trains on windows, the seed's recipe.",
    )
    carried_streams: int = option(SEGMENT_STREAMS, "With --carried-state: game rows per batch.", dimension)
    carried_piece_frames: int = option(DEFAULT_PIECE_FRAMES, "Frames per piece a carried-state game is cut into.", dimension, cli=False)


@dataclasses.dataclass
class RunConfig(_Concern):
    output: str = option("runs/latest", "Run folder: model, checkpoints, logs, metrics. Re-using it resumes a killed run.", cli=False)
    seed: int = option(0, "Seed for the split (unless --split-seed), initialisation and shuffling.", valid_seed)
    backup_every_steps: int = option(200, "Batches between backups a killed run resumes from (also at every epoch's end).", positive)
    strategy: str = option("default", "Distribution: default, mirrored (local GPUs) or multi-worker (TF_CONFIG; see docs/DATA.md).", one_of(*STRATEGIES))


CONCERNS = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig, "run": RunConfig}


@dataclasses.dataclass
class TrainConfig:
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)

    def __post_init__(self):
        # Resolved once, not by a property as the other recipe defaults: run.json,
        # evaluate, export and the benchmarks all read the window from here.
        if self.data.window_size is None:
            frames = SEGMENT_FRAMES if self.optim.carried_state else WINDOW_FRAMES
            self.data = dataclasses.replace(self.data, window_size=frames)

    def validate(self) -> None:
        """Raise ValueError naming the first bad option."""
        for concern in CONCERNS:
            getattr(self, concern).validate()
        data, optim, run = self.data, self.optim, self.run
        if optim.truncate_bptt is not None and optim.truncate_bptt > data.window_size:
            raise ValueError(f"truncate-bptt ({optim.truncate_bptt}) must not exceed window-size ({data.window_size})")
        if optim.loss_frames is not None and optim.loss_frames > data.window_size:
            raise ValueError(f"loss-frames ({optim.loss_frames}) must not exceed window-size ({data.window_size})")
        windows_only = (" (add --temporal to train on windows, the seed's recipe)")
        if optim.carried_state and (optim.truncate_bptt is not None or run.strategy != "default"):
            raise ValueError(
                "--carried-state trains on one device, on segments of --window-size frames with the state carried "
                "(truncated at each segment): it takes no --truncate-bptt or --strategy" + windows_only
            )
        if optim.carried_state and optim.steps_per_epoch is not None:
            raise ValueError("--steps-per-epoch applies to window training; --carried-state walks each game once an epoch" + windows_only)
        if data.data_dir and (data.split_by != "game" or data.train_games is not None):
            raise ValueError("--split-by player and --train-games apply to --replays (a prepared dataset is split by game when prepared)")
        if self.model.recurrent_impl == "keras" and self.model.matmul_dtype == "bfloat16":
            raise ValueError("matmul-dtype bfloat16 applies to --recurrent-impl fused (for the Keras layers: --mixed-precision bfloat16)")
        if self.model.mixed_precision and self.model.matmul_dtype == "bfloat16":
            raise ValueError("give --mixed-precision or --matmul-dtype bfloat16, not both (mixed precision already rounds the matmuls)")
        replay_filter = self.replay_filter  # a bad filter option: ValueError naming it
        if data.data_dir and replay_filter.active:
            raise ValueError("the filters (--min-frames, --stages, --characters, ...) apply when reading replays: pass them to `keras-lstm prepare`")
        if run.strategy == "multi-worker" and not data.data_dir:
            raise ValueError("--strategy multi-worker needs --data-dir: each worker streams its own shard of a prepared dataset")
        if self.val_max_frames is not None and self.val_max_frames < self.window_frames:  # else no validation window, whatever the games
            raise ValueError(
                f"val-max-frames ({data.val_max_frames}) must hold one window: at least {self.window_frames} frames "
                f"with --window-size {data.window_size} and --delay {data.delay}"
            )

    @property
    def epochs(self) -> int:
        """`optim.epochs`, or the recipe's default."""
        if self.optim.epochs is not None:
            return self.optim.epochs
        return SEGMENT_EPOCHS if self.optim.carried_state else WINDOW_EPOCHS

    @property
    def learning_rate(self) -> float:
        """`optim.learning_rate`, or the recipe's default (segments were
        measured short of updates at the windows' rate: docs/QUALITY.md)."""
        if self.optim.learning_rate is not None:
            return self.optim.learning_rate
        return SEGMENT_LEARNING_RATE if self.optim.carried_state else WINDOW_LEARNING_RATE

    @property
    def val_max_frames(self) -> int | None:
        """`data.val_max_frames`, or the recipe's default: windows cap the
        validation frames (each is a window in memory), segments evaluate
        every validation frame in one pass (None)."""
        if self.data.val_max_frames is not None:
            return self.data.val_max_frames
        return None if self.optim.carried_state else DEFAULT_VAL_MAX_FRAMES

    @property
    def window_frames(self) -> int:
        """The frames a game needs to give one window: the `1 + delay` first
        ones give no row (`keras_lstm.data.features.align`), then a window of
        at least 2 rows (the repeat baseline reads the row before the last;
        `keras_lstm.data.windows.make_windows`)."""
        return 1 + self.data.delay + max(self.data.window_size, 2)

    @property
    def loss_frames(self) -> int:
        """The frames of each window that carry the loss: `optim.loss_frames`,
        or by default the last 3/4 of the window (a quarter of burn-in, so
        that no loss sits on a state built from a few frames)."""
        if self.optim.loss_frames is not None:
            return self.optim.loss_frames
        window = self.data.window_size
        return max(1, window - window // 4)

    @property
    def replay_filter(self):
        """The `keras_lstm.data.filters.ReplayFilter` of the data options."""
        from keras_lstm.data.filters import ReplayFilter  # not at import: this module stays light

        d = self.data
        return ReplayFilter.from_options(d.min_frames, d.min_slippi_version, d.humans_only, d.stages, d.characters, d.opponents)

    @property
    def split_seed(self) -> int:
        """The seed of the split into training and validation files:
        `data.split_seed`, or by default `run.seed`."""
        return self.run.seed if self.data.split_seed is None else self.data.split_seed

    @property
    def augmentations(self) -> tuple[str, ...]:
        """The augmentations of the training windows or segments:
        `data.augment`, or by default `DEFAULT_AUGMENT` for windows and none
        for segments (the corpus recipe was measured without)."""
        if self.data.augment is not None:
            return augmentations("augment", self.data.augment)
        return () if self.optim.carried_state else augmentations("augment", DEFAULT_AUGMENT)

    def flat(self) -> dict:
        """Every option by its field name, the concerns merged (run.json's form)."""
        return {k: v for concern in CONCERNS for k, v in dataclasses.asdict(getattr(self, concern)).items()}

    @classmethod
    def from_flat(cls, **options) -> "TrainConfig":
        """A TrainConfig from options named as the fields (`hidden_size=...`),
        each sent to its concern; the rest keep their defaults. Raises
        ValueError for a name no concern has."""
        unknown = sorted(set(options) - set(FIELD_CONCERN))
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(unknown)}")
        parts = {concern: {} for concern in CONCERNS}
        for name, value in options.items():
            parts[FIELD_CONCERN[name]][name] = value
        return cls(**{concern: CONCERNS[concern](**values) for concern, values in parts.items()})

    def replace(self, **options) -> "TrainConfig":
        """A copy with some options (field names, any concern) changed."""
        return TrainConfig.from_flat(**{**self.flat(), **options})


def flat_settings(settings) -> dict:
    """A dataclass of settings that holds a `training: TrainConfig` (the
    benchmarks' configs) as results files record it: the training options
    flat, then its own fields, which win where a name is shared."""
    own = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings) if f.name != "training"}
    return {**settings.training.flat(), **own}


FIELD_CONCERN = {f.name: concern for concern, cls in CONCERNS.items() for f in dataclasses.fields(cls)}


def cli_fields(concern: type) -> list[tuple[dataclasses.Field, Any]]:
    """`(field, resolved type)` of the fields a concern offers on the command line."""
    hints = typing.get_type_hints(concern)
    return [(f, hints[f.name]) for f in dataclasses.fields(concern) if f.metadata.get("cli", True)]
