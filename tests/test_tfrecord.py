import gzip
import hashlib
import os
import subprocess
import sys
import time

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402
from imgprep.files.tfrecord import (  # noqa: E402
    TFRecordWriter,
    bytes_feature,
    encode_example,
    float_feature,
    int64_feature,
    iter_records,
    record_index,
)


def tfrecord2idx(shard, index) -> None:
    """The tfrecord package's own tool, in a process of its own: its example_pb2 and
    TensorFlow's register the same protobuf names, so one process cannot import both."""
    command = [sys.executable, "-m", "tfrecord.tools.tfrecord2idx", str(shard), str(index)]
    subprocess.run(command, check=True, capture_output=True, timeout=60)


RECORDS = [b"", b"a", b"hello world" * 100, bytes(range(256)) * 40]


def tf_example(features: dict) -> bytes:
    def feature(kind, values):
        if kind == "bytes":
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
        if kind == "int64":
            return tf.train.Feature(int64_list=tf.train.Int64List(value=values))
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))

    message = tf.train.Example(
        features=tf.train.Features(feature={k: feature(*v) for k, v in features.items()})
    )
    return message.SerializeToString(deterministic=True)


def test_encode_example_matches_tensorflow():
    floats = np.random.default_rng(0).standard_normal(1000)
    spec = {
        "image/encoded": ("bytes", [bytes(range(256))]),
        "image/class/text": ("bytes", ["café, naïve ☃".encode()]),
        "empty/bytes": ("bytes", []),
        "empty/int64": ("int64", []),
        "empty/float": ("float", []),
        "bytes/several": ("bytes", [b"", b"x", b"y" * 300]),
        "int/mixed": ("int64", [0, 1, 127, 128, 300, -1, -(2**63), 2**63 - 1, 2**40]),
        "int/scalar": ("int64", [7]),
        "float/array": ("float", floats),
        "float/special": ("float", [0.1, -0.0, 1e30, float("inf")]),
        "Zeta": ("bytes", [b"capital sorts first"]),
        "é": ("int64", [1]),
    }
    ours = encode_example(
        {
            "image/encoded": bytes_feature(bytes(range(256))),
            "image/class/text": bytes_feature("café, naïve ☃"),
            "empty/bytes": bytes_feature([]),
            "empty/int64": int64_feature([]),
            "empty/float": float_feature(np.zeros(0)),
            "bytes/several": bytes_feature([b"", "x", bytearray(b"y" * 300)]),
            "int/mixed": int64_feature(np.array(spec["int/mixed"][1], dtype=np.int64)),
            "int/scalar": int64_feature(np.int32(7)),
            "float/array": float_feature(floats),
            "float/special": float_feature([0.1, -0.0, 1e30, float("inf")]),
            "Zeta": bytes_feature(b"capital sorts first"),
            "é": int64_feature(True),
        }
    )
    assert ours == tf_example(spec)
    assert encode_example({}) == tf.train.Example(features=tf.train.Features()).SerializeToString(
        deterministic=True
    )


def test_map_order_of_prefix_keys_follows_upb():
    # upb (the protobuf backend TF uses here) puts "ab" before its prefix "a", and "" last
    keys = ["a", "ab", "", "b", "aa", "a\x00"]
    ours = encode_example({k: int64_feature(i) for i, k in enumerate(keys)})
    assert ours == tf_example({k: ("int64", [i]) for i, k in enumerate(keys)})


def test_large_float_array_is_fast_and_exact():
    values = np.random.default_rng(1).random((224, 224, 2), dtype=np.float32)
    start = time.perf_counter()
    feature = float_feature(values)
    assert time.perf_counter() - start < 0.1
    assert encode_example({"ab": feature}) == tf_example({"ab": ("float", values.ravel())})


def test_feature_type_errors():
    with pytest.raises(ValueError):
        int64_feature(2**63)
    with pytest.raises(TypeError):
        int64_feature([1.5])
    with pytest.raises(TypeError):
        int64_feature(np.array([1.0]))
    with pytest.raises(TypeError):
        bytes_feature([1])
    with pytest.raises(TypeError):
        encode_example({"x": b"raw"})


def test_plain_writer_matches_tensorflow(tmp_path):
    with tf.io.TFRecordWriter(str(tmp_path / "tf.tfrecord")) as writer:
        for record in RECORDS:
            writer.write(record)
    with TFRecordWriter(tmp_path / "ours.tfrecord") as writer:
        for record in RECORDS:
            writer.write(record)
    data = (tmp_path / "ours.tfrecord").read_bytes()
    assert data == (tmp_path / "tf.tfrecord").read_bytes()
    assert writer.count == len(RECORDS)
    assert writer.nbytes == len(data)
    assert writer.sha256 == hashlib.sha256(data).hexdigest()
    assert list(iter_records(tmp_path / "ours.tfrecord")) == RECORDS


