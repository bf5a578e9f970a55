"""`keras-lstm bench gpu`: exits 0 without a GPU, and the measurements it
would make on one run (here on the CPU, tiny)."""

import json

import pytest
from typer.testing import CliRunner

from keras_lstm.benchmarks import fit_speed, gpu, train_speed


def test_without_a_gpu_it_says_so_and_exits_0():
    if gpu.gpu_names():
        pytest.skip("this machine has a GPU")
    from keras_lstm.cli.main import app

    result = CliRunner().invoke(app, ["bench", "gpu"])
    assert result.exit_code == 0, result.output
    assert "no GPU" in result.output and "nothing measured" in result.output


@pytest.mark.slow  # traces and trains six tiny variants: ~20 s
def test_the_gpu_measurements_run_end_to_end_on_any_device():
    # The variants `bench train-speed` does not run (test_train_speed.py runs those).
    only_here = tuple(v for v in gpu.GPU_VARIANTS if v not in train_speed.VARIANTS)
    assert set(train_speed.MIXED_VARIANTS) <= set(only_here) and len(only_here) == 6
    tiny = gpu.GpuBenchConfig(batches=(4,), window_size=6, truncate_bptt=2, rounds=1, steps_per_round=1, variants=only_here,
                              serve_batches=(), sizes=dict(embed_size=8, hidden_size=8, num_layers=1))  # serving: test_bench_serve.py
    result = gpu.measure(tiny)
    (row,) = result["training"]
    assert row["batch"] == 4 and set(row["frames_per_s"]) == set(only_here) and not row["failed"]
    assert all(v > 0 for v in row["frames_per_s"].values())
    assert result["serving"] is None
    report = gpu.format_report({**result, "gpus": ["test device"]})
    assert "| 4 |" in report and "test device" in report


def test_a_variant_the_device_cannot_run_is_reported_and_left_out(monkeypatch):
    build = train_speed.build_variant

    def failing(variant, *args, **kwargs):
        if variant == "ours_keras_full_mbf16":
            raise RuntimeError("No registered 'CudnnRNNV3' OpKernel for 'GPU' devices\nmore detail")
        return build(variant, *args, **kwargs)

    monkeypatch.setattr(train_speed, "build_variant", failing)
    tiny = train_speed.TrainSpeedConfig.quick(cells=("lstm",), rounds=1, steps_per_round=1)
    failed = {}
    rounds = train_speed.measure_speed(tiny, "lstm", log=lambda line: None, variants=("ours_full", "ours_keras_full_mbf16"),
                                       on_error=lambda v, e: failed.setdefault(v, str(e)))
    assert set(rounds) == {"ours_full"} and "CudnnRNNV3" in failed["ours_keras_full_mbf16"]
    with pytest.raises(RuntimeError, match="CudnnRNNV3"):  # without on_error the error is not swallowed
        train_speed.measure_speed(tiny, "lstm", log=lambda line: None, variants=("ours_keras_full_mbf16",))


@pytest.mark.slow  # a JAX process tracing four tiny variants: ~30 s
def test_bench_gpu_under_jax_measures_ours_and_stock_keras_and_names_the_kernel(tmp_path):
    from keras_lstm.cli.main import app

    # bfloat16 only: it runs every variant through mixed precision; float32's step is test_backends.py's
    result = CliRunner().invoke(app, ["bench", "gpu", "--backend", "jax", "--quick", "--dtypes", "bfloat16", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout[result.stdout.index("{"):])
    assert out["device"]["backend"] == "jax" and out["machine"]["keras_backend"] == "jax"
    assert [row["dtype"] for row in out["shapes"]] == ["bfloat16"]
    for row in out["shapes"]:
        assert not row["failed"] and set(row["frames_per_s"]) == set(fit_speed.VARIANTS)
        assert all(v > 0 for v in row["frames_per_s"].values())
        # Every variant's LSTM layers were traced, by one kernel or the other (the CPU: the fallback).
        assert all(k["cudnn"] + k["fallback"] > 0 for k in row["lstm_kernels"].values())
    assert "stock Keras LSTM, fit" in fit_speed.format_report(out)


def test_the_jax_process_refuses_bad_options_in_one_line(capsys):
    for args, message in ((["--batches", "4,x"], "--batches must be positive whole numbers"), (["--dtypes", "float8"], "--dtypes must be among")):
        with pytest.raises(SystemExit) as exit_info:
            fit_speed.main(args)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err


def test_bench_gpu_options_are_checked():
    from keras_lstm.cli.main import app

    for args, message in ((["--backend", "torch"], "--backend must be one of"), (["--backend", "jax", "--batches", "64,x"], "--batches must be"),
                          (["--backend", "jax", "--dtypes", "float8"], "--dtypes must be among"), (["--quick"], "apply to --backend jax")):
        result = CliRunner().invoke(app, ["bench", "gpu", *args])
        assert result.exit_code != 0 and message in result.output, result.output
