"""A full or read-only disk under any command that writes: one line naming
the path and the cause, exit 2, no traceback, no temporary left behind; a
full disk during a backup keeps the previous backup, and a restart resumes
from it as if nothing had happened.

We run as root, where a read-only mode bit does not stop a write, so the
failure is injected where the test chooses (the write raises OSError or
TensorFlow's error, as a real full disk does: the texts are the ones measured
on a full tmpfs). `test_a_real_full_disk` also fills a real tmpfs where this
machine lets us mount one (and skip where it does not)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from typer.testing import CliRunner

from conftest import CLIPS, REPO
from keras_lstm.cli.main import app
from keras_lstm.files import atomic
from keras_lstm.training import run_backup
from keras_lstm.training.train import TrainConfig, train

runner = CliRunner()
TINY = dict(embed_size=8, hidden_size=8, num_layers=1, window_size=12, batch_size=32)
TINY_ARGS = [a for k, v in TINY.items() for a in (f"--{k.replace('_', '-')}", str(v))]


def disk_full(path=None) -> OSError:
    """What Python raises on a full disk (a write's error names no file)."""
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), *([str(path)] if path is not None else []))


def tf_disk_full(path) -> tf.errors.OpError:
    """What TensorFlow raises on a full disk (the text measured on a full tmpfs)."""
    return tf.errors.ResourceExhaustedError(
        None, None, "{{function_node __wrapped__SaveV2_dtypes_23_device_/job:localhost/replica:0/task:0/device:CPU:0}} "
        f"{path}; No space left on device [Op:SaveV2]"
    )


def temporaries(folder: Path) -> list[str]:
    return [str(p.relative_to(folder)) for p in folder.rglob(".tmp-*")] if folder.exists() else []


def assert_one_line(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert errors == [f"error: {message}"], result.stderr


# -- the error and its path ---------------------------------------------------


def _chained_tfds_error():
    try:
        try:
            raise disk_full()  # a write on a full disk: no file named
        except OSError as inner:
            raise OSError('Failed to finalize writing of split "train": [Errno 28] No space left on device') from inner
    except OSError as outer:
        return outer


@pytest.mark.parametrize("err, path, said", [
    (disk_full("/d/model.keras"), None, "/d/model.keras: no space left on device"),
    (OSError(errno.EROFS, os.strerror(errno.EROFS), "/ro/run"), None, "/ro/run: read-only file system"),
    (PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/x/p.png"), None, "/x/p.png: permission denied"),
    (disk_full("/d/.tmp-123-model.keras"), "/d/model.keras", "/d/model.keras: no space left on device"),
    (disk_full("/d/.tmp-123-prepare/slippi_replays/x.tfrecord"), None, "/d: no space left on device"),
    (_chained_tfds_error(), "/data", "/data: no space left on device"),  # TFDS's re-raise
    (tf_disk_full("/m/run/.tmp-9-export-ab/variables/variables.data"), "/m/run", "/m/run: no space left on device"),
    (tf.errors.PermissionDeniedError(None, None, "{{function_node __wrapped__CreateSummaryFileWriter_device_/job:localhost/"
                                     "replica:0/task:0/device:CPU:0}} /r/logs/train; Read-only file system "
                                     "[Op:CreateSummaryFileWriter] name: "), None, "/r/logs/train: read-only file system"),
    (RuntimeError("Traceback (most recent call last):\n  ...\nOSError: [Errno 28] No space left on device\n"
                  "[while running 'build']"), "/data", "/data: no space left on device"),  # a Beam worker's, as text
])
def test_disk_errors_are_one_line_with_the_path_and_the_cause(err, path, said):
    disk = atomic.disk_error(err, path)
    assert isinstance(disk, atomic.DiskError) and isinstance(disk, OSError)
    assert str(disk) == said


@pytest.mark.parametrize("err", [
    FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), "/x"),
    ValueError("--hidden-size must be positive"),
    tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape[100000,400000]"),
    KeyboardInterrupt(),
])
def test_other_errors_are_not_disk_errors(err):
    assert atomic.disk_error(err, "/somewhere") is None


def test_a_full_disk_mid_write_leaves_the_old_file_and_no_temporary(tmp_path):
    final = tmp_path / "metrics.json"
    atomic.write_json(final, {"old": 1})
    with pytest.raises(atomic.DiskError) as caught:
        with atomic.atomic_path(final) as tmp:
            tmp.write_text('{"new": ')  # half written, then the disk is full
            raise disk_full()
    assert str(caught.value) == f"{final}: no space left on device"
    assert json.loads(final.read_text()) == {"old": 1}
    assert temporaries(tmp_path) == []


def test_a_folder_that_cannot_be_renamed_into_place_puts_the_old_one_back(tmp_path, monkeypatch):
    final = tmp_path / "version"
    final.mkdir()
    (final / "file").write_text("old")
    rename = os.rename

    def rename_fails_into_place(src, dst):
        if Path(src) == atomic.temporary_path(final) and Path(dst) == final:  # the new one, not the old put back
            raise disk_full(src)
        rename(src, dst)

    monkeypatch.setattr(os, "rename", rename_fails_into_place)
    with pytest.raises(atomic.DiskError):
        with atomic.atomic_path(final) as tmp:
            tmp.mkdir()
            (tmp / "file").write_text("new")
    assert (final / "file").read_text() == "old"
    assert temporaries(tmp_path) == []


