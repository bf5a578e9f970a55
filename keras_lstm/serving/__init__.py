"""Using a trained policy: `inference` (stepping one frame at a time), `export`
(SavedModel for TF Serving), `decode` (head logits -> the controller, argmax
or sampled), `agents` (a run folder or a SavedModel, one frame in, one
controller out), `melee_state` (libmelee game state -> features) and `play`
(the real-time loop through libmelee).
"""
