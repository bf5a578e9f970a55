"""Data: replays in, training examples out. `replays` reads `.slp` files,
`features` and `controller` turn a game into per-frame inputs and targets,
`trajectories` reads a folder, `windows` cuts windows and splits by game;
`tfds_dataset`, `dataset_swap` and `pipeline` prepare a dataset and stream it.
"""
