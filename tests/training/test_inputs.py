"""What training takes from its data (`keras_lstm.training.inputs`): a pass
over a prepared split that counts its windows and fits the baselines as the
in-memory path does, the same `TrainInputs` from a prepared dataset as from
its replay folder, and training from `--data-dir` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from typer.testing import CliRunner

from keras_lstm.cli.main import app
from keras_lstm.data import controller, features, pipeline
from keras_lstm.evaluation import baselines
from keras_lstm.training import inputs
from keras_lstm.training.train import TrainConfig, train

from conftest import PREPARED_VAL_FRACTION, reference_windows

tfds.disable_progress_bar()

TINY = dict(embed_size=8, hidden_size=8, num_layers=1, window_size=10, stride=40, batch_size=32, epochs=1, val_fraction=PREPARED_VAL_FRACTION)


def test_scan_gives_the_window_count_and_baselines_of_the_in_memory_path(prepared):
    folder, _, builder = prepared
    for W, stride, delay in ((12, 5, 0), (30, 2, 3)):
        ref = reference_windows(folder, builder, "train", W, stride, delay)
        scan = inputs.scan_split(builder, "train", W, stride, delay)
        assert scan.windows == len(ref)
        assert scan.trajectories_too_short == ref.trajectories_too_short
        assert scan.stats == baselines.fit_baselines(ref.predicted_targets(), ref.previous_targets())


def test_scan_counts_the_windows_of_each_shard(prepared):
    _, _, builder = prepared
    scan = inputs.scan_split(builder, "train", 8, 13, 0, fit_stats=False)
    assert scan.stats is None
    parts = [
        int(pipeline.window_dataset(builder, "train", 8, 13, shard_index=k, num_shards=2).reduce(0, lambda n, _: n + 1))
        for k in range(2)
    ]
    assert scan.shard_windows(2) == parts and sum(parts) == scan.windows


def test_prepared_inputs_equal_replay_inputs(prepared):
    folder, data_dir, _ = prepared
    from_replays = inputs.replay_inputs(TrainConfig.from_flat(replays=str(folder), **TINY))
    from_dataset = inputs.prepared_inputs(TrainConfig.from_flat(replays="", data_dir=str(data_dir), **TINY))
    assert from_dataset.train_windows == from_replays.train_windows
    assert from_dataset.steps_per_epoch == from_replays.train_windows // TINY["batch_size"]
    assert from_dataset.stats == from_replays.stats
    assert from_dataset.train_files == from_replays.train_files
    assert from_dataset.val_files == from_replays.val_files
    assert from_dataset.train_counts == from_replays.train_counts
    assert from_dataset.counts == from_replays.counts
    assert [tuple(s) for s in from_dataset.skipped] == [tuple(s) for s in from_replays.skipped]
    a, b = from_dataset.val, from_replays.val
    np.testing.assert_array_equal(a.ends, b.ends)
    np.testing.assert_array_equal(a.numeric, b.numeric)
    np.testing.assert_array_equal(a.categorical, b.categorical)
    for h in controller.HEADS:
        np.testing.assert_array_equal(a.targets[h], b.targets[h])
    x, y = next(iter(from_dataset.make_train_dataset()))
    assert x["numeric"].shape == (TINY["batch_size"], TINY["window_size"], features.NUMERIC_SIZE)
    assert y["buttons"].dtype == tf.float32 and y["main_x"].dtype == tf.int32


def test_data_dir_options_that_need_replays_are_refused(prepared):
    _, data_dir, _ = prepared
    with pytest.raises(ValueError, match="--max-frames"):
        inputs.prepared_inputs(TrainConfig.from_flat(replays="", data_dir=str(data_dir), max_frames=1000, **TINY))
    with pytest.raises(FileNotFoundError, match="--val-fraction 0.5"):
        inputs.prepared_inputs(TrainConfig.from_flat(replays="", data_dir=str(data_dir), **{**TINY, "val_fraction": 0.5}))


@pytest.mark.slow
def test_train_from_data_dir_matches_training_from_the_folder(prepared, tmp_path):
    folder, data_dir, _ = prepared
    runner = CliRunner()
    options = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    result = runner.invoke(app, ["train", "--temporal", "--data-dir", str(data_dir), "--output", str(tmp_path / "ds"), "--json", *options])
    assert result.exit_code == 0, result.output
    from_dataset = json.loads((tmp_path / "ds" / "metrics.json").read_text())
    from_replays = train(TrainConfig.from_flat(replays=str(folder), output=str(tmp_path / "slp"), **TINY), verbose=0)
    for key in ("train_windows", "val_windows", "frames", "trajectories", "frames_loaded", "replays_used", "replays_skipped",
                "baseline_repeat_loss", "baseline_prior_loss", "baseline_repeat_accuracy", "parameters"):
        assert from_dataset[key] == from_replays[key], key
    # Same initial weights, steps and frames; only the order of the windows
    # differs (a stream, not a permutation of an array), so the losses are close.
    assert from_dataset["epochs_run"] == from_replays["epochs_run"] == 1
    assert from_dataset["val_loss"] == pytest.approx(from_replays["val_loss"], rel=0.05)
    run = json.loads((tmp_path / "ds" / "run.json").read_text())
    assert run["train_files"] == json.loads((tmp_path / "slp" / "run.json").read_text())["train_files"]
    # Prepare -> train -> evaluate.
    result = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "ds"), "--replays", str(folder), "--json"])
    assert result.exit_code == 0, result.output


def test_mirrored_strategy_trains(prepared, tmp_path):
    _, data_dir, _ = prepared
    summary = train(TrainConfig.from_flat(replays="", data_dir=str(data_dir), output=str(tmp_path), strategy="mirrored", **TINY), verbose=0)
    assert summary["strategy"] == {"name": "mirrored", "replicas": 1, "chief": True}
    assert summary["val_loss"] is not None and (tmp_path / "model.keras").is_file()


def test_train_command_errors_are_one_line(prepared, tmp_path):
    folder, data_dir, _ = prepared
    runner = CliRunner()
    for args, message in (
        (["--data-dir", str(data_dir), "--replays", str(folder)], "not both"),
        (["--data-dir", str(data_dir), "--max-frames", "100"], "--max-frames"),
        (["--data-dir", str(tmp_path / "none")], "keras-lstm prepare"),
        (["--data-dir", str(data_dir), "--strategy", "multi-worker"], "TF_CONFIG"),
        (["--data-dir", str(data_dir), "--strategy", "tpu"], "strategy must be one of"),
        (["--replays", str(folder), "--strategy", "multi-worker"], "needs --data-dir"),
    ):
        result = runner.invoke(app, ["train", "--temporal", *args, "--output", str(tmp_path / "run")], env={"TF_CONFIG": ""})
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and result.output.strip().count("\n") == 0, result.output


def _ids(batches) -> list[np.ndarray]:
    """Each batch's windows, named by their first numeric row (unique per window here)."""
    return [x["numeric"].numpy()[:, 0, 0].astype(int) for x, _ in batches]


