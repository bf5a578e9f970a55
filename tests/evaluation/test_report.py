"""The evaluation summary as text: the loss table as before, then the
change-frame accuracy beside both baselines and the calibration error."""

from keras_lstm.data import controller
from keras_lstm.evaluation.report import format_summary


def per_head(value):
    return {h: value for h in controller.HEADS}


BASE = {
    "frames": 1234,
    "val_loss": 2.0,
    "per_head_accuracy": per_head(0.9),
    "baseline_repeat_loss": 3.0,
    "baseline_repeat_accuracy": per_head(0.95),
    "baseline_prior_loss": 5.8,
    "baseline_prior_accuracy": per_head(0.5),
    "replays_used": 3,
}
DECISION_QUALITY = {
    "change_frames": {**per_head(57), "c_y": 0, "buttons": 1500},
    "change_frame_accuracy": {**per_head(0.25), "c_y": None},
    "baseline_repeat_change_frame_accuracy": {**per_head(0.0), "c_y": None},
    "baseline_prior_change_frame_accuracy": {**per_head(0.125), "c_y": None},
    "predicted_changes": {**per_head(40), "c_y": 0},
    "predicted_change_precision": {**per_head(0.375), "c_y": None},
    "calibration_ece": per_head(0.0321),
    "calibration_bins": {h: {"confidence": [None] * 15, "accuracy": [None] * 15, "count": [0] * 15} for h in controller.HEADS},
}


def test_summary_shows_change_frames_and_calibration_per_head():
    text = format_summary({**BASE, **DECISION_QUALITY})
    lines = text.splitlines()
    old = format_summary(BASE).splitlines()
    assert lines[: len(old) - 1] == old[:-1]  # the loss table's lines as they were, first
    assert lines[-1] == old[-1]  # the counts last
    header = lines[1]  # the loss table's header: one column per head
    row = {line[:26].strip(): line for line in lines if line.startswith(("  ", "calibration error"))}
    assert "1,500" in row["change frames"] and "57" in row["change frames"]
    assert row["policy"].split()[1:] == ["0.250", "0.250", "0.250", "0.250", "-", "0.250"]
    assert row["repeat-prev"].split()[1:] == ["0.000", "0.000", "0.000", "0.000", "-", "0.000"]
    assert row["class prior"].split()[2:] == ["0.125", "0.125", "0.125", "0.125", "-", "0.125"]
    assert row["calibration error (ECE)"].split()[3:] == ["0.0321"] * 6
    assert row["policy changes"].split()[2:] == ["40", "40", "40", "40", "0", "40"]
    assert row["...right"].split()[1:] == ["0.375", "0.375", "0.375", "0.375", "-", "0.375"]
    # each value sits under its head's column in the loss table
    for i, head in enumerate(controller.HEADS):
        end = header.index(head) + len(head)
        assert row["policy"][end - 5 : end] == ("    -" if head == "c_y" else "0.250"), head
    assert "15 confidence bins" in text and "by construction" in text


def test_summary_shows_the_accuracy_at_each_keep_bias_down_to_repeating():
    keep_bias = {"0.5": per_head(0.92), "4.0": {**per_head(0.94), "buttons": 0.96}}
    lines = format_summary({**BASE, **DECISION_QUALITY, "keep_bias_accuracy": keep_bias}).splitlines()
    row = {line[:26].strip(): line for line in lines if line.startswith("  keep bias")}
    assert list(row) == ["keep bias 0 (policy)", "keep bias 0.5", "keep bias 4.0", "keep bias inf (repeat)"]
    assert row["keep bias 0 (policy)"].split()[-6:] == ["0.9000"] * 6
    assert row["keep bias 4.0"].split()[-6:] == ["0.9600"] + ["0.9400"] * 5
    assert row["keep bias inf (repeat)"].split()[-6:] == ["0.9500"] * 6
    assert any(line.startswith("accuracy with a bias toward the previous input") for line in lines)


def test_summary_without_the_new_keys_still_formats():
    text = format_summary(BASE)
    assert "change frames" not in text and "calibration" not in text
    assert "policy beats both baselines" in text
