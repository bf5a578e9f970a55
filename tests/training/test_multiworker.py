"""Multi-worker training: two worker processes on loopback with TF_CONFIG.

Run as a script (`python tests/training/test_multiworker.py worker ...`) this file is
one worker; as a test it starts two of them and checks that both finish,
that their weights are identical after training, that the loss went down,
and that a cluster killed mid-epoch resumes from its backups.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

TIMEOUT_S = 300  # per cluster run; a hung collective fails the test instead of hanging CI
TINY = dict(
    hidden_size=8, embed_size=8, num_layers=1, window_size=8, stride=256, batch_size=16,
    learning_rate=3e-3, epochs=2, backup_every_steps=5,
)


# -- one worker (run in a subprocess) -----------------------------------------


def _worker(data_dir: str, output: str, report: str, crash_at: str | None) -> None:
    import keras

    from keras_lstm.data.pipeline import batched, window_dataset
    from keras_lstm.data.prepared import load_builder
    from keras_lstm.model.losses import policy_loss
    from keras_lstm.training.train import TrainConfig, train

    class Probe(keras.callbacks.Callback):
        """Loss on a fixed validation batch before and after training, the
        final weights, and (optionally) a crash at `epoch:batch`."""

        def _loss(self) -> float:
            if not hasattr(self, "_batch"):
                windows = window_dataset(load_builder(data_dir), "validation", TINY["window_size"], TINY["stride"])
                self._batch = next(iter(batched(windows, 64)))
            x, y = self._batch
            loss, _ = policy_loss(y, self.model(x, training=False))
            return float(loss)

        def on_train_begin(self, logs=None):
            self.loss_before = self._loss()
            self.epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if crash_at == f"{self.epoch}:{batch}":
                os._exit(17)  # a machine going away, without any clean-up

        def on_train_end(self, logs=None):
            np.savez(report + ".npz", *[np.asarray(w) for w in self.model.get_weights()])
            Path(report + ".json").write_text(json.dumps({"loss_before": self.loss_before, "loss_after": self._loss()}))

    summary = train(TrainConfig.from_flat(replays="", data_dir=data_dir, output=output, strategy="multi-worker", **TINY), callbacks=[Probe()], verbose=0)
    data = json.loads(Path(report + ".json").read_text())
    data.update(epochs_run=summary["epochs_run"], chief=summary["strategy"]["chief"], replicas=summary["strategy"]["replicas"])
    Path(report + ".json").write_text(json.dumps(data))


# -- the test -------------------------------------------------------------------


def _free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _run_cluster(data_dir: Path, output: Path, reports: Path, crash_at: str | None = None) -> list[int]:
    """Start two workers, wait for both (bounded), return their exit codes."""
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        env.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
        env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")])
        log = open(reports / f"worker{index}.log", "ab")
        args = [sys.executable, __file__, "worker", str(data_dir), str(output), str(reports / f"worker{index}")]
        procs.append(subprocess.Popen(args + ([crash_at] if crash_at else []), env=env, stdout=log, stderr=subprocess.STDOUT))
    codes = []
    try:
        for proc in procs:
            codes.append(proc.wait(timeout=TIMEOUT_S))
    except subprocess.TimeoutExpired:
        pytest.fail(f"workers did not finish within {TIMEOUT_S} s; logs in {reports}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return codes


def _log_tail(reports: Path) -> str:
    return "\n".join((reports / f"worker{i}.log").read_text(errors="replace")[-3000:] for i in range(2))


@pytest.fixture(scope="module")
def small_prepared(tmp_path_factory, replays_dir):
    """Four games and a doubles game (symlinks, no copies) prepared with the
    default split (one game held out for validation)."""
    from keras_lstm.data import prepared

    folder = tmp_path_factory.mktemp("replays")
    for name in ("peppi_v2.0.slp", "peppi_nintendont.slp", "peppi_netplay_name.slp", "peppi_old_ver_thegang.slp", "slippi-js_doubles.slp"):
        (folder / name).symlink_to(replays_dir / "games" / name)
    data_dir = tmp_path_factory.mktemp("data")
    summary = prepared.prepare(folder, data_dir)
    assert summary["examples"] == {"train": 6, "validation": 2}, summary
    return data_dir


@pytest.mark.slow
def test_two_workers_train_in_lockstep_and_resume(small_prepared, tmp_path):
    data_dir = small_prepared
    output = tmp_path / "run"

    # 1. A clean run: both finish, identical weights, the loss went down.
    reports = tmp_path / "clean"
    reports.mkdir()
    codes = _run_cluster(data_dir, output, reports)
    assert codes == [0, 0], _log_tail(reports)
    results = [json.loads((reports / f"worker{i}.json").read_text()) for i in range(2)]
    assert [r["chief"] for r in results] == [True, False]
    assert all(r["replicas"] == 2 for r in results)
    weights = [np.load(reports / f"worker{i}.npz") for i in range(2)]
    assert len(weights[0].files) == len(weights[1].files) > 0
    for key in weights[0].files:
        np.testing.assert_array_equal(weights[0][key], weights[1][key])
    for r in results:
        assert r["loss_after"] < r["loss_before"], r
    # Only the chief wrote the run folder; no backups are left behind.
    assert {"model.keras", "best.keras", "metrics.json", "run.json", "history.json"} <= {p.name for p in output.iterdir()}
    assert not [p for p in output.iterdir() if p.name.startswith("backup")]

    # 2. Kill both workers mid-way through epoch 2, after a backup; start the
    #    cluster again: it resumes at the batch of the last backup and
    #    finishes in lockstep, where the clean run ended.
    resumed_output = tmp_path / "resumed"
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    codes = _run_cluster(data_dir, resumed_output, crashed, crash_at="1:7")
    assert codes == [17, 17], _log_tail(crashed)
    assert (resumed_output / "backup").is_dir() and (resumed_output / "backup-worker1").is_dir()
    restarted = tmp_path / "restarted"
    restarted.mkdir()
    codes = _run_cluster(data_dir, resumed_output, restarted)
    assert codes == [0, 0], _log_tail(restarted)
    results = [json.loads((restarted / f"worker{i}.json").read_text()) for i in range(2)]
    assert [r["epochs_run"] for r in results] == [2, 2]  # epoch 1 restored, not run again, kept in the history
    resumed = [np.load(restarted / f"worker{i}.npz") for i in range(2)]
    for key in resumed[0].files:
        np.testing.assert_array_equal(resumed[0][key], resumed[1][key])
        # resumed at the batch, in the same order: the clean run's weights
        np.testing.assert_allclose(resumed[0][key], weights[0][key], rtol=1e-4, atol=1e-6, err_msg=key)


def test_multi_worker_needs_tf_config(monkeypatch):
    from keras_lstm.training import distribute

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribute.select_strategy("multi-worker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        distribute.tf_config()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}))
    with pytest.raises(ValueError, match="not in its cluster"):
        distribute.tf_config()
    with pytest.raises(ValueError, match="strategy must be one of"):
        distribute.select_strategy("tpu")


def test_default_strategy_is_its_own_chief(tmp_path):
    from keras_lstm.training import distribute

    strategy = distribute.select_strategy("default")
    assert distribute.is_chief(strategy) and distribute.num_workers(strategy) == 1
    assert distribute.write_dir(tmp_path, strategy) == tmp_path
    assert distribute.backup_dir(tmp_path, strategy) == tmp_path / "backup"


if __name__ == "__main__" and len(sys.argv) >= 5 and sys.argv[1] == "worker":
    _worker(*sys.argv[2:5], crash_at=sys.argv[5] if len(sys.argv) > 5 else None)
