"""The configuration by concern: one set of names, checks in one place, and
the command-line options made from it."""

import dataclasses

import pytest
import typer

from keras_lstm.cli.main import app
from keras_lstm.config import CONCERNS, FIELD_CONCERN, TrainConfig, cli_fields


def _command(*path: str):
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return command


def test_field_names_are_unique_across_concerns():
    names = [f.name for concern in CONCERNS.values() for f in dataclasses.fields(concern)]
    assert len(names) == len(set(names)) == len(FIELD_CONCERN)


def test_flat_round_trip_and_routing():
    config = TrainConfig.from_flat(replays="/r", hidden_size=32, stride=8, epochs=5, seed=7, matmul_dtype="bfloat16")
    assert (config.model.hidden_size, config.data.stride, config.optim.epochs, config.run.seed) == (32, 8, 5, 7)
    assert TrainConfig.from_flat(**config.flat()) == config
    assert config.replace(epochs=1).optim.epochs == 1 and config.optim.epochs == 5
    with pytest.raises(ValueError, match="unknown training option.*hiden_size"):
        TrainConfig.from_flat(hiden_size=3)


def test_a_run_json_config_of_the_seed_loads():
    # The flat form run.json has always held (keys of the seed's TrainConfig).
    seed_keys = {
        "replays": "g", "output": "runs/latest", "backbone": "lstm", "embed_size": 128, "hidden_size": 256,
        "num_layers": 2, "dropout": 0.1, "window_size": 60, "truncate_bptt": 15, "stride": 4, "delay": 0,
        "epochs": 3, "batch_size": 64, "learning_rate": 1e-3, "val_fraction": 0.15, "seed": 0,
        "max_replays": None, "max_frames": None, "backup_every_steps": 200, "matmul_dtype": None,
        "data_dir": None, "strategy": "default", "carried_state": False, "carried_streams": 32,
        "carried_piece_frames": 3600,
    }
    loaded = TrainConfig.from_flat(**seed_keys).flat()
    # Options added since take their defaults; check_resumable names them if
    # an unfinished run of the seed is resumed.
    assert {k: loaded[k] for k in seed_keys} == seed_keys


