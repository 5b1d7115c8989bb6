import io
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402
from imgprep.formats import FORMATS, get_format  # noqa: E402
from imgprep.stages.records import write_shard  # noqa: E402

# (synset, text): "NA" and the empty text must survive TSV reading as strings
CLASSES = [("n01440764", "tench, Tinca tinca"), ("NA", ""), ("n02102040", 'springer "☃')]
# (path, class, width, height, Pillow mode, rejected); \udce9: a Latin-1 byte in a name
IMAGES = [
    ("train/n01440764/n01440764_10026.JPEG", "n01440764", 32, 24, "RGB", False),
    ("train/NA/NA_1.JPEG", "NA", 20, 30, "L", False),
    ("train/n02102040/n02102040_7.JPEG", "n02102040", 16, 16, "RGB", True),
    ("train/n02102040/n02102040_9.JPEG", "n02102040", 17, 13, "RGB", False),
    ("train/n01440764/caf\udce9_3.JPEG", "n01440764", 8, 8, "RGB", False),
]
META_COLUMNS = [
    "position", "width", "height", "channels", "colorspace", "source_format", "source_mode",
    "source_width", "source_height", "orientation", "crop_x0", "crop_y0", "crop_x1", "crop_y1",
    "pad_left", "pad_top", "content_width", "content_height", "kept", "nbytes",
]  # fmt: skip


@dataclass
class ShardInputs:
    index: Path
    labels: Path
    meta: Path
    tar: Path
    rejects: Path
    jpegs: dict  # position -> JPEG bytes in the tar
    images: list

    def write(self, out, schema="imagenet", **kwargs):
        return write_shard(schema, self.index, self.labels, self.meta, self.tar, out, **kwargs)


def jpeg(width, height, mode, seed) -> bytes:
    rng = np.random.default_rng(seed)
    shape = (height, width, 3) if mode == "RGB" else (height, width)
    pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def write_tsv(path: Path, columns, rows) -> Path:
    lines = ["\t".join(columns)] + ["\t".join(str(v) for v in row) for row in rows]
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8", "surrogateescape"))
    return path


def make_inputs(root: Path, images=IMAGES, classes=CLASSES, label_base=0) -> ShardInputs:
    """The files the workflow hands one records job, in their documented formats."""
    root.mkdir(parents=True, exist_ok=True)
    index = write_tsv(
        root / "index.tsv",
        ["path", "class", "size", "mtime_ns"],
        [
            (path, cls, 1000 + i, 1_700_000_000_000_000_000 + i)
            for i, (path, cls, *_) in enumerate(images)
        ],
    )
    labels = write_tsv(
        root / "labels.tsv",
        ["index", "label", "synset", "text"],
        [(i, i + label_base, synset, text) for i, (synset, text) in enumerate(classes)],
    )
    jpegs, meta_rows, reject_rows = {}, [], []
    for position, (path, _cls, width, height, mode, rejected) in enumerate(images):
        if rejected:
            reject_rows.append((position, path, "decode-error"))
            continue
        data = jpeg(width, height, mode, seed=position)
        jpegs[position] = data
        colorspace, channels = ("RGB", 3) if mode == "RGB" else ("Grayscale", 1)
        meta_rows.append(
            (
                position,
                width,
                height,
                channels,
                colorspace,
                "JPEG",
                mode,
                width * 2,
                height * 2,
                1,
                0,
                0,
                width * 2,
                height * 2,
                0,
                0,
                width,
                height,
                1,
                len(data),
            )
        )
    meta = write_tsv(root / "meta.tsv", META_COLUMNS, meta_rows)
    rejects = write_tsv(root / "rejects.tsv", ["position", "path", "reason"], reject_rows)
    tar = root / "resized.tar"
    with tarfile.open(tar, "w") as archive:
        for position, data in jpegs.items():
            info = tarfile.TarInfo(f"{position:06d}.jpg")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return ShardInputs(index, labels, meta, tar, rejects, jpegs, list(images))


def read_shard(path, compression=""):
    return list(tf.data.TFRecordDataset(str(path), compression_type=compression))


