"""Training and serving on a GPU: `keras-lstm bench gpu`.

On a machine whose TensorFlow lists a GPU, in one process and a few minutes:

- training frames/s of the same policy trained seven ways on the same random
  batches (`train_speed.measure_speed`, the variants taking turns): stock
  Keras `model.fit` over `keras.layers.LSTM` (cuDNN's fused kernel on a
  GPU); our `train_step` with full and with truncated BPTT, each by both
  recurrent implementations (`fused`: the hand-written per-timestep path;
  `keras`: the Keras layers, cuDNN on a GPU); the fused ones with
  bfloat16 matmuls; and with mixed precision (`--mixed-precision`): stock
  Keras under `mixed_float16`, ours by the Keras layers in float16 (full and
  truncated) and bfloat16; at batch 64 and 512, window 60. A variant the
  device cannot run is reported with its error and left out;
- the export's `step` throughput at 1 to 4,096 games per call
  (`serve.run`, plain and XLA exports, loaded without project code);
- the device's name.

On a machine without a GPU it says so and measures nothing (exit 0): CPU
figures are what `bench train-speed` and `bench serve` are for.

"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import numpy as np

from keras_lstm.benchmarks import serve, train_speed
from keras_lstm.benchmarks.measure import machine_info


GPU_VARIANTS = train_speed.VARIANTS + train_speed.KERAS_IMPL_VARIANTS + train_speed.MIXED_VARIANTS


@dataclasses.dataclass
class GpuBenchConfig:
    batches: tuple[int, ...] = (64, 512)
    window_size: int = 60
    truncate_bptt: int = 15
    rounds: int = 3
    steps_per_round: int = 5
    serve_batches: tuple[int, ...] = (1, 64, 256, 1024, 4096)
    serve_seconds: float = 1.0
    sizes: dict = dataclasses.field(default_factory=dict)  # embed/hidden/layers overrides (tests: tiny)
    variants: tuple[str, ...] = GPU_VARIANTS  # the training variants run, in this order


def gpu_names() -> list[str]:
    """The GPUs TensorFlow sees, by name (empty on a machine without one)."""
    import tensorflow as tf

    names = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device) or {}
        names.append(details.get("device_name", device.name))
    return names


def measure(config: GpuBenchConfig, log: Callable[[str], None] = lambda line: None) -> dict:
    """The measurements, on whatever device TensorFlow places them (the GPU
    when there is one)."""
    start = time.perf_counter()
    training = []
    for batch in config.batches:
        speed = train_speed.TrainSpeedConfig.from_options(
            batch_size=batch, window_size=config.window_size, truncate_bptt=config.truncate_bptt, cells=("lstm",),
            rounds=config.rounds, steps_per_round=config.steps_per_round, memory=False, **config.sizes,
        )
        log(f"training, batch {batch} ...")
        failed = {}

        def on_error(variant, error):
            failed[variant] = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"[:300]
            log(f"  {variant} failed: {failed[variant]}")

        rounds = train_speed.measure_speed(speed, "lstm", log=log, variants=config.variants, on_error=on_error)
        training.append({
            "batch": batch,
            "frames_per_s": {v: float(speed.frames_per_step / np.median(np.concatenate(r))) for v, r in rounds.items()},
            "failed": failed,
        })
    serving = None
    if config.serve_batches:  # () skips it (tests: `bench serve` has its own)
        log("serving ...")
        from keras_lstm.config import TrainConfig

        serving = serve.run(serve.ServeBenchConfig(training=TrainConfig.from_flat(**config.sizes), batches=config.serve_batches,
                                                   budget_s=config.serve_seconds), log=log)
    return {"training": training, "variants": list(config.variants), "serving": serving, "seconds": time.perf_counter() - start}


def run(config: GpuBenchConfig, log: Callable[[str], None] = lambda line: None) -> dict:
    names = gpu_names()
    result = {"machine": machine_info(), "gpus": names, "config": dataclasses.asdict(config)}
    if not names:
        result["message"] = "no GPU: TensorFlow lists no GPU device on this machine; nothing measured (see docs/GPU.md)"
        return result
    result.update(measure(config, log))
    return result


def format_report(result: dict) -> str:
    if not result["gpus"]:
        return result["message"]
    variants = result.get("variants", GPU_VARIANTS)
    lines = [f"GPU: {', '.join(result['gpus'])}; {result['seconds']:.0f} s", "",
             "training frames/s (window 60; LSTM 2x256 unless sized otherwise)",
             "| batch | " + " | ".join(train_speed.VARIANT_LABELS[v] for v in variants) + " |",
             "|---:|" + "---:|" * len(variants)]
    for row in result["training"]:
        cells = (f"{row['frames_per_s'][v]:,.0f}" if v in row["frames_per_s"] else "failed" for v in variants)
        lines.append(f"| {row['batch']} | " + " | ".join(cells) + " |")
    for row in result["training"]:
        lines += [f"batch {row['batch']}, {v} failed: {error}" for v, error in row.get("failed", {}).items()]
    if result["serving"] is not None:
        lines += ["", serve.format_table(result["serving"])]
    return "\n".join(lines)
