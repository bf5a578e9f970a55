"""Training a policy: `train` (the trainer), `run_folder` (what a run writes
and reading it back), `run_backup` (resuming a killed run), `distribute`
(`tf.distribute` strategies) and `carried_training` (state carried across segments).
"""