# -- every command that writes, through the CLI ------------------------------


def train_args(out: Path, epochs: int = 1) -> list:
    return ["train", "--temporal", "--replays", str(CLIPS), "--output", str(out), "--epochs", str(epochs), "--max-frames", "600",
            "--backup-every-steps", "2", *TINY_ARGS]


def fail_backup(monkeypatch, out):
    savez = np.savez

    def savez_on_a_full_disk(path, **arrays):
        Path(path).write_bytes(b"PK half")
        raise disk_full()

    monkeypatch.setattr(run_backup.np, "savez", savez_on_a_full_disk)
    return f"{out / 'backup' / f'{2:012d}'}: no space left on device"


def fail_model(monkeypatch, out):
    save = keras.Model.save

    def save_on_a_full_disk(self, filepath, *args, **kwargs):
        if Path(filepath).name.endswith("-model.keras"):  # the final model.keras's temporary
            Path(filepath).write_bytes(b"PK half")
            raise disk_full()
        return save(self, filepath, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save", save_on_a_full_disk)
    return f"{out / 'model.keras'}: no space left on device"


def fail_logs(monkeypatch, out):
    def writer_on_a_full_disk(logdir, *args, **kwargs):
        raise tf.errors.ResourceExhaustedError(
            None, None, "{{function_node __wrapped__CreateSummaryFileWriter_device_/job:localhost/replica:0/task:0/"
            f"device:CPU:0}}}} {logdir}/events.out.tfevents.1.host.1.v2; No space left on device\n\tFailed to flush 1 "
            f"events to {logdir}/events.out.tfevents.1.host.1.v2\n\tCould not initialize events writer. "
            "[Op:CreateSummaryFileWriter] name: "
        )

    monkeypatch.setattr(tf.summary, "create_file_writer", writer_on_a_full_disk)
    return f"{out / 'logs' / 'train' / 'events.out.tfevents.1.host.1.v2'}: no space left on device"


def fail_mkdir(monkeypatch, out):
    mkdir = Path.mkdir

    def mkdir_read_only(self, *args, **kwargs):
        if self == out.parent or out.parent in self.parents:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir_read_only)
    return f"{out}: read-only file system"


def fail_lock(monkeypatch, out):
    def pwrite_on_a_full_disk(fd, data, offset):
        raise disk_full()

    monkeypatch.setattr(os, "pwrite", pwrite_on_a_full_disk)
    return f"{out / '.lock'}: no space left on device"


@pytest.mark.parametrize("inject", [fail_backup, fail_model, fail_logs, fail_mkdir, fail_lock])
def test_train_on_a_full_or_read_only_disk_says_so_in_one_line(tmp_path, monkeypatch, inject):
    out = tmp_path / "parent" / "run"
    message = inject(monkeypatch, out)
    result = runner.invoke(app, train_args(out))
    assert_one_line(result, message)
    assert temporaries(tmp_path) == []
    assert not (out / "model.keras").exists()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train(TrainConfig.from_flat(replays=str(CLIPS), output=str(out), epochs=1, max_frames=600, **TINY), verbose=0)
    return out


def test_export_on_a_full_disk_says_so_in_one_line(tiny_run, tmp_path, monkeypatch):
    from keras_lstm.serving import export

    def save_on_a_full_disk(module, path, signatures=None, **kwargs):
        (Path(path) / "variables").mkdir(parents=True)
        (Path(path) / "variables" / "variables.data-00000-of-00001").write_bytes(b"half")
        raise tf_disk_full(f"{path}/variables/variables_temp/part-00000-of-00001.data-00000-of-00001")

    monkeypatch.setattr(export.tf.saved_model, "save", save_on_a_full_disk)
    result = runner.invoke(app, ["export", "--model", str(tiny_run), "--base-dir", str(tmp_path / "models"), "--name", "m"])
    assert_one_line(result, f"{tmp_path / 'models' / 'm'}: no space left on device")
    assert temporaries(tmp_path) == [] and not any(p.name.isdigit() for p in (tmp_path / "models" / "m").iterdir())


