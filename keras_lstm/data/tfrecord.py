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


def count_records(path: str | os.PathLike) -> int:
    """The records in a TFRecord file, walking its length headers only (the
    data is not read); ValueError when the file does not end exactly after
    its last whole record (truncated) or a length's CRC is wrong."""
    count, offset = 0, 0
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        while offset < size:
            header = f.read(12)
            if len(header) < 12:
                raise ValueError(f"{path}: truncated (a record header cut off at byte {offset} of {size})")
            length = struct.unpack("<Q", header[:8])[0]
            if struct.unpack("<I", header[8:])[0] != masked_crc32c(header[:8]):
                raise ValueError(f"{path}: damaged (a record length with a wrong checksum at byte {offset})")
            offset += 12 + length + 4
            if offset > size:
                raise ValueError(f"{path}: truncated (a record of {length} bytes cut off at byte {size})")
            f.seek(offset)
            count += 1
    return count
