import fnmatch
import os

import numpy as np
import pytest
from test_records import IMAGES, make_inputs, read_shard
from test_verify import rewrite

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402
from imgprep.formats import FORMATS, get_format  # noqa: E402
from imgprep.formats.koalarization import slim_logits  # noqa: E402
from imgprep.kernels.lab import lab_targets  # noqa: E402
from imgprep.stages.verify import VerificationError, verify_shards  # noqa: E402

SIZE = 224  # what Koalarization's LabImageRecordReader declares
DIM = 1001  # its image_embedding FixedLen; slim's logits, index 0 the background
KEYS = {"image_name", "image_l", "image_ab", "image_embedding"}


def koalarization_features(size=SIZE, dim=DIM):
    return {
        "image_name": tf.io.FixedLenFeature([], tf.string),
        "image_l": tf.io.FixedLenFeature([size * size], tf.float32),
        "image_ab": tf.io.FixedLenFeature([size * size * 2], tf.float32),
        "image_embedding": tf.io.FixedLenFeature([dim], tf.float32),
    }


def embeddings_for(inputs, path, seed=0, dim=DIM, rows=None):
    rows = len(inputs.jpegs) if rows is None else rows
    vectors = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    np.save(path, vectors)
    return vectors


def build(tmp_path, split="train", index=0, total=1, dim=DIM):
    inputs = make_inputs(tmp_path / "in")
    embeddings = tmp_path / "in" / "embeddings.npy"
    vectors = embeddings_for(inputs, embeddings, dim=dim)
    out = tmp_path / get_format("koalarization").shard_filename(split, index, total)
    result = inputs.write(out, schema="koalarization", embeddings=embeddings)
    shard = {"record": out, "index": inputs.index, "rejects": inputs.rejects}
    return inputs, shard, vectors, result


def verify(shards, inputs, **kwargs):
    return verify_shards("koalarization", shards, inputs.labels, 0, **kwargs)


def test_shard_filename():
    assert "embed" in FORMATS["koalarization"].needs
    assert "embed" not in FORMATS["imagenet"].needs
    assert get_format("koalarization").shard_filename("train", 0, 3) == "lab_images_0.tfrecord"
    assert get_format("koalarization").shard_filename("train", 12, 13) == "lab_images_12.tfrecord"
    assert (
        get_format("koalarization").shard_filename("validation", 2, 3)
        == "val_lab_images_2.tfrecord"
    )
    assert get_format("koalarization").shard_filename("val", 0, 1) == "val_lab_images_0.tfrecord"
    # other splits are named apart from both of Koalarization's globs
    assert get_format("koalarization").shard_filename("test", 1, 2) == "test_lab_images_1.tfrecord"
    assert get_format("koalarization").shard_path("test", 1, 2) == "test_lab_images_1.tfrecord"
    with pytest.raises(ValueError):
        get_format("koalarization").shard_filename("train", 3, 3)
    names = {
        get_format("koalarization").shard_path(split, i, 3)
        for split in ("train", "validation", "test")
        for i in range(3)
    }
    assert len(names) == 9
    assert {n for n in names if fnmatch.fnmatch(n, "lab_images_*.tfrecord")} == {
        f"lab_images_{i}.tfrecord" for i in range(3)
    }
    assert {n for n in names if fnmatch.fnmatch(n, "val_lab_images_*.tfrecord")} == {
        f"val_lab_images_{i}.tfrecord" for i in range(3)
    }


def test_slim_logits_adds_the_background_to_keras_1000():
    keras = np.random.default_rng(1).standard_normal(1000).astype(np.float32)
    slim = slim_logits(keras)
    assert slim.shape == (1001,) and slim.dtype == np.float32
    np.testing.assert_array_equal(slim[1:], keras)  # slim's class k + 1 is Keras' class k
    assert slim[0] == keras.min()
    assert np.argmax(slim) == np.argmax(keras) + 1
    probabilities = np.exp(slim - slim.max()) / np.exp(slim - slim.max()).sum()
    assert probabilities[0] == probabilities.min()
    own = np.arange(1001, dtype=np.float32)
    assert slim_logits(own) is not None and np.array_equal(slim_logits(own), own)
    for size in (7, 1002, 0):
        with pytest.raises(ValueError, match="1001"):
            slim_logits(np.zeros(size, np.float32))


