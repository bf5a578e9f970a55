#!/usr/bin/env bash
# `keras-lstm bench gpu --backend jax` on the GPU machine, in one run of
# under 5 minutes. That machine has JAX with CUDA, no TensorFlow and no
# package index; it gets Keras from the wheels fetch_wheels.sh put in
# .gpu-wheels/. From the repository root, through the device tool:
#
#   docs/benchmarks/gpu/fetch_wheels.sh            # here, first
#   run(command="bash docs/benchmarks/gpu/run_jax.sh", carry=[".gpu-wheels"], timeout_s=420)
#
# Writes to $OUT (the folder that comes back): bench-gpu-jax.json and .txt
# (fit_speed's result and table), nvidia-smi.txt and versions.txt.
# QUICK=1: tiny sizes, to check the script itself on any machine.
set -euo pipefail
cd "$(dirname "$0")/../../.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
PY=${PY:-python3}
SITE=$(mktemp -d)
"$PY" -m pip install --quiet --no-index --no-deps --target "$SITE" .gpu-wheels/*.whl
export PYTHONPATH="$SITE:$PWD" KERAS_BACKEND=jax
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
"$PY" - > "$OUT/versions.txt" 2>&1 <<'PYEOF' || true
import jax, jaxlib, keras, numpy
print("keras", keras.__version__, "backend", keras.backend.backend())
print("jax", jax.__version__, "jaxlib", jaxlib.__version__, "numpy", numpy.__version__)
print("devices", jax.devices())
PYEOF
cat "$OUT/versions.txt"
# The budget stops new shapes in time for the JSON to be written before the 5-minute mark.
timeout 290 "$PY" -m keras_lstm.benchmarks.fit_speed ${QUICK:+--quick} --budget-s ${BUDGET_S:-200} --json "$OUT/bench-gpu-jax.json" | tee "$OUT/bench-gpu-jax.txt"
