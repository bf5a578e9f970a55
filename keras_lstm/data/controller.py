"""The controller: how a GameCube pad state becomes targets and back.

Targets follow the two best-known Melee imitation projects: 8 digital buttons
as independent Bernoullis, each stick axis as a 17-way class (16 buckets and
the centre, evenly spaced over [-1, 1]), and the analog shoulder as a 5-way
class over [0, 1].
"""

from __future__ import annotations

import numpy as np

# Bit of each button in Slippi's pre-frame `buttons_physical` field.
BUTTON_BITS = {
    "A": 0x0100,
    "B": 0x0200,
    "X": 0x0400,
    "Y": 0x0800,
    "Z": 0x0010,
    "L": 0x0040,
    "R": 0x0020,
    "D_UP": 0x0008,
}
BUTTONS = tuple(BUTTON_BITS)

STICK_CLASSES = 17  # 16 buckets + centre
SHOULDER_CLASSES = 5
STICK_HEADS = ("main_x", "main_y", "c_x", "c_y")
CLASS_HEADS = STICK_HEADS + ("shoulder",)
HEADS = ("buttons",) + CLASS_HEADS
HEAD_CLASSES = {**{h: STICK_CLASSES for h in STICK_HEADS}, "shoulder": SHOULDER_CLASSES}

# Width of the continuous "previous controller" input fed back to the policy.
CONTROLLER_INPUT_SIZE = len(BUTTONS) + len(STICK_HEADS) + 1


def buttons_from_bits(bits_T: np.ndarray) -> np.ndarray:
    """`[T]` physical button bitmasks -> `[T, 8]` float32 0/1 in `BUTTONS` order."""
    bits_T = np.asarray(bits_T, dtype=np.int64)
    masks = np.array([BUTTON_BITS[b] for b in BUTTONS], dtype=np.int64)
    return ((bits_T[:, None] & masks[None, :]) != 0).astype(np.float32)


def stick_to_class(value: np.ndarray) -> np.ndarray:
    """Axis value in [-1, 1] -> class 0..16; class 8 is the centre."""
    value = np.clip(np.nan_to_num(np.asarray(value, dtype=np.float32)), -1.0, 1.0)
    return np.rint((value + 1.0) * (STICK_CLASSES - 1) / 2.0).astype(np.int32)


def class_to_stick(cls: np.ndarray) -> np.ndarray:
    """Class 0..16 -> the axis value at the bucket's centre."""
    return np.asarray(cls, dtype=np.float32) * 2.0 / (STICK_CLASSES - 1) - 1.0


def shoulder_to_class(value: np.ndarray) -> np.ndarray:
    """Analog shoulder in [0, 1] -> class 0..4."""
    value = np.clip(np.nan_to_num(np.asarray(value, dtype=np.float32)), 0.0, 1.0)
    return np.rint(value * (SHOULDER_CLASSES - 1)).astype(np.int32)


def class_to_shoulder(cls: np.ndarray) -> np.ndarray:
    return np.asarray(cls, dtype=np.float32) / (SHOULDER_CLASSES - 1)


def encode_targets(
    buttons_bits_T: np.ndarray,
    main_x_T: np.ndarray,
    main_y_T: np.ndarray,
    c_x_T: np.ndarray,
    c_y_T: np.ndarray,
    shoulder_T: np.ndarray,
) -> dict[str, np.ndarray]:
    """Raw pad state over T frames -> the six target arrays, keyed by head."""
    return {
        "buttons": buttons_from_bits(buttons_bits_T),
        "main_x": stick_to_class(main_x_T),
        "main_y": stick_to_class(main_y_T),
        "c_x": stick_to_class(c_x_T),
        "c_y": stick_to_class(c_y_T),
        "shoulder": shoulder_to_class(shoulder_T),
    }


def targets_as_input(targets: dict[str, np.ndarray]) -> np.ndarray:
    """Targets -> `[T, CONTROLLER_INPUT_SIZE]` floats, the quantised pad state
    the policy sees as its own previous input."""
    cols = [targets["buttons"]]
    cols += [class_to_stick(targets[h])[:, None] for h in STICK_HEADS]
    cols.append(class_to_shoulder(targets["shoulder"])[:, None])
    return np.concatenate(cols, axis=1).astype(np.float32)
