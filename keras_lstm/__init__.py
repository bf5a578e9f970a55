"""keras-lstm: behavioural cloning of Melee from Slippi replays with an LSTM backbone.

Names are imported on first use, so that reading replays (and `--help`) does
not pay TensorFlow's start-up time.
"""

import importlib

_EXPORTS = {
    "RecurrentBackbone": "keras_lstm.model.backbone",
    "LSTMBackbone": "keras_lstm.model.backbone",
    "GRUBackbone": "keras_lstm.model.backbone",
    "build_backbone": "keras_lstm.model.backbone",
    "BehaviorCloningPolicy": "keras_lstm.model.policy",
    "build_policy": "keras_lstm.model.policy",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'keras_lstm' has no attribute {name!r}")


def __dir__():
    return __all__
