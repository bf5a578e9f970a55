"""Judging a policy: `evaluate` (windowed loss and accuracy), `baselines` (what
every loss is compared with), `change_frames` (accuracy where the input
changes), `calibration` (confidence against accuracy, the ECE) and
`reliability_plot` (its PNG), `deploy_eval` (whole games, state carried, as
deployed) and `report` (the human-readable summaries the commands print).
"""
