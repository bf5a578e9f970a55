"""TFRecord files written without TensorFlow.

`prepare` writes its parts through TFDS, whose only use of TensorFlow there
is `tf.io.TFRecordWriter`. Writing the same framing here lets `prepare`, and
each of Beam's worker processes, run without loading TensorFlow at all
(`keras-lstm bench data --copies 1300`: 468 MB for prepare and its two
workers, against 1,082 MB when each worker loaded TensorFlow; docs/DATA.md).

A record is: its length as a little-endian uint64, the masked CRC-32C of
those 8 bytes (uint32), the data, and the masked CRC-32C of the data.
`tests/data/test_tfrecord.py` holds the bytes equal to TensorFlow's writer's
and reads them back with `tf.data.TFRecordDataset`, which checks both CRCs.
"""

from __future__ import annotations

import os
import struct
from typing import Iterable

import google_crc32c

_MASK_DELTA = 0xA282EAD8


def masked_crc32c(data: bytes) -> int:
    """CRC-32C, rotated right by 15 bits plus a constant, as TFRecord stores
    it (a CRC of data that holds CRCs is then not trivially that CRC)."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """One record as it lies in the file."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


def write_records(path: str | os.PathLike, records: Iterable[bytes]) -> None:
    with open(path, "wb") as out:
        for data in records:
            out.write(frame(data))
