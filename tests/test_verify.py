import hashlib
import os

import pytest
from test_records import make_inputs

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402
from imgprep.files.tfrecord import TFRecordWriter, iter_records  # noqa: E402
from imgprep.stages.verify import VerificationError, verify_shards  # noqa: E402


def build(tmp_path, schema="imagenet", label_base=0, compression=None):
    inputs = make_inputs(tmp_path / "in", label_base=label_base)
    out = tmp_path / "train-00000-of-00001"
    inputs.write(out, schema=schema, label_base=label_base, compression=compression)
    shard = {"record": out, "index": inputs.index, "rejects": inputs.rejects}
    return inputs, shard


def verify(schema, shard, inputs, label_base=0, compression=None):
    return verify_shards(schema, [shard], inputs.labels, label_base, compression, threads=2)


def rewrite(path, change):
    """Re-write a shard passing each tf.train.Example through ``change`` (None drops it)."""
    records = list(iter_records(path))
    with TFRecordWriter(path) as writer:
        for number, record in enumerate(records):
            example = tf.train.Example.FromString(record)
            if change(number, example.features.feature) is not False:
                writer.write(example.SerializeToString(deterministic=True))


@pytest.mark.parametrize(
    ("schema", "label_base", "compression"),
    [("imagenet", 1, None), ("imagenet", 0, "GZIP"), ("dlbs", 1, "ZLIB")],
)
def test_good_shard_passes(tmp_path, schema, label_base, compression):
    inputs, shard = build(tmp_path, schema, label_base, compression)
    [result] = verify(schema, shard, inputs, label_base, compression)
    data = shard["record"].read_bytes()
    records = list(iter_records(shard["record"], compression))
    assert result == {
        "record": "train-00000-of-00001",
        "records": 4,
        "rejects": 1,
        "index": 5,
        "bytes": len(data),
        "example_bytes": sum(map(len, records)),  # TFDS' numBytes: without the framing
        "sha256": hashlib.sha256(data).hexdigest(),
        "classes": 3,
    }


def test_missing_record(tmp_path):
    inputs, shard = build(tmp_path)
    rewrite(shard["record"], lambda number, _: number != 2)
    with pytest.raises(VerificationError) as error:
        verify("imagenet", shard, inputs)
    message = str(error.value)
    assert "train-00000-of-00001" in message
    assert "missing from the shard" in message and "n02102040_9.JPEG" in message
    assert "records + rejects != index rows" in message


def test_wrong_label(tmp_path):
    inputs, shard = build(tmp_path, label_base=1)

    def relabel(number, feature):
        if number == 1:
            feature["image/class/label"].int64_list.value[:] = [3]

    rewrite(shard["record"], relabel)
    with pytest.raises(VerificationError, match=r"wrong label.*NA_1\.JPEG\): 3, want 2"):
        verify("imagenet", shard, inputs, label_base=1)


def test_dlbs_labels_are_zero_based(tmp_path):
    inputs, shard = build(tmp_path, "dlbs", label_base=1)

    def shift(number, feature):
        feature["image/class/label"].int64_list.value[0] += 1

    rewrite(shard["record"], shift)  # what an off-by-label_base bug would write
    with pytest.raises(VerificationError, match="wrong label"):
        verify("dlbs", shard, inputs, label_base=1)


