"""The bots `keras-lstm bench umi` times, each started as its own process on
the arena's socket, as the championship runs them (TensorFlow is never
imported here):

    python -m keras_lstm.benchmarks.umi_bots policy POLICY.npz DELAY   # a keras-lstm policy
    python -m keras_lstm.benchmarks.umi_bots echo                      # the protocol's floor

The echo bot answers each game with the controller its frame carries: what a
bot costs with no model at all.
"""

from __future__ import annotations

import sys

import numpy as np
import umi

from keras_lstm.data import umi_frames


class EchoBot(umi.Bot):
    name = "echo"
    characters = "ALL"
    delay = 0  # the bench's arena welcomes it at any delay

    def setup(self, session) -> None:
        pass

    def act(self, batch):
        return umi.Actions(ctrl=umi_frames.controller_rows(batch.frames["players"][:, 0]["controller"]))


def main(argv: list[str]) -> None:
    if argv[:1] == ["echo"]:
        umi.serve(EchoBot(), [])
        return
    from keras_lstm.model.numpy_policy import NumpyPolicy
    from keras_lstm.serving.umi_bot import NumpyActor, bot_class

    _, path, delay = argv
    policy = NumpyPolicy.load(path)
    umi.serve(bot_class("keras-lstm-bench", "ALL", int(delay))(NumpyActor(policy)), [])


if __name__ == "__main__":
    np.seterr(all="ignore")
    main(sys.argv[1:])
