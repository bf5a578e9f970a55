"""Training a policy: `train` (the trainer), `inputs` (what it takes from its
data: a replay folder or a prepared dataset), `run_folder` (what a run writes
and reading it back), `run_backup` (resuming a killed run), `distribute`
(`tf.distribute` strategies) and `carried_training` (state carried across segments).
"""
