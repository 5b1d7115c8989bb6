import io
import os

import numpy as np
import pytest
from PIL import Image
from test_records import CLASSES, make_inputs, read_shard
from test_verify import rewrite

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402
from imgprep.files.tfrecord import serialize_tensor_uint8  # noqa: E402
from imgprep.formats import FORMATS, get_format  # noqa: E402
from imgprep.kernels.stringart import adjacency_indices, ravel  # noqa: E402
from imgprep.stages.verify import VerificationError, verify_shards  # noqa: E402

PINS = 16
LINES = 20
# gray square images, as the workflow's gray center-crop makes them for this schema
GRAY = [
    ("train/n01440764/n01440764_10026.JPEG", "n01440764", 24, 24, "L", False),
    ("train/NA/NA_1.JPEG", "NA", 24, 24, "L", False),
    ("train/n02102040/n02102040_7.JPEG", "n02102040", 24, 24, "L", True),
    ("train/n02102040/n02102040_9.JPEG", "n02102040", 24, 24, "L", False),
    ("train/n01440764/caf\udce9_3.JPEG", "n01440764", 24, 24, "L", False),
]


def tangler_features():
    int64 = tf.io.FixedLenFeature([], tf.int64)
    string = tf.io.FixedLenFeature([], tf.string)
    return {
        "record/version": int64,
        "record/name": string,
        "image/encoded": string,
        "image/res": int64,
        "target/n_pins": int64,
        "target/sparsity": int64,
        "target/indices": string,
        "target/path": tf.io.VarLenFeature(tf.int64),
    }


def pin_paths(inputs) -> np.ndarray:
    """A ravel pin path per kept image, in position order (as the targets job makes them)."""
    rows = []
    for position in sorted(inputs.jpegs):
        pixels = np.asarray(Image.open(io.BytesIO(inputs.jpegs[position])))
        rows.append(ravel(pixels, pins=PINS, lines=LINES))
    return np.stack(rows)


def build(tmp_path, total=1):
    inputs = make_inputs(tmp_path / "in", images=GRAY)
    targets = tmp_path / "in" / "targets.npy"
    paths = pin_paths(inputs)
    np.save(targets, paths)
    out = tmp_path / get_format("tangler").shard_filename("train", 0, total)
    result = inputs.write(out, schema="tangler", targets=targets, n_pins=PINS)
    shard = {"record": out, "index": inputs.index, "rejects": inputs.rejects}
    return inputs, shard, paths, result


def verify(shard, inputs, cache_dir=None):
    return verify_shards("tangler", [shard], inputs.labels, 0, threads=2, cache_dir=cache_dir)


@pytest.mark.parametrize("length", [0, 1, 2, 10, 1000])
def test_serialize_tensor_matches_tensorflow(length):
    values = np.random.default_rng(length).integers(0, 256, size=length, dtype=np.uint8)
    expected = tf.io.serialize_tensor(tf.constant(values, tf.uint8)).numpy()
    assert serialize_tensor_uint8(values) == expected
    parsed = tf.io.parse_tensor(serialize_tensor_uint8(values), tf.uint8).numpy()
    np.testing.assert_array_equal(parsed, values)


def test_serialize_tensor_rejects_other_arrays():
    with pytest.raises(ValueError):
        serialize_tensor_uint8(np.zeros(3, np.int64))
    with pytest.raises(ValueError):
        serialize_tensor_uint8(np.zeros((2, 2), np.uint8))


def test_shard_filename():
    assert "ravel" in FORMATS["tangler"].needs
    assert "ravel" not in FORMATS["imagenet"].needs
    assert get_format("tangler").shard_filename("train", 0, 3) == "tangle_00001-of-00003.tfrecord"
    assert (
        get_format("tangler").shard_filename("validation", 2, 3) == "tangle_00003-of-00003.tfrecord"
    )
    with pytest.raises(ValueError):
        get_format("tangler").shard_filename("train", 3, 3)


def test_tangler_shard_parses(tmp_path):
    inputs, shard, paths, result = build(tmp_path, total=7)
    assert shard["record"].name == "tangle_00001-of-00007.tfrecord"
    records = read_shard(shard["record"])
    kept = sorted(inputs.jpegs)
    assert result["records"] == len(records) == len(kept) == 4
    for record, position, path in zip(records, kept, paths, strict=True):
        example = tf.train.Example.FromString(record.numpy()).features.feature
        assert set(example) == set(tangler_features())
        parsed = tf.io.parse_single_example(record, tangler_features())
        assert parsed["record/version"].dtype == tf.int64 and parsed["record/version"] == 6
        name = os.path.basename(GRAY[position][0]).encode("utf-8", "surrogateescape")
        assert parsed["record/name"].numpy() == name
        assert parsed["image/encoded"].numpy() == inputs.jpegs[position]
        assert parsed["image/res"].numpy() == 24
        assert tf.io.decode_jpeg(parsed["image/encoded"], channels=0).shape == (24, 24, 1)
        assert parsed["target/n_pins"].numpy() == PINS
        np.testing.assert_array_equal(parsed["target/path"].values.numpy(), path)
        assert parsed["target/path"].dtype == tf.int64
        adjacency = np.zeros((PINS, PINS), np.uint8)
        adjacency[path[:-1], path[1:]] = adjacency[path[1:], path[:-1]] = 1
        tril = np.tril(adjacency)
        assert parsed["target/sparsity"].numpy() == np.count_nonzero(tril)
        indices = tf.io.parse_tensor(parsed["target/indices"], tf.uint8)
        assert indices.dtype == tf.uint8 and indices.shape == (2 * np.count_nonzero(tril),)
        pairs = tf.cast(tf.reshape(indices, [-1, 2]), tf.int64)
        sparse = tf.sparse.SparseTensor(
            pairs, tf.ones([tf.shape(pairs)[0]], tf.uint8), dense_shape=[PINS, PINS]
        )
        np.testing.assert_array_equal(tf.sparse.to_dense(sparse).numpy(), tril)
        # the same Example built with TensorFlow's own protobuf serializes identically
        rebuilt = tf.train.Example()
        for key, feature in example.items():
            rebuilt.features.feature[key].CopyFrom(feature)
        assert rebuilt.SerializeToString(deterministic=True) == record.numpy()


