"""The benchmarks' shared measuring helpers (`keras_lstm.benchmarks.measure`).
Nothing here asserts on timings beyond their shape."""

from __future__ import annotations

import keras
import numpy as np

from keras_lstm.benchmarks import measure


def test_time_calls_warms_up_then_times_each_call():
    calls = []
    wall, cpu = measure.time_calls(lambda: calls.append(1), iterations=5, warmup=3)
    assert len(calls) == 8
    assert wall.shape == cpu.shape == (5,)
    assert (wall >= 0).all() and (cpu >= 0).all()


def test_time_alternating_calls_a_then_b():
    order = []
    a, b = measure.time_alternating(lambda: order.append("a"), lambda: order.append("b"), iterations=3, warmup=1)
    assert order == ["a", "b"] * 4
    assert a.shape == b.shape == (3,)


def test_memory_of_this_process():
    rss = measure.rss_mb()
    assert rss is not None and rss > 0
    assert measure.peak_rss_mb() >= rss * 0.99
    if measure.reset_peak_rss():  # the peak falls back to about the current RSS
        assert measure.peak_rss_mb() <= measure.rss_mb() * 1.05 + 1


def test_step_timer_times_steps_and_epochs():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    timer = measure.StepTimer()
    x, y = np.zeros((8, 3), np.float32), np.zeros((8, 1), np.float32)
    model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[timer])
    assert len(timer.step_s) == 4 and len(timer.epoch_s) == 2
    assert all(s > 0 for s in timer.step_s + timer.epoch_s)


def test_machine_info_describes_the_machine_and_code():
    info = measure.machine_info()
    for key in ("code", "cpu", "cores", "python", "platform", "load_average", "tensorflow", "keras", "intra_op_threads", "inter_op_threads"):
        assert key in info, key
    assert info["cores"] >= 1 and info["cpu"]
    assert set(info["code"]) <= {"commit", "uncommitted"}
    assert all(path in measure.TRAINING_PATH_FILES for path in info["code"].get("uncommitted", []))


def test_default_replays_is_the_shared_games_folder():
    assert measure.default_replays().parts[-3:] == ("shared", "replays", "games")
