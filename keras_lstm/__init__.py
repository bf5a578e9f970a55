"""keras-lstm: behavioural cloning of Melee from Slippi replays with an LSTM backbone."""

from keras_lstm.backbone import GRUBackbone, LSTMBackbone, RecurrentBackbone, build_backbone
from keras_lstm.policy import BehaviorCloningPolicy, build_policy

__all__ = [
    "BehaviorCloningPolicy",
    "GRUBackbone",
    "LSTMBackbone",
    "RecurrentBackbone",
    "build_backbone",
    "build_policy",
]
