"""Controller decoding, checked against clips that press known inputs."""

import numpy as np
import pytest

from keras_lstm.data import controller
from keras_lstm.data.features import game_to_trajectories
from keras_lstm.data.replays import read_game

from conftest import CLIPS


def clip(name):
    trajectories, _ = game_to_trajectories(read_game(CLIPS / f"peppi_{name}.slp"), name)
    return trajectories[0]  # P1 is the human pressing the inputs; P2 is a CPU


def first(mask):
    hits = np.flatnonzero(mask)
    return int(hits[0]) if len(hits) else None


def test_buttons_abxy_presses_a_b_x_y_in_turn():
    buttons = clip("buttons_abxy").targets["buttons"]
    order = [controller.BUTTONS.index(b) for b in "ABXY"]
    firsts = [first(buttons[:, i] > 0) for i in order]
    assert None not in firsts
    assert firsts == sorted(firsts)
    # only those four buttons are ever pressed, and never two at once
    others = [i for i in range(8) if i not in order]
    assert buttons[:, others].sum() == 0
    assert buttons.sum(1).max() == 1


def test_buttons_lrz_and_dpad_up():
    lrzs = clip("buttons_lrzs").targets
    for name in "LRZ":
        assert lrzs["buttons"][:, controller.BUTTONS.index(name)].any(), name
    # the analog shoulder goes all the way through its 5 classes
    assert set(np.unique(lrzs["shoulder"])) == set(range(controller.SHOULDER_CLASSES))
    dpad = clip("dpad_udlr").targets["buttons"]
    assert dpad[:, controller.BUTTONS.index("D_UP")].any()
    assert dpad[:, [controller.BUTTONS.index(b) for b in "ABXYZLR"]].sum() == 0


@pytest.mark.parametrize("name,x_head,y_head", [("joystick_udlr", "main_x", "main_y"), ("cstick_udlr", "c_x", "c_y")])
def test_sticks_go_up_down_left_right_in_order(name, x_head, y_head):
    targets = clip(name).targets
    x, y = targets[x_head], targets[y_head]
    up, down, left, right = first(y >= 14), first(y <= 2), first(x <= 2), first(x >= 14)
    assert None not in (up, down, left, right)
    assert up < down < left < right
    # the other stick never leaves the centre
    other = ("c_x", "c_y") if x_head == "main_x" else ("main_x", "main_y")
    centre = controller.STICK_CLASSES // 2
    assert all((targets[h] == centre).all() for h in other)


def test_stick_classes_round_trip_and_centre():
    values = np.linspace(-1, 1, controller.STICK_CLASSES)
    classes = controller.stick_to_class(values)
    assert classes.tolist() == list(range(controller.STICK_CLASSES))
    np.testing.assert_allclose(controller.class_to_stick(classes), values, atol=1e-6)
    assert controller.stick_to_class(np.array([0.0, 0.05, -0.05]))[0] == 8
    assert controller.stick_to_class(np.array([np.nan, 5.0, -5.0])).tolist() == [8, 16, 0]


def test_shoulder_classes():
    assert controller.shoulder_to_class(np.array([0.0, 0.3, 0.5, 0.8, 1.0])).tolist() == [0, 1, 2, 3, 4]


def test_buttons_from_bits():
    bits = np.array([0x0100 | 0x0800, 0x0010, 0x0008, 0x1000])  # A+Y, Z, D-up, Start (not a target)
    out = controller.buttons_from_bits(bits)
    assert out.shape == (4, 8)
    assert [controller.BUTTONS[i] for i in np.flatnonzero(out[0])] == ["A", "Y"]
    assert [controller.BUTTONS[i] for i in np.flatnonzero(out[1])] == ["Z"]
    assert [controller.BUTTONS[i] for i in np.flatnonzero(out[2])] == ["D_UP"]
    assert out[3].sum() == 0
