"""The tf.data pipeline over a prepared dataset: the same windows and targets
as the in-memory path, shuffling that loses nothing, shards that partition,
streamed baselines, and training from `--data-dir` end to end."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from typer.testing import CliRunner

from keras_lstm.cli.main import app
from keras_lstm.data import controller, features, pipeline, tfds_dataset
from keras_lstm.data.trajectories import load_trajectories
from keras_lstm.data.windows import make_windows
from keras_lstm.evaluation import baselines
from keras_lstm.training.train import TrainConfig, replay_inputs, train

from conftest import GAMES

tfds.disable_progress_bar()

NAMES = (
    "peppi_transform.slp",
    "slippi-js_v2_test.slp",
    "slippi-js_test.slp",
    "libmelee_test_game_2.slp",
    "slippi-js_id_2_to_21.slp",
    "slippi-js_teams_time.slp",
)
VAL_FRACTION = 0.25
TINY = dict(embed_size=8, hidden_size=8, num_layers=1, window_size=10, stride=40, batch_size=32, epochs=1, val_fraction=VAL_FRACTION)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, replays_dir):
    folder = tmp_path_factory.mktemp("replays")
    for name in NAMES:
        (folder / name).symlink_to(GAMES / name)  # never a copy
    data_dir = tmp_path_factory.mktemp("data")
    tfds_dataset.prepare(folder, data_dir, val_fraction=VAL_FRACTION)
    return folder, data_dir, tfds_dataset.load_builder(data_dir, VAL_FRACTION)


def _collect(ds: tf.data.Dataset):
    """Unbatched (x, y) windows -> numpy arrays."""
    xs, ys = [], []
    for x, y in tfds.as_numpy(ds.batch(1024)):
        xs.append(x)
        ys.append(y)
    x = {k: np.concatenate([b[k] for b in xs]) for k in ("numeric", "categorical")}
    return x, {h: np.concatenate([b[h] for b in ys]) for h in controller.HEADS}


def _reference_windows(folder: Path, builder, split: str, W: int, stride: int, delay: int):
    files = builder.info.metadata["train_files" if split == "train" else "val_files"]
    report = load_trajectories([folder / f for f in files])
    return make_windows([features.align(t, delay) for t in report.trajectories], W, stride)


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
    traj = tfds_dataset.read_trajectories(builder, "train")[0]
    expected = controller.targets_as_input(traj.targets)
    got = pipeline.targets_as_input_tf({h: tf.constant(v) for h, v in traj.targets.items()}).numpy()
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("W, stride, delay", [(12, 5, 0), (1, 3, 2), (20, 7, 4)])
@pytest.mark.parametrize("split", ["train", "validation"])
def test_unshuffled_windows_and_targets_are_identical_to_make_windows(prepared, W, stride, delay, split):
    folder, _, builder = prepared
    ref = _reference_windows(folder, builder, split, W, stride, delay)
    x, y = _collect(pipeline.window_dataset(builder, split, W, stride, delay))
    ref_x, ref_y = ref.gather(ref.ends)
    assert len(x["numeric"]) == len(ref) > 0
    for k in x:
        np.testing.assert_array_equal(x[k], ref_x[k])
        assert x[k].dtype == ref_x[k].dtype
    for h in controller.HEADS:
        np.testing.assert_array_equal(y[h], ref_y[h])
        assert y[h].dtype == ref_y[h].dtype, h


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
    ref = _reference_windows(folder, builder, "train", W, stride, 0)
    assert not np.array_equal(sx["numeric"], ref.gather(ref.ends)[0]["numeric"])  # it did shuffle


def test_repeated_stream_reshuffles_each_epoch(prepared):
    _, _, builder = prepared
    scan = pipeline.scan_split(builder, "train", 8, 11, 0, fit_stats=False)
    n = scan.windows
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
    scan = pipeline.scan_split(builder, "train", 8, 13, 0, fit_stats=False)
    assert scan.shard_windows(2) == [sum(p.values()) for p in parts]
    with pytest.raises(ValueError, match="too few"):
        pipeline.read_examples(builder, "train", 0, 100)


def test_scan_gives_the_window_count_and_baselines_of_the_in_memory_path(prepared):
    folder, _, builder = prepared
    for W, stride, delay in ((12, 5, 0), (30, 2, 3)):
        ref = _reference_windows(folder, builder, "train", W, stride, delay)
        scan = pipeline.scan_split(builder, "train", W, stride, delay)
        assert scan.windows == len(ref)
        assert scan.trajectories_too_short == ref.trajectories_too_short
        assert scan.stats == baselines.fit_baselines(ref.predicted_targets(), ref.previous_targets())


def test_baseline_accumulator_in_chunks_equals_fit_baselines(prepared):
    folder, _, builder = prepared
    ref = _reference_windows(folder, builder, "train", 5, 3, 0)
    targets, previous = ref.predicted_targets(), ref.previous_targets()
    acc = pipeline.BaselineAccumulator()
    for chunk in np.array_split(np.arange(len(ref)), 7):
        acc.add({h: v[chunk] for h, v in targets.items()}, {h: v[chunk] for h, v in previous.items()})
    assert acc.stats() == baselines.fit_baselines(targets, previous)


def test_prepared_inputs_equal_replay_inputs(prepared):
    folder, data_dir, _ = prepared
    from_replays = replay_inputs(TrainConfig(replays=str(folder), **TINY))
    from_dataset = pipeline.prepared_inputs(TrainConfig(replays="", data_dir=str(data_dir), **TINY))
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
        pipeline.prepared_inputs(TrainConfig(replays="", data_dir=str(data_dir), max_frames=1000, **TINY))
    with pytest.raises(FileNotFoundError, match="--val-fraction 0.5"):
        pipeline.prepared_inputs(TrainConfig(replays="", data_dir=str(data_dir), **{**TINY, "val_fraction": 0.5}))


@pytest.mark.slow
def test_train_from_data_dir_matches_training_from_the_folder(prepared, tmp_path):
    folder, data_dir, _ = prepared
    runner = CliRunner()
    options = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    result = runner.invoke(app, ["train", "--data-dir", str(data_dir), "--output", str(tmp_path / "ds"), "--json", *options])
    assert result.exit_code == 0, result.output
    from_dataset = json.loads((tmp_path / "ds" / "metrics.json").read_text())
    from_replays = train(TrainConfig(replays=str(folder), output=str(tmp_path / "slp"), **TINY), verbose=0)
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
    summary = train(TrainConfig(replays="", data_dir=str(data_dir), output=str(tmp_path), strategy="mirrored", **TINY), verbose=0)
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
        result = runner.invoke(app, ["train", *args, "--output", str(tmp_path / "run")], env={"TF_CONFIG": ""})
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and result.output.strip().count("\n") == 0, result.output