def test_same_inputs_same_bytes(tmp_path):
    _, first, _, a = build(tmp_path / "a")
    _, second, _, b = build(tmp_path / "b")
    assert a == b
    assert first["record"].read_bytes() == second["record"].read_bytes()


def test_verify_passes(tmp_path):
    inputs, shard, _, result = build(tmp_path)
    [verified] = verify(shard, inputs)
    assert verified["records"] == 4 and verified["rejects"] == 1 and verified["index"] == 5
    assert verified["sha256"] == result["sha256"]
    assert verified["n_pins"] == PINS and verified["path_length"] == LINES + 1
    assert verified["classes"] == len(CLASSES)


def test_verify_catches_path_not_matching_indices(tmp_path):
    inputs, shard, _, _ = build(tmp_path)

    def alter(number, feature):
        if number == 1:  # a changed pin path, the old indices
            path = feature["target/path"].int64_list.value
            old = adjacency_indices(list(path), PINS)
            for pin in range(PINS):
                changed = [*path[:3], pin, *path[4:]]
                if not np.array_equal(adjacency_indices(changed, PINS), old):
                    path[3] = pin
                    return

    rewrite(shard["record"], alter)
    with pytest.raises(VerificationError, match=r"indices do not match.*record 1 \(NA_1\.JPEG\)"):
        verify(shard, inputs)


def test_verify_catches_missing_record(tmp_path):
    inputs, shard, _, _ = build(tmp_path)
    rewrite(shard["record"], lambda number, _: number != 2)
    with pytest.raises(VerificationError) as error:
        verify(shard, inputs)
    message = str(error.value)
    assert "tangle_00001-of-00001.tfrecord" in message
    assert "missing from the shard" in message and "n02102040_9.JPEG" in message
    assert "records + rejects != index rows" in message


def test_verify_catches_inconsistent_targets(tmp_path):
    inputs, shard, _, _ = build(tmp_path)

    def change(number, feature):
        if number == 0:
            feature["record/version"].int64_list.value[:] = [5]
        if number == 2:
            feature["target/n_pins"].int64_list.value[:] = [PINS + 1]
        if number == 3:
            feature["target/sparsity"].int64_list.value[0] += 1

    rewrite(shard["record"], change)
    with pytest.raises(VerificationError) as error:
        verify(shard, inputs)
    message = str(error.value)
    assert "wrong record/version" in message
    assert "n_pins differs between records" in message
    assert "target/indices length != 2 * sparsity" in message


def test_verify_catches_path_length_across_shards(tmp_path):
    inputs, shard, _, _ = build(tmp_path / "a")
    other_inputs = make_inputs(tmp_path / "b" / "in", images=GRAY)
    targets = tmp_path / "b" / "targets.npy"
    np.save(targets, pin_paths(other_inputs)[:, :-1])  # one line fewer
    out = tmp_path / "b" / get_format("tangler").shard_filename("train", 1, 2)
    other_inputs.write(out, schema="tangler", targets=targets, n_pins=PINS)
    other = {"record": out, "index": other_inputs.index, "rejects": other_inputs.rejects}
    verify_shards("tangler", [other], inputs.labels, 0)
    with pytest.raises(VerificationError, match="path_length differs between shards"):
        verify_shards("tangler", [shard, other], inputs.labels, 0)


def test_write_needs_targets(tmp_path):
    inputs, _, paths, _ = build(tmp_path)
    targets = tmp_path / "in" / "targets.npy"
    with pytest.raises(ValueError, match="needs targets"):
        inputs.write(tmp_path / "shard", schema="tangler", n_pins=PINS)
    with pytest.raises(ValueError, match="n_pins"):
        inputs.write(tmp_path / "shard", schema="tangler", targets=targets)
    short = tmp_path / "short.npy"
    np.save(short, paths[:-1])
    with pytest.raises(ValueError, match="3 row"):
        inputs.write(tmp_path / "shard", schema="tangler", targets=short, n_pins=PINS)
    with pytest.raises(ValueError, match="outside"):
        inputs.write(tmp_path / "shard", schema="tangler", targets=targets, n_pins=PINS - 8)
    assert not (tmp_path / "shard").exists()


def test_write_needs_gray_square_images(tmp_path):
    inputs = make_inputs(tmp_path / "in")  # RGB and non-square images
    targets = tmp_path / "targets.npy"
    np.save(targets, np.zeros((len(inputs.jpegs), LINES + 1), np.int64))
    with pytest.raises(ValueError, match="position 0 .*square 1-channel"):
        inputs.write(tmp_path / "shard", schema="tangler", targets=targets, n_pins=PINS)
    assert not (tmp_path / "shard").exists()