def test_shard_filename():
    assert get_format("imagenet").shard_filename("train", 3, 1024) == "train-00003-of-01024"
    assert get_format("dlbs").shard_filename("validation", 0, 128) == "validation-00000-of-00128"
    with pytest.raises(ValueError):
        get_format("imagenet").shard_filename("train", 4, 4)
    with pytest.raises(ValueError, match="unknown schema"):
        get_format("nope").shard_filename("train", 0, 1)
    assert {"imagenet", "dlbs"} <= FORMATS.keys()


# tensorflow/models official ResNet ImageNet input pipeline feature map
def resnet_feature_map():
    feature_map = {
        "image/encoded": tf.io.FixedLenFeature([], dtype=tf.string, default_value=""),
        "image/class/label": tf.io.FixedLenFeature([], dtype=tf.int64, default_value=-1),
        "image/class/text": tf.io.FixedLenFeature([], dtype=tf.string, default_value=""),
    }
    sparse_float32 = tf.io.VarLenFeature(dtype=tf.float32)
    feature_map.update(
        {
            k: sparse_float32
            for k in [
                "image/object/bbox/xmin",
                "image/object/bbox/ymin",
                "image/object/bbox/xmax",
                "image/object/bbox/ymax",
            ]
        }
    )
    return feature_map


@pytest.mark.parametrize("label_base", [0, 1])
def test_imagenet_shard_parses_like_resnet(tmp_path, label_base):
    inputs = make_inputs(tmp_path / "in", label_base=label_base)
    out = tmp_path / "train-00000-of-00001"
    result = inputs.write(out, label_base=label_base)
    records = read_shard(out)
    assert result["records"] == len(records) == 4
    kept = [(p, img) for p, img in enumerate(IMAGES) if not img[5]]
    synsets = [c for c, _ in CLASSES]
    for record, (position, (path, cls, width, height, mode, _)) in zip(records, kept, strict=True):
        parsed = tf.io.parse_single_example(record, resnet_feature_map())
        assert parsed["image/encoded"].numpy() == inputs.jpegs[position]
        assert parsed["image/class/label"].numpy() == synsets.index(cls) + label_base
        assert parsed["image/class/text"].numpy().decode() == dict(CLASSES)[cls]
        assert tf.sparse.to_dense(parsed["image/object/bbox/xmin"]).shape == (0,)
        image = tf.image.decode_and_crop_jpeg(
            parsed["image/encoded"], [0, 0, height, width], channels=0
        )
        assert image.shape == (height, width, 3 if mode == "RGB" else 1)
        example = tf.train.Example.FromString(record.numpy()).features.feature
        assert example["image/filename"].bytes_list.value == [
            os.path.basename(path).encode("utf-8", "surrogateescape")
        ]
        assert example["image/class/synset"].bytes_list.value == [cls.encode()]
        assert example["image/format"].bytes_list.value == [b"JPEG"]
        assert example["image/colorspace"].bytes_list.value == [
            b"RGB" if mode == "RGB" else b"Grayscale"
        ]
        assert example["image/height"].int64_list.value == [height]
        assert example["image/width"].int64_list.value == [width]
        assert list(example["image/object/bbox/label"].int64_list.value) == []


def test_imagenet_boxes(tmp_path):
    inputs = make_inputs(tmp_path / "in", label_base=1)
    boxes = {0: [(0.1, 0.2, 0.5, 0.6), (0.0, 0.0, 1.0, 1.0)], 3: [(0.25, 0.25, 0.75, 0.75)]}
    out = tmp_path / "shard"
    inputs.write(out, label_base=1, boxes=boxes)
    records = [tf.train.Example.FromString(r.numpy()).features.feature for r in read_shard(out)]
    first, _, third, _ = records
    assert first["image/object/bbox/xmin"].float_list.value == pytest.approx([0.1, 0.0])
    assert first["image/object/bbox/ymax"].float_list.value == pytest.approx([0.6, 1.0])
    assert list(first["image/object/bbox/label"].int64_list.value) == [1, 1]
    assert list(third["image/object/bbox/label"].int64_list.value) == [3]
    assert third["image/object/bbox/xmax"].float_list.value == pytest.approx([0.75])