def test_koalarization_shard_parses(tmp_path):
    inputs, shard, vectors, result = build(tmp_path, split="validation", index=1, total=2)
    assert shard["record"].name == "val_lab_images_1.tfrecord"
    records = read_shard(shard["record"])
    kept = sorted(inputs.jpegs)
    assert result["records"] == len(records) == len(kept) == 4
    for record, position, vector in zip(records, kept, vectors, strict=True):
        example = tf.train.Example.FromString(record.numpy()).features.feature
        assert set(example) == KEYS
        assert example["image_name"].WhichOneof("kind") == "bytes_list"
        for key in KEYS - {"image_name"}:
            assert example[key].WhichOneof("kind") == "float_list"
        parsed = tf.io.parse_single_example(record, koalarization_features())
        name = os.path.basename(IMAGES[position][0]).encode("utf-8", "surrogateescape")
        assert parsed["image_name"].numpy() == name
        lightness, ab = lab_targets(inputs.jpegs[position], SIZE)
        assert parsed["image_l"].dtype == tf.float32
        np.testing.assert_array_equal(parsed["image_l"].numpy(), lightness.ravel())
        np.testing.assert_array_equal(parsed["image_ab"].numpy(), ab.ravel())
        np.testing.assert_array_equal(tf.reshape(parsed["image_ab"], [SIZE, SIZE, 2]).numpy(), ab)
        np.testing.assert_array_equal(parsed["image_embedding"].numpy(), vector)
        assert lightness.shape == (SIZE, SIZE) and ab.shape == (SIZE, SIZE, 2)
        assert lightness.min() >= -1 and lightness.max() <= 1
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
    [verified] = verify([shard], inputs, threads=2)
    assert verified["records"] == 4 and verified["rejects"] == 1 and verified["index"] == 5
    assert verified["sha256"] == result["sha256"]
    assert verified["embedding_size"] == DIM


def test_keras_logits_are_stored_in_slim_order(tmp_path):
    inputs = make_inputs(tmp_path / "in")
    embeddings = tmp_path / "keras.npy"
    vectors = embeddings_for(inputs, embeddings, dim=1000)
    out = tmp_path / get_format("koalarization").shard_filename("train", 0, 1)
    inputs.write(out, schema="koalarization", embeddings=embeddings)
    for record, vector in zip(read_shard(out), vectors, strict=True):
        parsed = tf.io.parse_single_example(record, koalarization_features())
        stored = parsed["image_embedding"].numpy()
        np.testing.assert_array_equal(stored[1:], vector)
        assert stored[0] == vector.min()
    shard = {"record": out, "index": inputs.index, "rejects": inputs.rejects}
    assert verify([shard], inputs)[0]["embedding_size"] == 1001
    np.save(embeddings, vectors[:, :999])
    with pytest.raises(ValueError, match="999 values"):
        inputs.write(tmp_path / "bad", schema="koalarization", embeddings=embeddings)


def test_verify_catches_missing_record(tmp_path):
    inputs, shard, _, _ = build(tmp_path)
    rewrite(shard["record"], lambda number, _: number != 2)
    with pytest.raises(VerificationError) as error:
        verify([shard], inputs)
    message = str(error.value)
    assert "lab_images_0.tfrecord" in message
    assert "missing from the shard" in message and "n02102040_9.JPEG" in message
    assert "records + rejects != index rows" in message


