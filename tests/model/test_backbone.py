"""The backbone contract: shapes, layers, exact parameter counts, serialisation."""

import keras
import numpy as np
import pytest

from keras_lstm import GRUBackbone, LSTMBackbone, build_backbone
from keras_lstm.model.backbone import recurrent_param_count


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_shape_and_structure(cell):
    backbone = build_backbone(cell, embed_size=12, hidden_size=8, num_layers=3, dropout=0.2)
    assert isinstance(backbone, keras.Model)
    x = np.random.default_rng(0).normal(size=(4, 7, 12)).astype("float32")
    assert tuple(backbone(x).shape) == (4, 8)
    assert tuple(backbone(x[:, :1]).shape) == (4, 8)  # any sequence length
    kinds = [type(layer).__name__ for layer in backbone.layers[1:]]
    expected = ["LSTM" if cell == "lstm" else "GRU", "Dropout"] * 3 + ["LastTimestep"]
    assert kinds == expected
    assert all(layer.return_sequences for layer in backbone.recurrent_layers)


def test_output_is_the_last_timestep():
    backbone = build_backbone("lstm", embed_size=6, hidden_size=5, num_layers=2)
    x = np.random.default_rng(1).normal(size=(2, 9, 6)).astype("float32")
    seq = x
    for layer in backbone.recurrent_layers:
        seq = layer(seq)
    np.testing.assert_allclose(backbone(x), seq[:, -1], atol=1e-6)


def test_parameter_counts_are_exact():
    lstm = LSTMBackbone(embed_size=128)  # defaults: hidden 256, 2 layers
    gru = GRUBackbone(embed_size=128)
    assert lstm.count_params() == 919_552  # 4*(256*(128+256)+256) + 4*(256*(256+256)+256)
    assert lstm.count_params() == recurrent_param_count("lstm", 128, 256) + recurrent_param_count("lstm", 256, 256)
    assert gru.count_params() == recurrent_param_count("gru", 128, 256) + recurrent_param_count("gru", 256, 256)
    assert gru.count_params() < lstm.count_params()


@pytest.mark.parametrize("cls", [LSTMBackbone, GRUBackbone])
def test_keras_file_round_trip(tmp_path, cls):
    backbone = cls(embed_size=6, hidden_size=5, num_layers=2, dropout=0.3)
    x = np.random.default_rng(2).normal(size=(3, 4, 6)).astype("float32")
    path = tmp_path / "backbone.keras"
    backbone.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is cls
    assert loaded.get_config() == backbone.get_config()
    np.testing.assert_allclose(loaded(x), backbone(x), atol=1e-6)
    clone = cls.from_config(backbone.get_config())
    assert clone.count_params() == backbone.count_params()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"hidden_size": 0}, "hidden_size"),
        ({"num_layers": -1}, "num_layers"),
        ({"dropout": 1.0}, "dropout"),
        ({"backbone": "transformer"}, "backbone"),
    ],
)
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_backbone(**{"embed_size": 4, **kwargs})
