"""Times an exported policy's signatures as a server would call them: loaded
with `tf.saved_model.load` in a process that imports TensorFlow and numpy
only (never this project). Run by `keras_lstm.benchmarks.serve`:

    python serve_worker.py SAVED_MODEL SPEC.json RESULT.json

SPEC: `batches` (games per `step` call), `budget_s` (timed seconds per
batch, at least `min_calls` calls), `default_calls` (`serving_default`
calls), `intra_op_threads` and `inter_op_threads` (TensorFlow's thread
pools; 0: its default). RESULT: per batch the median and p99 ms per call;
the same for `serving_default`, for a saved signature that only returns its
input, and for one that only multiplies a row by each of the export's
weight matrices (and numpy doing the same), the least any batch-1 call of
this model does; the thread pools it ran with; and whether any project
module was imported (it must not be).
"""

import json
import sys
import time

import numpy as np
import tensorflow as tf


def _time(fn, calls: int, warmup: int) -> list:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1e3)
    return out


def _summary(ms: list) -> dict:
    return {"median_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99)), "calls": len(ms)}


def _empty_signature(numeric_size: int, categorical_size: int, frame: dict):
    """A call of a saved signature with serving_default's inputs that only
    returns its input: what any signature call costs before its graph runs."""
    import tempfile

    class Empty(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, numeric_size], tf.float32, name="numeric"),
                                      tf.TensorSpec([1, categorical_size], tf.int32, name="categorical")])
        def serve(self, numeric, categorical):
            return {"numeric": numeric}

    with tempfile.TemporaryDirectory(prefix="keras-lstm-empty-") as folder:
        module = Empty()
        tf.saved_model.save(module, folder, signatures={"serving_default": module.serve})
        signature = tf.saved_model.load(folder).signatures["serving_default"]  # all in memory once loaded
    return lambda: signature(**frame)


def _weight_matrices(signature) -> list:
    """The export's matrices that a frame multiplies by (every `kernel` and
    `recurrent_kernel`; embedding tables are only indexed)."""
    return [v.numpy() for v in signature.variables if v.name.rsplit("/", 1)[-1].startswith(("kernel", "recurrent_kernel"))]


def _weights_signature(matrices: list, numeric_size: int, categorical_size: int, frame: dict):
    """A call of a saved signature with serving_default's inputs that
    multiplies a `[1, rows]` row by each weight matrix once and returns one
    number: reading every weight once through TensorFlow's MatMul at batch 1,
    the least any call of this model does beyond the call itself."""
    import tempfile

    class Weights(tf.Module):
        def __init__(self):
            super().__init__()
            self.matrices = [tf.Variable(m) for m in matrices]

        @tf.function(input_signature=[tf.TensorSpec([1, numeric_size], tf.float32, name="numeric"),
                                      tf.TensorSpec([1, categorical_size], tf.int32, name="categorical")])
        def serve(self, numeric, categorical):
            total = [tf.reduce_sum(tf.matmul(tf.tile(numeric[:, :1], [1, m.shape[0]]), m)) for m in self.matrices]
            return {"sum": tf.add_n(total)}

    with tempfile.TemporaryDirectory(prefix="keras-lstm-weights-") as folder:
        module = Weights()
        tf.saved_model.save(module, folder, signatures={"serving_default": module.serve})
        signature = tf.saved_model.load(folder).signatures["serving_default"]
    return lambda: signature(**frame)


def main(saved_model: str, spec_path: str, result_path: str) -> None:
    spec = json.loads(open(spec_path).read())
    # Before the first op: the pools are made once.
    tf.config.threading.set_intra_op_parallelism_threads(spec.get("intra_op_threads", 0))
    tf.config.threading.set_inter_op_parallelism_threads(spec.get("inter_op_threads", 0))
    loaded = tf.saved_model.load(saved_model)
    step, serving_default, reset = (loaded.signatures[name] for name in ("step", "serving_default", "reset"))
    inputs = step.structured_input_signature[1]
    numeric_size, categorical_size = inputs["numeric"].shape[-1], inputs["categorical"].shape[-1]
    layers, hidden = inputs["h"].shape[1], inputs["h"].shape[2]
    rng = np.random.default_rng(0)
    rows = []
    for batch in spec["batches"]:
        args = {
            "numeric": tf.constant(rng.normal(size=(batch, numeric_size)).astype(np.float32)),
            "categorical": tf.zeros((batch, categorical_size), tf.int32),  # latency does not depend on values
            **{name: tf.zeros((batch, layers, hidden)) for name in inputs if name in ("h", "c")},
        }
        one = _time(lambda: step(**args), 3, 3)  # also compiles, with XLA
        calls = max(spec["min_calls"], int(spec["budget_s"] * 1e3 / max(np.median(one), 1e-3)))
        rows.append({"batch": batch, **_summary(_time(lambda: step(**args), calls, 5))})
    frame = {"numeric": tf.constant(rng.normal(size=(1, numeric_size)).astype(np.float32)), "categorical": tf.zeros((1, categorical_size), tf.int32)}
    reset()
    default = _summary(_time(lambda: serving_default(**frame), spec["default_calls"], 50))
    floor = _summary(_time(_empty_signature(numeric_size, categorical_size, frame), spec["default_calls"], 50))
    matrices = _weight_matrices(step)
    weights = _summary(_time(_weights_signature(matrices, numeric_size, categorical_size, frame), spec["default_calls"], 50))
    rows_1 = [np.ones((1, m.shape[0]), np.float32) for m in matrices]
    numpy_weights = _summary(_time(lambda: sum(float((r @ m).sum()) for r, m in zip(rows_1, matrices)), spec["default_calls"], 50))
    project = sorted(name for name in sys.modules if name.split(".")[0] == "keras_lstm")
    with open(result_path, "w") as out:
        json.dump({"step": rows, "serving_default": default, "empty_signature": floor, "weights_signature": weights,
                   "numpy_weights": numpy_weights, "weight_bytes": int(sum(m.nbytes for m in matrices)), "project_modules": project,
                   "threads": [tf.config.threading.get_intra_op_parallelism_threads(), tf.config.threading.get_inter_op_parallelism_threads()]},
                  out)


if __name__ == "__main__":
    main(*sys.argv[1:4])
