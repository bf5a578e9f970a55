"""Apache Beam's Python SDK worker, with its standard error silenced: the
process `keras-lstm prepare` starts for each local worker.

A worker writes its start-up notes and TensorFlow's to standard error (at
INFO, before any option can lower the level), which would be mixed into the
progress bar and the skipped-file lines. What matters of a worker comes back
another way: an exception in a part reaches the launching process through
Beam, with its traceback, and files and records through the progress folder
(`keras_lstm.data.parts`).

Run as `python -m keras_lstm.data.beam_worker` (Beam passes its own
arguments and environment).
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    from apache_beam.runners.worker import sdk_worker_main

    sdk_worker_main.main(sys.argv)


if __name__ == "__main__":
    main()