def test_verify_catches_bad_values(tmp_path):
    inputs, shard, _, _ = build(tmp_path)

    def change(number, feature):
        if number == 0:
            feature["image_l"].float_list.value[5] = 1.5
        if number == 1:
            feature["image_embedding"].float_list.value.append(0.0)
        if number == 2:
            feature["image_ab"].float_list.value[3] = -1.2
        if number == 3:
            feature["image_ab"].float_list.value[0] = float("nan")

    rewrite(shard["record"], change)
    with pytest.raises(VerificationError) as error:
        verify([shard], inputs)
    message = str(error.value)
    assert "image_l outside [-1, 1]" in message
    assert "image_ab outside [-1, 1]" in message
    assert "image_embedding not 1001 values" in message
    assert "embedding_size differs between records" in message
    assert "image_ab not finite" in message


def test_verify_catches_other_lab_sizes(tmp_path):
    """Targets of another side fail Koalarization's FixedLen parse: unreadable."""
    inputs, shard, _, _ = build(tmp_path)

    def shrink(number, feature):
        if number == 1:
            del feature["image_l"].float_list.value[32 * 32 :]

    rewrite(shard["record"], shrink)
    with pytest.raises(VerificationError, match="unreadable record.*record 1"):
        verify([shard], inputs)


def test_write_needs_embeddings(tmp_path):
    inputs, _, vectors, _ = build(tmp_path)
    embeddings = tmp_path / "in" / "embeddings.npy"
    with pytest.raises(ValueError, match="needs embeddings"):
        inputs.write(tmp_path / "shard", schema="koalarization")
    short = tmp_path / "short.npy"
    np.save(short, vectors[:-1])
    with pytest.raises(ValueError, match="embeddings have 3 row"):
        inputs.write(tmp_path / "shard", schema="koalarization", embeddings=short)
    for name, bad in (
        ("ints", vectors.astype(np.int64)),
        ("flat", vectors.ravel()),
        ("empty", vectors[:, :0]),
        ("nan", np.where(vectors > 1, np.nan, vectors)),
    ):
        np.save(tmp_path / f"{name}.npy", bad)
        with pytest.raises(ValueError, match=f"{name}.npy"):
            inputs.write(
                tmp_path / "shard", schema="koalarization", embeddings=tmp_path / f"{name}.npy"
            )
    np.save(tmp_path / "pooled.npy", vectors[:, :7])
    with pytest.raises(ValueError, match="embed.output"):
        inputs.write(tmp_path / "shard", schema="koalarization", embeddings=tmp_path / "pooled.npy")
    with pytest.raises(ValueError, match="does not store embeddings"):
        inputs.write(tmp_path / "shard", schema="tangler", embeddings=embeddings, n_pins=8)
    assert not (tmp_path / "shard").exists()


@pytest.mark.parametrize("schema", ["imagenet", "dlbs"])
def test_embeddings_in_other_schemas(tmp_path, schema):
    inputs = make_inputs(tmp_path / "in")
    plain = tmp_path / "plain"
    inputs.write(plain, schema=schema)
    before = plain.read_bytes()
    inputs.write(plain, schema=schema, embeddings=None)
    assert plain.read_bytes() == before  # no embeddings: the records are unchanged
    embeddings = tmp_path / "embeddings.npy"
    vectors = embeddings_for(inputs, embeddings)
    embedded = tmp_path / "embedded"
    inputs.write(embedded, schema=schema, embeddings=embeddings)
    short = tmp_path / "short.npy"
    np.save(short, vectors[:-1])
    with pytest.raises(ValueError, match="embeddings have 3 row"):
        inputs.write(tmp_path / "shard", schema=schema, embeddings=short)
    pairs = zip(read_shard(plain), read_shard(embedded), vectors, strict=True)
    for without, with_, vector in pairs:
        old = tf.train.Example.FromString(without.numpy()).features.feature
        new = tf.train.Example.FromString(with_.numpy()).features.feature
        assert set(new) == set(old) | {"image/embedding"}
        assert all(new[key] == old[key] for key in old)
        values = new["image/embedding"].float_list.value
        np.testing.assert_array_equal(np.asarray(values, np.float32), vector)
    # the verifiers accept the extra key
    shard = {"record": embedded, "index": inputs.index, "rejects": inputs.rejects}
    [result] = verify_shards(schema, [shard], inputs.labels, 0)
    assert result["records"] == 4
