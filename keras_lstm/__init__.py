"""keras-lstm: behavioural cloning of Melee from Slippi replays with an LSTM backbone.

Names are imported on first use, so that reading replays (and `--help`) does
not pay TensorFlow's start-up time.
"""

import importlib

_EXPORTS = {
    "RecurrentBackbone": "keras_lstm.backbone",
    "LSTMBackbone": "keras_lstm.backbone",
    "GRUBackbone": "keras_lstm.backbone",
    "build_backbone": "keras_lstm.backbone",
    "BehaviorCloningPolicy": "keras_lstm.policy",
    "build_policy": "keras_lstm.policy",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'keras_lstm' has no attribute {name!r}")


def __dir__():
    return __all__
