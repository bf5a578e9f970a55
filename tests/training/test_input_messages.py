"""When the options leave too little data to train or validate on, the line
says which option did it: the filters that left every game out, a delay or
window longer than every game, a batch larger than the windows, a frame cap
that leaves validation less than one window."""

import pytest
from typer.testing import CliRunner

from keras_lstm.config import TrainConfig
from keras_lstm.training import inputs

from conftest import CLIPS

SHORT = ("peppi_joystick_udlr.slp", "peppi_buttons_abxy.slp", "peppi_dpad_udlr.slp", "peppi_shield_drop.slp")  # 342-425 frames
TINY = dict(embed_size=8, hidden_size=8, num_layers=1, window_size=10, stride=10, batch_size=4, epochs=1, val_fraction=0.25)


@pytest.fixture(scope="module")
def clips(tmp_path_factory, replays_dir):
    folder = tmp_path_factory.mktemp("clips")
    for name in SHORT:
        (folder / name).symlink_to(CLIPS / name)
    return folder


@pytest.mark.parametrize(
    "options, message",
    [
        ({"characters": "pikachu"}, r"no usable replay for training \(0 of 4 files skipped, 1 usable file\(s\) held out for validation; "
                                    r"left out by the filters: --characters: 4 players\)"),
        ({"min_frames": 10_000, "humans_only": True}, r"left out by the filters: --min-frames: 4 games\)"),
        ({"delay": 5000}, r"no training window: --delay 5000 leaves every training game no window \(the longest has \d+ frames; "
                          r"a window of --window-size 10 needs 5,011 with the delay\)"),
        ({"window_size": 5000}, r"no training window: --window-size 5000 is longer than every training game \(the longest has \d+ frames; "
                                r"one window needs 5,001\)"),
        ({"max_frames": 8}, r"no training window: --window-size 10 is longer than every training game within --max-frames 8"),
        ({"batch_size": 10_000}, r"only \d+ training windows \(--window-size 10, --stride 10\), fewer than one batch of --batch-size 10000"),
        ({"max_frames": 100, "window_size": 30, "batch_size": 1}, r"--max-frames 100 leaves validation 25 frames \(x --val-fraction 0.25\), "
                                                                  r"fewer than one window needs \(31\)"),
    ],
)
def test_too_little_data_names_the_option_that_caused_it(clips, options, message):
    config = TrainConfig.from_flat(replays=str(clips), **{**TINY, **options})
    with pytest.raises(ValueError, match=message) as caught:
        inputs.load_split(config)
    assert str(caught.value).startswith(f"{clips}: ")


def test_enough_data_still_loads(clips):
    data = inputs.load_split(TrainConfig.from_flat(replays=str(clips), **TINY))
    assert len(data.train) >= TINY["batch_size"] and len(data.val) > 0


def test_the_cli_says_it_in_one_line(clips, tmp_path):
    from keras_lstm.cli.main import app

    args = ["train", "--temporal", "--replays", str(clips), "--output", str(tmp_path / "run"), "--delay", "5000"]
    args += [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert "--delay 5000 leaves every training game no window" in result.output
