"""Training frames/s under `model.fit` on any Keras backend: `keras-lstm bench gpu --backend jax`.

Backend-neutral: it imports no TensorFlow, so it runs where only JAX is
installed (the GPU machine: `python -m keras_lstm.benchmarks.fit_speed`,
which `docs/benchmarks/gpu/run_jax.sh` runs). On the same random batches, for
each batch size and compute dtype (float32, and bfloat16 through Keras'
`mixed_bfloat16` policy):

- `keras_fit`: the reference, stock Keras. A functional model over the very
  same layers (`keras.layers.LSTM`), compiled with Keras losses that sum to
  `policy_loss`, the loss on the last frame, full BPTT;
- `ours_full`: `BehaviorCloningPolicy` under `fit`, loss on the last frame,
  full BPTT (the seed's windows);
- `ours_truncated`: the same with `truncate_bptt=K` (the seed's command);
- `ours_segments`: the corpus recipe's step shape, the loss on every frame
  of the window (`loss_frames` = window).

Frames are batch x window per step (every frame the step computes,
whether or not it carries a loss). Every variant is compiled and warmed up
first; then the variants take turns (`rounds` rounds of `steps` steps), and
the median step gives frames/s. A step is timed from Keras'
`on_train_batch_begin` to `on_train_batch_end`, which waits for the step's
logs, so asynchronous dispatch cannot hide the work.

Which LSTM kernel ran: under JAX, Keras runs `keras.layers.LSTM` through
cuDNN (`jax.experimental.rnn`) when the device allows and falls back to a
`lax.scan` otherwise, silently. The benchmark counts, while each variant is
traced, how many LSTM calls took the cuDNN path (`lstm_kernels`), so the
report says which one ran.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from typing import Callable

import keras
import numpy as np

from keras_lstm.benchmarks.measure import machine_info
from keras_lstm.data import controller, features
from keras_lstm.model.policy import build_policy

VARIANTS = ("keras_fit", "ours_full", "ours_truncated", "ours_segments")
VARIANT_LABELS = {
    "keras_fit": "stock Keras LSTM, fit",
    "ours_full": "ours, full BPTT",
    "ours_truncated": "ours, truncate_bptt=K",
    "ours_segments": "ours, loss on every frame",
}
DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass
class FitSpeedConfig:
    batches: tuple[int, ...] = (64, 256, 1024, 4096)
    dtypes: tuple[str, ...] = DTYPES
    window_size: int = 60
    truncate_bptt: int = 15
    embed_size: int = 128
    hidden_size: int = 256
    num_layers: int = 2
    warmup_steps: int = 2
    rounds: int = 3
    steps: int = 5
    budget_s: float = 240.0  # stop starting new shapes past this; what was measured is reported
    seed: int = 0

    @classmethod
    def quick(cls, **overrides) -> "FitSpeedConfig":
        """Tiny sizes and few steps: checks that everything runs (CI)."""
        tiny = dict(batches=(4,), window_size=6, truncate_bptt=2, embed_size=8, hidden_size=8, num_layers=1, warmup_steps=1, rounds=2, steps=2)
        return cls(**{**tiny, **overrides})

    @classmethod
    def from_options(cls, batches: str | None = None, dtypes: str | None = None, quick: bool = False, **overrides) -> "FitSpeedConfig":
        """The config of `bench gpu --backend jax`'s options (`--batches` and
        `--dtypes` as comma-separated text, None for the default), validated."""
        if batches is not None:
            try:
                overrides["batches"] = tuple(int(b) for b in batches.split(","))
            except ValueError:
                raise ValueError(f"--batches must be positive whole numbers separated by commas, got {batches!r}") from None
        if dtypes is not None:
            overrides["dtypes"] = tuple(dtypes.split(","))
        config = cls.quick(**overrides) if quick else cls(**overrides)
        config.validate()
        return config

    def validate(self) -> None:
        for name in ("window_size", "truncate_bptt", "embed_size", "hidden_size", "num_layers", "warmup_steps", "rounds", "steps"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if not self.batches or any(int(b) <= 0 for b in self.batches):
            raise ValueError(f"--batches must be positive whole numbers separated by commas, got {','.join(map(str, self.batches))!r}")
        if not self.dtypes or any(d not in DTYPES for d in self.dtypes):
            raise ValueError(f"--dtypes must be among {', '.join(DTYPES)}, separated by commas, got {','.join(self.dtypes)!r}")


# --- which LSTM kernel ran ------------------------------------------------------


class LstmKernelCounter:
    """Counts Keras' backend LSTM calls while tracing: `cudnn` where the
    backend's fused kernel took the call, `fallback` where it declined
    (NotImplementedError: Keras then runs its generic loop)."""

    def __init__(self):
        self.cudnn = self.fallback = 0

    def __enter__(self):
        from keras.src import backend as keras_backend  # the module `keras.layers.LSTM` calls through

        self._module, self._original = keras_backend, keras_backend.lstm
        counter = self

        def counted(*args, **kwargs):
            try:
                out = counter._original(*args, **kwargs)
            except NotImplementedError:
                counter.fallback += 1
                raise
            counter.cudnn += 1
            return out

        keras_backend.lstm = counted
        return self

    def __exit__(self, *exc):
        self._module.lstm = self._original

    def as_dict(self) -> dict:
        return {"cudnn": self.cudnn, "fallback": self.fallback}


# --- data and models ------------------------------------------------------------


def synthetic_batch(batch: int, window: int, loss_frames: int, seed: int) -> tuple[dict, dict]:
    """Random frames and targets, `loss_frames` targets per row."""
    rng = np.random.default_rng(seed)
    x = {
        "numeric": rng.normal(size=(batch, window, features.NUMERIC_SIZE)).astype("float32"),
        "categorical": rng.integers(0, 8, size=(batch, window, features.CATEGORICAL_SIZE)).astype("int32"),
    }
    lead = (batch,) if loss_frames == 1 else (batch, loss_frames)
    y = {"buttons": (rng.random(lead + (len(controller.BUTTONS),)) < 0.2).astype("float32")}
    y.update({h: rng.integers(0, controller.HEAD_CLASSES[h], lead).astype("int32") for h in controller.CLASS_HEADS})
    return x, y


def build_variant(variant: str, dtype: str, config: FitSpeedConfig) -> keras.Model:
    """A compiled model; every variant starts from the same weights."""
    mixed = None if dtype == "float32" else dtype
    truncate = config.truncate_bptt if variant == "ours_truncated" else None
    loss_frames = config.window_size if variant == "ours_segments" else 1
    keras.utils.set_random_seed(config.seed)
    sizes = dict(embed_size=config.embed_size, hidden_size=config.hidden_size, num_layers=config.num_layers)
    if variant == "keras_fit":
        return stock_keras_model(lambda: build_policy("lstm", recurrent_impl="keras", **sizes), mixed, keras.optimizers.Adam(1e-3), "keras_lstm_fit")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    policy = build_policy(
        "lstm", truncate_bptt=truncate, loss_frames=loss_frames, recurrent_impl="keras", mixed_precision=mixed, **sizes
    )
    policy.compile(optimizer=keras.optimizers.Adam(1e-3))
    return policy


def stock_keras_model(build: Callable[[], keras.Model], mixed_precision: str | None, optimizer, name: str) -> keras.Model:
    """Stock Keras, the reference: a plain functional model over the layers
    of the policy `build()` makes (under Keras' `mixed_<dtype>` policy when
    given, every layer built so), compiled with Keras' losses summed as
    `policy_loss` sums its heads, to train by Keras' own `train_step`.
    `bench train-speed` and `bench gpu` measure against it."""
    saved = keras.config.dtype_policy()
    keras.config.set_dtype_policy(f"mixed_{mixed_precision}" if mixed_precision else "float32")
    try:
        policy = build()
    finally:
        keras.config.set_dtype_policy(saved)
    model = keras.Model(inputs=policy.input, outputs=policy.output, name=name)
    # Keras' mean binary cross-entropy over the 8 buttons, times 8, is their sum: the total equals `policy_loss`.
    losses = {"buttons": keras.losses.BinaryCrossentropy(from_logits=True)}
    losses.update({h: keras.losses.SparseCategoricalCrossentropy(from_logits=True) for h in controller.CLASS_HEADS})
    weights = {h: (float(len(controller.BUTTONS)) if h == "buttons" else 1.0) for h in controller.HEADS}
    model.compile(optimizer=optimizer, loss=losses, loss_weights=weights)
    return model


class _StepTimes(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.step_s: list[float] = []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):  # the logs are ready: the step is done
        self.step_s.append(time.perf_counter() - self._start)


def _fit(model, data, steps: int, timer=None) -> None:
    x, y = data
    batch = len(x["numeric"])
    # The same batch `steps` times: no host-side shuffling or slicing to time.
    xs = {k: np.concatenate([v] * steps) for k, v in x.items()}
    ys = {k: np.concatenate([v] * steps) for k, v in y.items()}
    model.fit(xs, ys, batch_size=batch, epochs=1, shuffle=False, verbose=0, callbacks=[timer] if timer else [])


def measure_shape(batch: int, dtype: str, config: FitSpeedConfig, log: Callable[[str], None] = lambda line: None) -> dict:
    """frames/s of each variant at one batch size and dtype."""
    models, data, kernels, failed = {}, {}, {}, {}
    for variant in VARIANTS:
        loss_frames = config.window_size if variant == "ours_segments" else 1
        data[variant] = synthetic_batch(batch, config.window_size, loss_frames, config.seed)
        try:
            with LstmKernelCounter() as counter:
                models[variant] = build_variant(variant, dtype, config)
                _fit(models[variant], data[variant], config.warmup_steps)  # compiles
            kernels[variant] = counter.as_dict()
        except Exception as error:  # noqa: BLE001 - a variant the device cannot run is reported, not fatal
            failed[variant] = f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0]}"[:300]
            log(f"  batch {batch} {dtype} {variant} failed: {failed[variant]}")
            models.pop(variant, None)
    steps = {v: [] for v in models}
    order = list(models)
    for r in range(config.rounds):
        for variant in order[r % len(order):] + order[: r % len(order)]:
            timer = _StepTimes()
            _fit(models[variant], data[variant], config.steps, timer)
            steps[variant].extend(timer.step_s)
    frames = batch * config.window_size
    return {
        "batch": batch,
        "dtype": dtype,
        "frames_per_s": {v: float(frames / np.median(s)) for v, s in steps.items()},
        "median_step_s": {v: float(np.median(s)) for v, s in steps.items()},
        "lstm_kernels": kernels,
        "failed": failed,
    }


def device_info() -> dict:
    """The backend's devices by name, and its CUDA/cuDNN versions where it says."""
    backend = keras.backend.backend()
    info: dict = {"backend": backend}
    if backend == "jax":
        import jax

        devices = jax.devices()
        info["platform"] = devices[0].platform
        info["devices"] = [getattr(d, "device_kind", str(d)) for d in devices]
        try:  # private, and absent from CPU builds
            from jax._src.lib import cuda_versions

            if cuda_versions is not None:
                info["cudnn"] = cuda_versions.cudnn_get_version()
                info["cuda_runtime"] = cuda_versions.cuda_runtime_get_version()
        except Exception:  # noqa: BLE001 - versions are extra information
            pass
    elif backend == "tensorflow":
        import tensorflow as tf

        info["devices"] = [d.name for d in tf.config.list_physical_devices()]
    elif backend == "torch":
        import torch

        info["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] or ["cpu"]
        info["torch"] = torch.__version__
    return info


def run(config: FitSpeedConfig, log: Callable[[str], None] = lambda line: None) -> dict:
    config.validate()
    start = time.perf_counter()
    result = {"machine": machine_info(), "device": device_info(), "config": dataclasses.asdict(config), "shapes": [], "skipped": []}
    for dtype in config.dtypes:
        for batch in config.batches:
            if time.perf_counter() - start > config.budget_s:
                result["skipped"].append({"batch": batch, "dtype": dtype})
                continue
            log(f"batch {batch}, {dtype} ...")
            result["shapes"].append(measure_shape(batch, dtype, config, log))
    result["seconds"] = time.perf_counter() - start
    best = max(
        ((row["frames_per_s"].get(v, 0.0), row["batch"], row["dtype"], v) for row in result["shapes"] for v in VARIANTS if v != "keras_fit"),
        default=None,
    )
    if best:
        result["best_ours"] = {"frames_per_s": best[0], "batch": best[1], "dtype": best[2], "variant": best[3]}
    return result


def format_report(result: dict) -> str:
    device = result["device"]
    lines = [
        f"backend {device['backend']} on {', '.join(device.get('devices', [])) or 'unknown'}; "
        f"CPU {result['machine']['cpu']}; {result['seconds']:.0f} s",
        "",
        f"training frames/s under fit (window {result['config']['window_size']}, LSTM "
        f"{result['config']['num_layers']}x{result['config']['hidden_size']}, K={result['config']['truncate_bptt']})",
        "| batch | dtype | " + " | ".join(VARIANT_LABELS[v] for v in VARIANTS) + " | LSTM kernel (cuDNN/fallback calls) |",
        "|---:|---|" + "---:|" * len(VARIANTS) + "---|",
    ]
    for row in result["shapes"]:
        cells = (f"{row['frames_per_s'][v]:,.0f}" if v in row["frames_per_s"] else "failed" for v in VARIANTS)
        kernels = ", ".join(f"{v}: {k['cudnn']}/{k['fallback']}" for v, k in row["lstm_kernels"].items())
        lines.append(f"| {row['batch']} | {row['dtype']} | " + " | ".join(cells) + f" | {kernels} |")
    for row in result["shapes"]:
        lines += [f"batch {row['batch']} {row['dtype']}, {v} failed: {e}" for v, e in row["failed"].items()]
    for skipped in result["skipped"]:
        lines.append(f"batch {skipped['batch']} {skipped['dtype']}: not measured (past the {result['config']['budget_s']:.0f} s budget)")
    if "best_ours" in result:
        b = result["best_ours"]
        lines.append(f"best of ours: {b['frames_per_s']:,.0f} frames/s ({b['variant']}, batch {b['batch']}, {b['dtype']})")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keras_lstm.benchmarks.fit_speed", description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default=None, help="comma-separated batch sizes (default 64,256,1024,4096)")
    parser.add_argument("--dtypes", default=None, help="comma-separated: float32,bfloat16")
    parser.add_argument("--budget-s", type=float, default=None, help="start no new shape after this many seconds")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that it runs")
    parser.add_argument("--json", dest="json_path", default=None, help="also write the result to this file")
    args = parser.parse_args(argv)
    overrides = {} if args.budget_s is None else {"budget_s": args.budget_s}
    try:
        config = FitSpeedConfig.from_options(args.batches, args.dtypes, args.quick, **overrides)
    except ValueError as err:
        parser.error(str(err))  # one line and exit 2, as the CLI does
    result = run(config, log=lambda line: print(line, file=sys.stderr, flush=True))
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump(result, f, indent=1)
    print(format_report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
