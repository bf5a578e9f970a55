"""Judging a policy: `evaluate` (windowed loss and accuracy), `baselines` (what
every loss is compared with), `deploy_eval` (whole games, state carried, as
deployed) and `report` (the human-readable summaries the commands print).
"""