@pytest.mark.parametrize("compression", ["GZIP", "ZLIB"])
def test_compressed_records_read_back(tmp_path, compression):
    path = tmp_path / "shard"
    with TFRecordWriter(path, compression) as writer:
        for record in RECORDS:
            writer.write(record)
    data = path.read_bytes()
    assert writer.nbytes == len(data)
    assert writer.sha256 == hashlib.sha256(data).hexdigest()
    read = tf.data.TFRecordDataset(str(path), compression_type=compression)
    assert [r.numpy() for r in read] == RECORDS
    assert list(iter_records(path, compression)) == RECORDS
    if compression == "GZIP":
        assert gzip.decompress(data).startswith(len(RECORDS[0]).to_bytes(8, "little"))


@pytest.mark.parametrize("compression", [None, "GZIP", "ZLIB"])
def test_empty_file_is_valid(tmp_path, compression):
    path = tmp_path / "empty"
    with TFRecordWriter(path, compression) as writer:
        pass
    assert writer.count == 0
    read = tf.data.TFRecordDataset(str(path), compression_type=compression or "")
    assert list(read) == []
    assert list(iter_records(path, compression)) == []


def test_gzip_output_is_deterministic(tmp_path):
    digests = set()
    for name in ("one", "two"):
        with TFRecordWriter(tmp_path / name, "GZIP") as writer:
            for record in RECORDS:
                writer.write(record)
        digests.add(writer.sha256)
        time.sleep(0.01)
    assert len(digests) == 1
    header = (tmp_path / "one").read_bytes()[:10]
    assert header[3] == 0  # no FNAME (or other) flag
    assert header[4:8] == bytes(4)  # mtime 0
    assert (tmp_path / "one").read_bytes() == (tmp_path / "two").read_bytes()


def test_exception_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), TFRecordWriter(tmp_path / "shard", "GZIP") as writer:
        writer.write(b"partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    assert writer.sha256 is None


def test_unknown_compression(tmp_path):
    with pytest.raises(ValueError, match="compression"):
        TFRecordWriter(tmp_path / "x", "BZIP2")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("offset", [3, 9, 14, -2])  # length, length CRC, data, data CRC
def test_iter_records_detects_flipped_byte(tmp_path, offset):
    path = tmp_path / "shard"
    with TFRecordWriter(path) as writer:
        writer.write(b"some record data")
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError):
        list(iter_records(path))


@pytest.mark.parametrize("compression", ["GZIP", "ZLIB"])
def test_iter_records_detects_damaged_stream(tmp_path, compression):
    path = tmp_path / "shard"
    with TFRecordWriter(path, compression) as writer:
        writer.write(np.random.default_rng(2).bytes(2000))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError):
        list(iter_records(path, compression))
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(flipped))
    with pytest.raises(ValueError):
        list(iter_records(path, compression))


def test_truncated_plain_file(tmp_path):
    path = tmp_path / "shard"
    with TFRecordWriter(path) as writer:
        writer.write(b"x" * 100)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="truncated"):
        list(iter_records(path))


def test_compression_names_from_config_and_tensorflow_agree():
    from imgprep.files.tfrecord import normalize_compression

    assert [normalize_compression(c) for c in (None, "", "none", "NONE")] == [""] * 4
    assert normalize_compression("gzip") == normalize_compression("GZIP") == "GZIP"
    assert normalize_compression("zlib") == "ZLIB"
    with pytest.raises(ValueError, match="bz2"):
        normalize_compression("bz2")


@pytest.mark.parametrize("records", [RECORDS, RECORDS[:1], []], ids=["four", "one", "none"])
def test_record_index_is_what_tfrecord2idx_writes(tmp_path, records):
    """DALI's and the tfrecord package's tfrecord2idx: "<offset> <framed length>\\n"."""
    shard, index = tmp_path / "shard", tmp_path / "idx" / "shard.idx"
    with TFRecordWriter(shard, index_path=index) as writer:
        for record in records:
            writer.write(record)
    tfrecord2idx(shard, tmp_path / "theirs.idx")
    assert index.read_bytes() == (tmp_path / "theirs.idx").read_bytes() == record_index(shard)
    offset, lines = 0, []
    for record in records:  # written out: length (8), its CRC (4), data, data CRC (4)
        lines.append(f"{offset} {len(record) + 16}\n")
        offset += len(record) + 16
    assert index.read_text() == "".join(lines)


def test_record_index_needs_an_uncompressed_file(tmp_path):
    with pytest.raises(ValueError, match="no record index for GZIP"):
        TFRecordWriter(tmp_path / "shard", "GZIP", index_path=tmp_path / "shard.idx")
    assert list(tmp_path.iterdir()) == []


def test_exception_leaves_no_index(tmp_path):
    with pytest.raises(RuntimeError), TFRecordWriter(tmp_path / "s", index_path=tmp_path / "i"):
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_record_index_of_a_truncated_file(tmp_path):
    path = tmp_path / "shard"
    with TFRecordWriter(path) as writer:
        writer.write(b"x" * 100)
    data = path.read_bytes()
    for cut in (data[:-1], data[:5]):
        path.write_bytes(cut)
        with pytest.raises(ValueError, match="truncated|runs past the end"):
            record_index(path)