def test_dlbs_shard_matches_seed_parser(tmp_path):
    inputs = make_inputs(tmp_path / "in", label_base=1)
    out = tmp_path / "shard"
    assert inputs.write(out, schema="dlbs", label_base=1)["records"] == 4
    features = {
        "image/height": tf.io.FixedLenFeature([], tf.int64),
        "image/width": tf.io.FixedLenFeature([], tf.int64),
        "image/channels": tf.io.FixedLenFeature([], tf.int64),
        "image/class/label": tf.io.FixedLenFeature([], tf.int64),
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
    }
    synsets = [c for c, _ in CLASSES]
    kept = [p for p, img in enumerate(IMAGES) if not img[5]]
    for record, position in zip(read_shard(out), kept, strict=True):
        parsed = tf.compat.v1.parse_single_example(record, features=features)
        shape = [parsed[f"image/{k}"] for k in ("height", "width", "channels")]
        image = tf.reshape(tf.io.decode_raw(parsed["image/encoded"], tf.uint8), shape)
        expected = np.asarray(Image.open(io.BytesIO(inputs.jpegs[position])))
        np.testing.assert_array_equal(image.numpy(), expected.reshape(image.shape))
        assert parsed["image/class/label"].numpy() == synsets.index(IMAGES[position][1])
        example = tf.train.Example.FromString(record.numpy()).features.feature
        assert example["image/format"].bytes_list.value == [b"tensor"]


@pytest.mark.parametrize(("schema", "compression"), [("imagenet", "GZIP"), ("dlbs", None)])
def test_same_inputs_same_bytes(tmp_path, schema, compression):
    inputs = make_inputs(tmp_path / "in")
    first = inputs.write(tmp_path / "a", schema=schema, compression=compression)
    second = inputs.write(tmp_path / "b", schema=schema, compression=compression)
    assert first == second
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()
    assert first["bytes"] == (tmp_path / "a").stat().st_size
    assert len(read_shard(tmp_path / "a", compression or "")) == first["records"]


@pytest.mark.parametrize("compression", [None, "GZIP"])
def test_empty_shard(tmp_path, compression):
    images = [(p, c, w, h, m, True) for p, c, w, h, m, _ in IMAGES]
    inputs = make_inputs(tmp_path / "in", images=images)
    result = inputs.write(tmp_path / "shard", compression=compression)
    assert result["records"] == 0
    assert read_shard(tmp_path / "shard", compression or "") == []
    inputs.tar.write_bytes(b"")  # an empty tar file is accepted as well
    assert inputs.write(tmp_path / "again", compression=compression) == result


def test_class_missing_from_labels_is_named(tmp_path):
    inputs = make_inputs(tmp_path / "in", classes=[c for c in CLASSES if c[0] != "NA"])
    with pytest.raises(ValueError, match="'NA'"):
        inputs.write(tmp_path / "shard")
    assert not (tmp_path / "shard").exists()


def test_labels_made_for_another_label_base(tmp_path):
    inputs = make_inputs(tmp_path / "in", label_base=1)
    with pytest.raises(ValueError, match="label_base"):
        inputs.write(tmp_path / "shard", label_base=0)


def test_tar_must_match_meta(tmp_path):
    inputs = make_inputs(tmp_path / "in")
    with tarfile.open(inputs.tar, "w") as archive:  # drop position 1
        for position, data in inputs.jpegs.items():
            if position != 1:
                info = tarfile.TarInfo(f"{position:06d}.jpg")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    with pytest.raises(ValueError, match="000001.jpg"):
        inputs.write(tmp_path / "shard")
    assert list(tmp_path.glob("*shard*")) == []


def test_meta_must_match_jpeg(tmp_path):
    inputs = make_inputs(tmp_path / "in")
    text = inputs.meta.read_text().replace("\t20\t30\t1\tGrayscale", "\t20\t30\t3\tRGB")
    inputs.meta.write_text(text)
    with pytest.raises(ValueError, match="position 1"):
        inputs.write(tmp_path / "shard")


def test_writing_does_not_import_tensorflow():
    # the records job runs once per shard; importing TensorFlow there would cost seconds each
    code = "import sys, imgprep.stages.records; sys.exit('tensorflow' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "scripts")}
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0
