"""The `keras-lstm bench` benchmarks, one module per job:

- `measure`: the measuring helpers they share (machine and code version,
  peak memory, call and step timers, the default replay folder);
- `protocol`, `train_protocol`, `worker`, `report`: `bench train` (the
  protocol's settings; running every configuration in its own process; what
  each such process does; the Markdown report and plots);
- `train_speed`: `bench train-speed`;
- `inference`: `bench inference`;
- `serve`, `serve_worker`: `bench serve` (the worker times an export in a
  process without project code);
- `gpu`: `bench gpu` (TensorFlow);
- `fit_speed`: `bench gpu --backend jax` (any Keras backend, no TensorFlow; `docs/benchmarks/gpu/run_jax.sh` runs it on the GPU machine);
- `data`, `scale`: `bench data` and `bench data --copies`;
- `umi`, `umi_bots`: `bench umi`;
- `evaluation`: `bench evaluate` (one pass against windows);
- `segments`: `bench segments` (the corpus recipe's rows and segment lengths).
"""