@pytest.mark.parametrize(
    "options, message",
    [
        ({"hidden_size": 0}, "hidden-size must be positive, got 0"),
        ({"num_layers": -1}, "num-layers must be positive"),
        ({"learning_rate": float("nan")}, "learning-rate must be a finite positive number"),
        ({"learning_rate": float("inf")}, "learning-rate must be a finite positive number"),
        ({"dropout": 1.0}, "dropout must be in \\[0, 1\\)"),
        ({"val_fraction": -0.1}, "val-fraction must be in \\[0, 1\\)"),
        ({"delay": -1}, "delay must be >= 0"),
        ({"backbone": "rnn"}, "backbone must be one of"),
        ({"strategy": "tpu"}, "strategy must be one of"),
        ({"matmul_dtype": "float16"}, "matmul-dtype must be float32 or bfloat16"),
        ({"mixed_precision": "int8"}, "mixed-precision must be off, bfloat16 or float16"),
        ({"mixed_precision": "float16", "matmul_dtype": "bfloat16"}, "give --mixed-precision or --matmul-dtype bfloat16, not both"),
        ({"seed": -1}, "--seed must be between 0 and"),
        ({"split_seed": -1}, "--split-seed must be between 0 and"),
        ({"max_frames": 0}, "max-frames must be positive"),
        # bounded by what their use holds: float32, int32 dimensions and frames, int64 counts
        ({"learning_rate": 1e39}, "learning-rate must be between 1.18e-38 and 3.4e\\+38 \\(float32\\), got 1e\\+39"),
        ({"learning_rate": 1e-39}, "learning-rate must be between"),
        ({"window_size": 2**31}, "window-size must be at most 2,147,483,647 \\(a tensor dimension\\)"),
        ({"batch_size": 2**31}, "batch-size must be at most 2,147,483,647"),
        ({"min_frames": 2**31}, "min-frames must be at most 2,147,483,647 \\(frames of a game\\)"),
        ({"max_frames": 2**63}, "max-frames must be at most 9,223,372,036,854,775,807, got"),
        ({"epochs": 2**63}, "epochs must be at most 9,223,372,036,854,775,807"),
        ({"val_max_frames": 60}, "val-max-frames \\(60\\) must hold one window: at least 61 frames with --window-size 60 and --delay 0"),
        ({"truncate_bptt": 61}, "truncate-bptt \\(61\\) must not exceed window-size \\(60\\)"),
        ({"carried_state": True, "truncate_bptt": 10}, "--carried-state .* takes no"),
        ({"strategy": "multi-worker"}, "multi-worker needs --data-dir"),
    ],
)
def test_validate_names_the_bad_option(options, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_flat(replays="/r", **options).validate()


def test_defaults_are_valid():
    TrainConfig.from_flat(replays="/r").validate()


def test_train_options_are_the_config_fields():
    params = {p.name: p for p in _command("train").params}
    for concern in CONCERNS.values():
        for field, _ in cli_fields(concern):
            param = params[field.name]
            assert f"--{field.name.replace('_', '-')}" in param.opts
            # The one default the command sets itself: `train` trains the corpus recipe, the library windows.
            assert param.default == (True if field.name == "carried_state" else field.default), field.name
            assert param.help == field.metadata["help"]


def test_bench_options_come_from_the_same_fields():
    speed = {p.name: p for p in _command("bench", "train-speed").params}
    assert speed["hidden_size"].help == TrainConfig().model.__dataclass_fields__["hidden_size"].metadata["help"]
    assert speed["truncate_bptt"].default == 15  # the benchmark's own default K
    inference = {p.name: p for p in _command("bench", "inference").params}
    assert inference["window_size"].default == TrainConfig().data.window_size


def test_loss_frames_default_is_the_last_three_quarters_of_the_window():
    assert TrainConfig.from_flat(replays="/r").loss_frames == 45
    assert TrainConfig.from_flat(replays="/r", window_size=10).loss_frames == 8
    assert TrainConfig.from_flat(replays="/r", window_size=1).loss_frames == 1
    assert TrainConfig.from_flat(replays="/r", loss_frames=1).loss_frames == 1
    with pytest.raises(ValueError, match="loss-frames \\(61\\) must not exceed window-size \\(60\\)"):
        TrainConfig.from_flat(replays="/r", loss_frames=61).validate()


def test_the_command_without_tensorflow_says_which_extra_to_install_in_one_line():
    import subprocess
    import sys

    code = (
        "import importlib.util as u, sys\n"
        "real = u.find_spec\n"
        "u.find_spec = lambda name, *a: None if name == 'tensorflow' else real(name, *a)\n"
        "sys.argv = ['keras-lstm', '--help']\n"
        "from keras_lstm.cli.main import app\n"
        "app()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == ("error: keras-lstm needs TensorFlow, which comes with an extra: pip install 'keras-lstm[cpu]' "
                                   "(or 'keras-lstm[gpu]' for the CUDA build; never both)")


def test_the_memory_training_takes_is_checked_before_anything_is_built(monkeypatch):
    from keras_lstm.model.backbone import recurrent_param_count
    from keras_lstm.training import inputs
    from keras_lstm.training.inputs import check_training_fits_memory, training_memory_bytes

    monkeypatch.setattr(inputs, "available_memory_bytes", lambda: 8e9)
    check_training_fits_memory(TrainConfig.from_flat(replays="/r"))  # the defaults: a few MB
    big = TrainConfig.from_flat(replays="/r", hidden_size=100_000)
    params = recurrent_param_count("lstm", 128, 100_000) + recurrent_param_count("lstm", 100_000, 100_000)
    assert training_memory_bytes(big) >= 16 * params  # weights, gradients and Adam's two slots, in float32
    with pytest.raises(ValueError, match=r"the model does not fit in memory: --hidden-size 100000, .* need at least 1,9\d\d.\d GB to train \(8.0 GB available\)"):
        check_training_fits_memory(big)
    with pytest.raises(ValueError, match="--carried-streams 100000 and --window-size 6000 need"):  # activations alone
        check_training_fits_memory(TrainConfig.from_flat(replays="/r", carried_state=True, carried_streams=100_000, window_size=6000))
    monkeypatch.setattr(inputs, "available_memory_bytes", lambda: None)  # unknown: not refused for it
    check_training_fits_memory(big)


def test_each_recipe_has_its_defaults():
    windows, segments = TrainConfig.from_flat(replays="/r"), TrainConfig.from_flat(replays="/r", carried_state=True)
    assert (windows.epochs, segments.epochs) == (3, 5)
    assert (windows.val_max_frames, segments.val_max_frames) == (200_000, None)  # one pass scores every validation frame
    assert TrainConfig.from_flat(replays="/r", carried_state=True, epochs=2, val_max_frames=9_000).epochs == 2
    assert (windows.learning_rate, segments.learning_rate) == (1e-3, 2e-3)  # the seed's, and the corpus recipe's (docs/QUALITY.md)
    assert TrainConfig.from_flat(replays="/r", carried_state=True, learning_rate=5e-4).learning_rate == 5e-4
    assert windows.flat()["learning_rate"] is None  # run.json records what was asked: a resumed run keeps the recipe's
    # The window is resolved once (evaluate and export read it from run.json): 60 for windows, 30 a segment.
    assert (windows.data.window_size, segments.data.window_size) == (60, 30)
    assert segments.flat()["window_size"] == 30 and TrainConfig.from_flat(**segments.flat()).data.window_size == 30
    assert TrainConfig.from_flat(replays="/r", carried_state=True, window_size=60).data.window_size == 60


@pytest.mark.parametrize(
    "options, message",
    [
        ({"split_by": "team"}, "split-by must be one of"),
        ({"train_games": 0}, "train-games must be positive"),
        ({"data_dir": "/d", "split_by": "player"}, "--split-by player and --train-games apply to --replays"),
    ],
)
def test_the_corpus_options_are_checked(options, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_flat(**{"replays": "/r", **options}).validate()
