"""The `keras-lstm` command: a thin typer shell over `keras_lstm`."""

import os

# TensorFlow prints start-up chatter (oneDNN, CPU features) on stderr; a
# command-line user wants our output only. Respect an explicit setting.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