def test_steps_per_epoch_shortens_or_lengthens_an_epoch():
    from keras_lstm.data.windows import make_windows

    n = 103
    arrays = features.PolicyArrays(
        numeric=np.repeat(np.arange(n, dtype=np.float32)[:, None], features.NUMERIC_SIZE, 1),
        categorical=np.zeros((n, features.CATEGORICAL_SIZE), np.int32),
        targets={"buttons": np.zeros((n, 8), np.float32), **{h: np.zeros(n, np.int32) for h in controller.CLASS_HEADS}},
    )
    windows = make_windows([arrays], window_size=4, stride=1)  # 100 windows
    config = TrainConfig.from_flat(batch_size=8, epochs=2, window_size=4, augment="none")
    one_pass = _ids(inputs.training_batches(windows, config, len(windows) // 8))
    longer = _ids(inputs.training_batches(windows, config.replace(steps_per_epoch=30), 30))
    assert len(one_pass) == 2 * 12 and len(longer) == 2 * 30
    # the first pass of each epoch is the default epoch's; the rest goes on with fresh passes
    np.testing.assert_array_equal(np.concatenate(longer[:12]), np.concatenate(one_pass[:12]))
    np.testing.assert_array_equal(np.concatenate(longer[30:42]), np.concatenate(one_pass[12:24]))
    first_epoch = np.concatenate(longer[:30])
    assert set(first_epoch) == set(range(len(windows))) and len(first_epoch) == 240
    shorter = _ids(inputs.training_batches(windows, config.replace(steps_per_epoch=5), 5))
    np.testing.assert_array_equal(np.concatenate(shorter[:5]), np.concatenate(one_pass[:5]))
    assert len(shorter) == 10


def test_steps_per_epoch_sets_the_epoch_for_every_source(prepared):
    folder, data_dir, _ = prepared
    assert inputs.replay_inputs(TrainConfig.from_flat(replays=str(folder), steps_per_epoch=7, **TINY)).steps_per_epoch == 7
    from_dataset = inputs.prepared_inputs(TrainConfig.from_flat(replays="", data_dir=str(data_dir), steps_per_epoch=7, **TINY))
    assert from_dataset.steps_per_epoch == 7
    with pytest.raises(ValueError, match="--steps-per-epoch"):
        TrainConfig.from_flat(replays=str(folder), steps_per_epoch=7, carried_state=True).validate()
    with pytest.raises(ValueError, match="steps-per-epoch"):
        TrainConfig.from_flat(replays=str(folder), steps_per_epoch=0).validate()


def test_a_folder_too_large_for_memory_is_refused_before_reading(monkeypatch, prepared, tmp_path):
    folder, _, _ = prepared
    monkeypatch.setattr(inputs, "available_memory_bytes", lambda: 10_000_000)  # 10 MB: less than the files' 3.5x
    read = []
    monkeypatch.setattr(inputs, "load_trajectories", lambda *a, **k: read.append(a))
    result = CliRunner().invoke(app, ["train", "--replays", str(folder), "--output", str(tmp_path / "run")])
    assert result.exit_code == 2 and not read
    line = result.output.strip()
    assert "\n" not in line and str(folder) in line and "keras-lstm prepare" in line and "GB available" in line
    # a cap on the frames reads only what fits it, so it is let through
    inputs.check_fits_in_memory(folder, sorted(folder.glob("*.slp")), max_frames=1000)
    monkeypatch.setattr(inputs, "available_memory_bytes", lambda: None)  # unknown: no guess, no refusal
    inputs.check_fits_in_memory(folder, sorted(folder.glob("*.slp")), max_frames=None)


def test_validation_is_capped_alike_from_a_folder_and_a_prepared_dataset(prepared):
    folder, data_dir, _ = prepared
    capped = dict(TINY, val_max_frames=700)
    from_replays = inputs.replay_inputs(TrainConfig.from_flat(replays=str(folder), **capped))
    from_dataset = inputs.prepared_inputs(TrainConfig.from_flat(replays="", data_dir=str(data_dir), **capped))
    whole = inputs.replay_inputs(TrainConfig.from_flat(replays=str(folder), **TINY)).val
    for val in (from_replays.val, from_dataset.val):
        assert len(val.numeric) <= 700  # frames, less each trajectory's first (it has no previous input)
        np.testing.assert_array_equal(val.numeric, from_replays.val.numeric)
        np.testing.assert_array_equal(val.ends, from_replays.val.ends)
    assert 0 < len(from_replays.val) < len(whole)
    # the cap keeps the first frames of the split, in order
    n = len(from_replays.val.numeric)
    np.testing.assert_array_equal(from_replays.val.numeric, whole.numeric[:n])


def test_split_seed_fixes_the_validation_games_whatever_the_training_seed(prepared):
    """`--split-seed` decouples the split from `--seed`: runs that differ
    only in their training seed validate on the same games, from a folder and
    from a dataset prepared with that split's seed."""
    folder, data_dir, _ = prepared
    default = inputs.replay_inputs(TrainConfig.from_flat(replays=str(folder), **TINY))
    other_seed = inputs.replay_inputs(TrainConfig.from_flat(replays=str(folder), seed=1, **TINY))
    fixed = inputs.replay_inputs(TrainConfig.from_flat(replays=str(folder), seed=1, split_seed=0, **TINY))
    assert other_seed.val_files != default.val_files  # the seed moves the split, so fixing it matters
    assert fixed.val_files == default.val_files and fixed.train_files == default.train_files
    from_dataset = inputs.prepared_inputs(TrainConfig.from_flat(replays="", data_dir=str(data_dir), seed=1, split_seed=0, **TINY))
    assert from_dataset.val_files == default.val_files


@pytest.mark.slow
def test_segments_from_a_prepared_dataset_train_as_from_its_folder(prepared, tmp_path):
    folder, data_dir, _ = prepared
    segments = dict(embed_size=8, hidden_size=8, num_layers=1, window_size=30, carried_state=True, carried_streams=4,
                    epochs=1, val_fraction=PREPARED_VAL_FRACTION)
    from_data = train(TrainConfig.from_flat(data_dir=str(data_dir), replays="", output=str(tmp_path / "ds"), **segments), verbose=0)
    from_replays = train(TrainConfig.from_flat(replays=str(folder), output=str(tmp_path / "slp"), **segments), verbose=0)
    assert from_data["evaluation"] == from_replays["evaluation"] == "one pass, state carried"
    for key in ("train_windows", "val_windows", "frames", "trajectories", "replays_used"):
        assert from_data[key] == from_replays[key], key
    assert from_data["baseline_repeat_loss"] == pytest.approx(from_replays["baseline_repeat_loss"], rel=1e-9)
    assert from_data["val_loss"] == pytest.approx(from_replays["val_loss"], rel=1e-4)  # the same batches, the same weights
