#!/usr/bin/env bash
# Run HERE (a machine with PyPI), before run_jax.sh on the GPU machine: the
# wheels that machine lacks for Keras' JAX backend, into .gpu-wheels/ at the
# repository root (git-ignored; carried with `run --carry .gpu-wheels`).
# Keras (the version installed here), namex and optree, for the GPU machine's
# Python 3.12 on x86-64 (PYVER=3.11 for another Python): about 3 MB.
set -euo pipefail
cd "$(dirname "$0")/../../.."
PY=${PY:-.venv/bin/python}
KERAS=$("$PY" -c 'import importlib.metadata as m; print(m.version("keras"))')
rm -rf .gpu-wheels
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version ${PYVER:-3.12} \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    -d .gpu-wheels "keras==$KERAS" namex optree
ls -l .gpu-wheels
