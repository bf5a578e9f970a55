"""One configuration of the training benchmark, in its own process so that its
peak memory is its own:

    python -m keras_lstm.benchmarks.worker SPEC.json RESULT.json

trains with `keras_lstm.training.train.train` (`carried_state=True` for the carried run) exactly as
`keras-lstm train` does, timing every training step in a callback (the
median excludes the first steps, which trace the graph) and reading the
process's peak resident memory (VmHWM, reset just before `fit`); then
evaluates the trained model as trained and as deployed
(`keras_lstm.evaluation.deploy_eval`) and measures single-frame step latency on the
trained weights. `keras_lstm.benchmarks.train_protocol` writes the spec and
reads the result.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_lstm.benchmarks.measure import StepTimer, peak_rss_mb, reset_peak_rss, rss_mb, time_calls
from keras_lstm.benchmarks.protocol import SKIP_FIRST_STEPS
from keras_lstm.data import features
from keras_lstm.evaluation.baselines import BaselineStats
from keras_lstm.evaluation.deploy_eval import evaluate_deployed
from keras_lstm.model.backbone import recurrent_param_count
from keras_lstm.serving import inference
from keras_lstm.training.run_folder import load_run
from keras_lstm.training.inputs import load_split
from keras_lstm.config import TrainConfig
from keras_lstm.training.train import train


class FitProbe(StepTimer):
    """Times each training step and reads the fit's peak memory: the RSS
    before `fit`, and the peak during it (VmHWM reset at its start when the
    kernel allows; `peak_is_fit_only` says whether it did)."""

    def __init__(self):
        super().__init__()
        self.rss_before_fit_mb = None
        self.peak_rss_fit_mb = None
        self.peak_is_fit_only = False

    def on_train_begin(self, logs=None):
        self.rss_before_fit_mb = rss_mb() or 0.0
        self.peak_is_fit_only = reset_peak_rss()

    def on_train_end(self, logs=None):
        self.peak_rss_fit_mb = peak_rss_mb()


def _median_ms(fn, steps: int) -> float:
    return float(np.median(time_calls(fn, steps, warmup=min(10, steps))[0]))


def measure_step_latency(policy, steps: int) -> dict:
    """Median single-frame latency at batch 1 (ms): the backbone step of
    `keras_lstm.serving.inference.step`, the whole policy through
    `keras_lstm.serving.inference.PolicyStepper`, and a `tf.function` of encoder ->
    `backbone.unroll` with T=1 -> heads."""
    backbone = policy.backbone
    rng = np.random.default_rng(0)
    numeric = rng.normal(size=(1, features.NUMERIC_SIZE)).astype(np.float32)
    categorical = np.zeros((1, features.CATEGORICAL_SIZE), np.int32)
    out = {}

    frame = rng.normal(size=(1, backbone.embed_size)).astype(np.float32)
    hidden = [inference.initial_hidden(1, backbone.hidden_size, backbone.num_layers, backbone.cell_type)]

    def numpy_step():
        _, hidden[0] = inference.step(backbone, frame, hidden[0])

    out["inference_step_ms"] = _median_ms(numpy_step, steps)
    out["inference_step_what"] = "keras_lstm.serving.inference.step (backbone only, numpy)"

    stepper = inference.PolicyStepper(policy)
    out["policy_stepper_ms"] = _median_ms(lambda: stepper.logits(numeric, categorical), steps)
    out["policy_stepper_what"] = "keras_lstm.serving.inference.PolicyStepper.logits (whole policy, numpy)"

    state_spec = tf.nest.map_structure(lambda _: tf.TensorSpec([1, backbone.hidden_size], tf.float32), backbone.initial_state(1))

    @tf.function(
        input_signature=[
            tf.TensorSpec([1, 1, features.NUMERIC_SIZE], tf.float32),
            tf.TensorSpec([1, 1, features.CATEGORICAL_SIZE], tf.int32),
            state_spec,
        ]
    )
    def graph_step(numeric_1x1xF, categorical_1x1xC, state):
        frames = policy.encode({"numeric": numeric_1x1xF, "categorical": categorical_1x1xC}, training=False)
        hidden, state = backbone.unroll(frames, state)
        return policy.apply_heads(hidden[:, -1], numeric_1x1xF[:, -1]), state

    x_num, x_cat = tf.constant(numeric[:, None]), tf.constant(categorical[:, None])
    state = [backbone.initial_state(1)]

    def tf_step():
        _, state[0] = graph_step(x_num, x_cat, state[0])

    out["tf_function_step_ms"] = _median_ms(tf_step, steps)
    out["tf_function_step_what"] = "tf.function: encoder -> backbone.unroll (T=1) -> heads (whole policy)"
    return out


def run_worker(spec: dict) -> dict:
    """Train and measure one configuration in this process (see the module
    docstring); returns a JSON-able dict."""
    config = TrainConfig.from_flat(**spec["config"])
    probe = FitProbe()
    start = time.perf_counter()
    summary = train(config, callbacks=[probe], verbose=0)
    frames_per_step = (config.optim.carried_streams if config.optim.carried_state else config.optim.batch_size) * config.data.window_size
    wall_train_s = time.perf_counter() - start

    steps = probe.step_s
    steady = steps[SKIP_FIRST_STEPS:] if len(steps) > SKIP_FIRST_STEPS else steps
    step_ms = float(np.median(steady) * 1000) if steady else None

    policy, run_info = load_run(config.run.output)
    data = load_split(config)
    arrays = [features.align(t, config.data.delay) for t in data.val_report.trajectories]
    stats = BaselineStats.from_json(run_info["baseline_stats"])
    gap = evaluate_deployed(policy, arrays, config.data.window_size, config.data.stride, stats) if arrays else None
    latency = measure_step_latency(policy, spec.get("latency_steps", 300))

    b = policy.backbone
    layer_params = []
    d = b.embed_size
    for _ in range(b.num_layers):
        layer_params.append(recurrent_param_count(b.cell_type, d, b.hidden_size))
        d = b.hidden_size
    return {
        "name": spec["name"],
        "backbone": spec["backbone"],
        "truncate_bptt": spec["truncate_bptt"],
        "mode": spec["mode"],
        "parameters": summary["parameters"],
        "backbone_parameters": summary["backbone_parameters"],
        "backbone_parameters_arithmetic": int(sum(layer_params)),
        "steps_timed": len(steady),
        "step_ms_median": step_ms,
        "step_ms_p90": float(np.percentile(steady, 90) * 1000) if steady else None,
        "frames_per_step": frames_per_step,
        "steady_frames_per_s": frames_per_step / (step_ms / 1000) if step_ms else None,
        "fit_frames_per_s": summary.get("train_frames_per_s"),
        "train_seconds": summary.get("train_seconds"),
        "wall_train_s": wall_train_s,
        "rss_before_fit_mb": probe.rss_before_fit_mb,
        "peak_rss_fit_mb": probe.peak_rss_fit_mb,
        "peak_is_fit_only": probe.peak_is_fit_only,
        "peak_extra_fit_mb": (probe.peak_rss_fit_mb - probe.rss_before_fit_mb) if probe.peak_is_fit_only else None,
        "val_loss": summary.get("val_loss"),
        "per_head_accuracy": summary.get("per_head_accuracy"),
        "per_head_loss": summary.get("per_head_loss"),
        "baseline_repeat_loss": summary.get("baseline_repeat_loss"),
        "baseline_repeat_accuracy": summary.get("baseline_repeat_accuracy"),
        "baseline_prior_loss": summary.get("baseline_prior_loss"),
        "val_frames": summary.get("frames"),
        "train_windows": summary.get("train_windows"),
        "epochs_run": summary.get("epochs_run"),
        "deploy": gap,
        "latency": latency,
        "run_dir": config.run.output,
    }


def main(argv: list[str]) -> int:
    spec_path, result_path = argv
    spec = json.loads(Path(spec_path).read_text())
    result = run_worker(spec)
    Path(result_path).write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
