"""TFRecord files written without TensorFlow equal TensorFlow's own."""

import numpy as np
import tensorflow as tf

from keras_lstm.data import tfrecord


def test_records_are_the_bytes_tensorflow_writes_and_read_back(tmp_path):
    rng = np.random.default_rng(0)
    records = [b"", b"x", rng.bytes(1000), rng.bytes(70_000)]
    ours, theirs = tmp_path / "ours.tfrecord", tmp_path / "theirs.tfrecord"
    tfrecord.write_records(ours, records)
    with tf.io.TFRecordWriter(str(theirs)) as writer:
        for record in records:
            writer.write(record)
    assert ours.read_bytes() == theirs.read_bytes()
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(ours))] == records


def test_a_damaged_record_fails_the_crc_check(tmp_path):
    path = tmp_path / "damaged.tfrecord"
    tfrecord.write_records(path, [b"abcdefgh" * 10])
    data = bytearray(path.read_bytes())
    data[20] ^= 1  # one bit of the record's data
    path.write_bytes(bytes(data))
    try:
        list(tf.data.TFRecordDataset(str(path)))
    except tf.errors.DataLossError:
        return
    raise AssertionError("TensorFlow read a record whose CRC does not match")
