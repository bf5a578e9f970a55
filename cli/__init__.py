"""The `keras-lstm` command: a thin typer shell over `keras_lstm`."""

import importlib.util
import os
import sys

MISSING_TENSORFLOW = (
    "keras-lstm needs TensorFlow, which comes with an extra: pip install 'keras-lstm[cpu]' "
    "(or 'keras-lstm[gpu]' for the CUDA build; never both)"
)
if importlib.util.find_spec("tensorflow") is None:  # checked without importing it: one line, not a traceback
    sys.stderr.write(f"error: {MISSING_TENSORFLOW}\n")
    raise SystemExit(2)

# TensorFlow prints start-up chatter (oneDNN, CPU features) on stderr; a
# command-line user wants our output only. Respect an explicit setting.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
