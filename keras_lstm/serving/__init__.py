"""Using a trained policy: `inference` (stepping one frame at a time), `export`
(SavedModel for TF Serving), `melee_state` (libmelee game state -> features)
and `play` (the real-time loop through libmelee).
"""
