"""The export's held-state signature equals the `stateful=True` twin, call for
call, over whole games with a reset between them.

`serving_default` holds the state in variables and steps one frame per call,
as the design card's `stateful=True` twin does; the export writes that step
with `recurrent.tf_step` (fewer ops per call). This holds the two equal: the
same frames through encoder -> twin -> heads, and through the signature.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import CLIPS
from keras_lstm.data import controller, features
from keras_lstm.data.replays import read_game
from keras_lstm.model.policy import build_policy
from keras_lstm.serving import export
from keras_lstm.serving.inference import reset_twin, stateful_twin

GAMES_PLAYED = [CLIPS / "peppi_short_game_tbh10.slp", CLIPS / "peppi_joystick_udlr.slp"]


def game_frames(path):
    trajectories, _ = features.game_to_trajectories(read_game(path), path)
    arrays = features.align(trajectories[0], 0)
    return arrays.numeric, arrays.categorical


@pytest.mark.parametrize("cell_type", ["lstm", "gru"])
def test_serving_default_equals_the_stateful_twin_call_for_call(cell_type):
    keras.utils.set_random_seed(5)
    policy = build_policy(cell_type, embed_size=8, hidden_size=16, num_layers=2)
    module = export.PolicyServingModule(policy)
    twin = stateful_twin(policy.backbone)

    @tf.function
    def twin_probs(numeric_1xF, categorical_1xC):
        frame = policy.encode({"numeric": numeric_1xF[:, None], "categorical": categorical_1xC[:, None]})
        return export.decode_controller_tf(policy.apply_heads(twin(frame, training=False), numeric_1xF))

    calls = 0
    for path in GAMES_PLAYED:  # two games: the reset must clear what the first left
        module.reset()
        reset_twin(twin)
        numeric, categorical = game_frames(path)
        for t in range(len(numeric)):
            served = module.serving_default(numeric[t : t + 1], categorical[t : t + 1])
            want = twin_probs(tf.constant(numeric[t : t + 1]), tf.constant(categorical[t : t + 1]))
            for key in ("buttons_prob", *[f"{h}_prob" for h in controller.CLASS_HEADS]):
                np.testing.assert_allclose(served[key].numpy(), want[key].numpy(), atol=2e-5, err_msg=f"{path.name} frame {t} {key}")
            calls += 1
    assert calls > 200  # every frame of both games