def test_corrupt_jpeg(tmp_path):
    inputs, shard = build(tmp_path)

    def truncate(number, feature):
        if number == 3:
            encoded = feature["image/encoded"].bytes_list.value
            encoded[0] = encoded[0][: len(encoded[0]) // 2]

    rewrite(shard["record"], truncate)
    with pytest.raises(VerificationError, match=r"record 3 \(caf\\udce9_3\.JPEG\)"):
        verify("imagenet", shard, inputs)


def test_jpeg_of_wrong_size(tmp_path):
    inputs, shard = build(tmp_path)

    def resize(number, feature):
        if number == 0:
            feature["image/width"].int64_list.value[:] = [31]

    rewrite(shard["record"], resize)
    with pytest.raises(VerificationError, match=r"24x32x3, want 24x31x3"):
        verify("imagenet", shard, inputs)


def test_dlbs_wrong_byte_count(tmp_path):
    inputs, shard = build(tmp_path, "dlbs")

    def chop(number, feature):
        if number == 0:
            encoded = feature["image/encoded"].bytes_list.value
            encoded[0] = encoded[0][:-1]

    rewrite(shard["record"], chop)
    with pytest.raises(VerificationError, match="2303 bytes, want 24x32x3 = 2304 bytes"):
        verify("dlbs", shard, inputs)


def test_damaged_record_file(tmp_path):
    inputs, shard = build(tmp_path)
    data = bytearray(shard["record"].read_bytes())
    data[-2] ^= 0xFF  # last record's data CRC
    shard["record"].write_bytes(bytes(data))
    with pytest.raises(VerificationError, match="record 3 unreadable: corrupted record"):
        verify("imagenet", shard, inputs)


def test_counts_must_add_up(tmp_path):
    inputs, shard = build(tmp_path)
    with inputs.index.open("a") as handle:  # a row that is neither in the shard nor rejected
        handle.write("train/NA/NA_9.JPEG\tNA\t1\t1\n")
    with pytest.raises(VerificationError, match=r"records \+ rejects != index rows .*4 \+ 1 != 6"):
        verify("imagenet", shard, inputs)


def test_first_bad_shard_is_named(tmp_path):
    good_inputs, good = build(tmp_path / "good")
    _, bad = build(tmp_path / "bad")
    rewrite(bad["record"], lambda number, _: number != 0)
    bad["record"] = bad["record"].rename(bad["record"].with_name("train-00001-of-00002"))
    with pytest.raises(VerificationError, match="train-00001-of-00002"):
        verify_shards("imagenet", [good, bad], good_inputs.labels, 0)


def test_record_that_is_not_an_example(tmp_path):
    inputs, shard = build(tmp_path)
    records = list(iter_records(shard["record"]))
    with TFRecordWriter(shard["record"]) as writer:
        for record in records[:2] + [b"\xff garbage"] + records[3:]:
            writer.write(record)
    with pytest.raises(VerificationError, match=r"record 2 \(not an Example\)"):
        verify("imagenet", shard, inputs)


def test_cache_skips_unchanged_shards_and_rereads_changed_ones(tmp_path, monkeypatch):
    import imgprep.stages.verify as verify_module

    inputs, shard = build(tmp_path)
    cache = tmp_path / "cache"
    first = verify_shards("imagenet", [shard], inputs.labels, 0, cache_dir=cache)
    assert list(cache.iterdir())

    def must_not_read(*args, **kwargs):
        raise AssertionError("an unchanged shard was read again")

    monkeypatch.setattr(verify_module, "_verify_shard", must_not_read)
    assert verify_shards("imagenet", [shard], inputs.labels, 0, cache_dir=cache) == first
    monkeypatch.undo()

    rewrite(shard["record"], lambda number, _: number != 2)
    with pytest.raises(VerificationError):
        verify_shards("imagenet", [shard], inputs.labels, 0, cache_dir=cache)
    with pytest.raises(VerificationError):  # a failed verdict is never cached
        verify_shards("imagenet", [shard], inputs.labels, 0, cache_dir=cache)


def test_recorded_sha256_catches_a_valid_rewrite_and_full_ignores_the_cache(tmp_path):
    """A shard rewritten after its digest was recorded fails, even when it still parses;
    with the cache, only ``full`` reads a shard whose size and mtime were kept."""
    from imgprep.stages.verify import forget_failed

    inputs, shard = build(tmp_path)
    recorded = tmp_path / "train-00000-of-00001.sha256"
    digest = hashlib.sha256(shard["record"].read_bytes()).hexdigest()
    recorded.write_text(f"{digest}  train-00000-of-00001\n")
    shard["sha256"] = recorded
    cache = tmp_path / "cache"
    verify_shards("imagenet", [shard], inputs.labels, 0, cache_dir=cache)  # passes, cached

    stat = shard["record"].stat()
    data = bytearray(shard["record"].read_bytes())
    data[len(data) // 2] ^= 0x01
    shard["record"].write_bytes(bytes(data))
    os.utime(shard["record"], ns=(stat.st_atime_ns, stat.st_mtime_ns))
    verify_shards("imagenet", [shard], inputs.labels, 0, cache_dir=cache)  # the cache trusts it
    with pytest.raises(VerificationError) as error:
        verify_shards("imagenet", [shard], inputs.labels, 0, cache_dir=cache, full=True)
    assert error.value.failed == [shard]

    inputs.write(shard["record"], schema="imagenet", label_base=0)  # as written, then
    records = list(iter_records(shard["record"]))
    with TFRecordWriter(shard["record"]) as writer:  # reordered: valid, not what was written
        for record in reversed(records):
            writer.write(record)
    other = {**shard, "record": tmp_path / "other-00000-of-00001", "sha256": None}
    inputs.write(other["record"], schema="imagenet", label_base=0)
    rewrite(other["record"], lambda number, _: number != 2)  # a record missing
    with pytest.raises(VerificationError, match="sha256 .* is not the .* recorded") as error:
        verify_shards("imagenet", [other, shard], inputs.labels, 0)
    assert error.value.failed == [other, shard]  # every shard checked, both named
    report = tmp_path / "summary.json"
    report.write_text("{}")
    removed = forget_failed(error.value, [report])
    assert not shard["record"].exists() and not recorded.exists() and not report.exists()
    assert str(other["record"]) in removed


def test_record_index_is_checked(tmp_path):
    from imgprep.files.tfrecord import record_index

    inputs = make_inputs(tmp_path / "in")
    out = tmp_path / "train-00000-of-00001"
    index = tmp_path / "idx" / "train-00000-of-00001.idx"
    inputs.write(out, index_path=index)
    shard = {"record": out, "index": inputs.index, "rejects": inputs.rejects}
    assert verify("imagenet", {**shard, "record_index": index}, inputs)[0]["records"] == 4
    lines = index.read_bytes().splitlines(keepends=True)
    offset, length = lines[1].split()
    for broken in (
        b"".join(lines[:-1]),  # a record missing
        b"".join([lines[0], b"%d %d\n" % (int(offset) + 1, int(length)), *lines[2:]]),
        index.read_bytes().replace(b"\n", b"\r\n"),  # DALI and tfrecord read "\n" lines
    ):
        index.write_bytes(broken)
        with pytest.raises(VerificationError, match="record index does not match the shard"):
            verify("imagenet", {**shard, "record_index": index}, inputs)
    index.write_bytes(record_index(out))
    verify("imagenet", {**shard, "record_index": index}, inputs)