def test_evaluate_reliability_plot_on_a_full_or_read_only_disk_says_so_in_one_line(tiny_run, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    plot = tmp_path / "plot.png"
    evaluate = ["evaluate", "--model", str(tiny_run), "--replays", str(CLIPS), "--reliability-plot", str(plot)]

    def savefig_on_a_full_disk(self, path, *args, **kwargs):
        Path(path).write_bytes(b"\x89PNG half")
        raise disk_full()

    with monkeypatch.context() as patch:
        patch.setattr(Figure, "savefig", savefig_on_a_full_disk)
        result = runner.invoke(app, evaluate)
    assert_one_line(result, f"{plot}: no space left on device (the reliability plot was not written)")
    assert temporaries(tmp_path) == [] and not plot.exists()

    # A read-only folder is found before the evaluation, not after it.
    os_open = os.open

    def open_read_only(path, flags, *args):
        if Path(path).parent == tmp_path and flags & os.O_CREAT:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return os_open(path, flags, *args)

    evaluated = []
    monkeypatch.setattr(os, "open", open_read_only)
    monkeypatch.setattr("keras_lstm.training.train.evaluate_policy", lambda *a, **k: evaluated.append(1))
    result = runner.invoke(app, evaluate)
    assert_one_line(result, f"{plot}: read-only file system")
    assert evaluated == [] and temporaries(tmp_path) == []


def test_prepare_on_a_full_disk_says_so_in_one_line(tmp_path, monkeypatch):
    from keras_lstm.data import tfrecord

    def records_on_a_full_disk(path, records):
        with open(path, "wb") as out:
            out.write(b"half")
        raise disk_full()  # as `out.write` raises it: no file named

    monkeypatch.setattr(tfrecord, "write_records", records_on_a_full_disk)
    data = tmp_path / "data"
    result = runner.invoke(app, ["prepare", "--replays", str(CLIPS), "--data-dir", str(data), "--workers", "1", "--no-progress"])
    assert_one_line(result, f"{data}: no space left on device")
    assert temporaries(data) == []


# -- a full disk during a backup: the previous one is kept, resumable --------


BACKUP_CONFIG = dict(replays=str(CLIPS), epochs=2, max_frames=1500, backup_every_steps=2, **TINY)


@pytest.mark.slow
def test_a_full_disk_while_backing_up_keeps_the_previous_backup_and_resumes_from_it(tmp_path, monkeypatch):
    whole = train(TrainConfig.from_flat(output=str(tmp_path / "whole"), **BACKUP_CONFIG), verbose=0)
    out = tmp_path / "run"
    config = TrainConfig.from_flat(output=str(out), **BACKUP_CONFIG)
    savez, calls = np.savez, [0]

    def third_backup_on_a_full_disk(path, **arrays):
        calls[0] += 1
        if calls[0] == 3:
            Path(path).write_bytes(b"PK half")
            raise disk_full()
        savez(path, **arrays)

    flat = config.flat()
    args = ["train", "--temporal", "--replays", flat["replays"], "--output", str(out)]
    for key in ("epochs", "max_frames", "backup_every_steps", *TINY):
        args += [f"--{key.replace('_', '-')}", str(flat[key])]
    with monkeypatch.context() as patch:
        patch.setattr(run_backup.np, "savez", third_backup_on_a_full_disk)
        result = runner.invoke(app, args)
    backups = run_backup.complete_backups(out / "backup")
    assert [int(p.name) for p in backups] == [4]  # the second backup, whole
    assert_one_line(result, f"{out / 'backup' / f'{6:012d}'}: no space left on device (backup {4:012d} is kept: "
                            "make room and run the same command again to resume from it)")
    assert temporaries(out) == []
    resumed = train(config, verbose=0)  # room made: the same command again
    assert resumed["val_loss"] == pytest.approx(whole["val_loss"], rel=1e-3)
    history = json.loads((out / "history.json").read_text())
    for key, values in json.loads((tmp_path / "whole" / "history.json").read_text()).items():
        np.testing.assert_allclose(history[key], values, rtol=1e-3, err_msg=key)
    assert not (out / "backup").exists() and temporaries(out) == []


# -- a real full tmpfs, where mounting one is allowed -----------------------


@pytest.mark.slow
@pytest.mark.parametrize("command, said", [
    # Where the disk fills first depends on the sizes written: one line naming a path on it is asked for.
    # (train's writes on a full disk are covered by the injected failures above, with TensorFlow's texts of a
    # real full tmpfs in test_disk_errors_are_one_line_with_the_path_and_the_cause: one real case keeps the suite short.)
    (["prepare", "--replays", str(CLIPS), "--data-dir", "DISK/data", "--workers", "1", "--no-progress"],
     "/data: no space left on device"),
], ids=["prepare"])
def test_a_real_full_disk(tmp_path, command, said):
    """`keras-lstm COMMAND` in a private mount namespace, on a 64 KiB tmpfs;
    the temporaries left there are listed after it."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare here")
    disk = tmp_path / "disk"
    disk.mkdir()
    cli = " ".join(f"'{a}'" for a in [sys.executable, "-m", "keras_lstm.cli.main", *command]).replace("DISK", str(disk))
    script = f"mount -t tmpfs -o size=64k tmpfs '{disk}' || exit 97; {cli}; rc=$?; find '{disk}' -name '.tmp-*' -printf 'LEFT %p\\n'; exit $rc"
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO)
    if proc.returncode == 97 or proc.stderr.startswith("unshare: "):
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith(f"error: {disk}/") and errors[0].endswith(said), proc.stderr[-3000:]
    assert "LEFT" not in proc.stdout, proc.stdout
