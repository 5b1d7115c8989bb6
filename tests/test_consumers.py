"""Each consumer's own reader, as published, over records the workflow writes.

The feature maps, defaults, decode calls, label handling and globs below are facts taken
from the consumers' published code (each block names its source file); the readers run
unchanged over the records of three workflow runs on the sample: the default
``config.yaml``, Tangler's own preparation, and ``labels.base: 0`` with ``pad``. Every
image is decoded; counts and labels are compared with the index (minus the rejects).
"""

from __future__ import annotations

import csv
import glob
import io
import os
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import REPO, base_config
from imgprep.config import ConfigError, validate_config
from imgprep.formats import get_format
from PIL import Image
from test_workflow import new_workdir, snakemake, write_config

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SPLITS = ("train", "validation")
TANGLER = {
    # Tangler's own preparation (its DATA.md; model.py: IMG_RES = N_PINS = 256); fewer
    # lines than its 6000 keep the run short: the reader does not depend on them
    "resize": {
        "mode": "center-crop",
        "size": 256,
        "upscale": True,
        "colorspace": "gray",
        "gray_matrix": "rec709",
    },
    "records": {"schemas": ["tangler", "imagenet"]},
    "ravel": {"pins": 256, "lines": 2000},
}
PAD = {
    "labels": {"base": 0},
    "resize": {"mode": "pad", "size": 224, "upscale": True},
    "records": {"schemas": ["imagenet", "dlbs"]},
}


def run_workflow(base: Path, **overrides) -> Path:
    work = new_workdir(base)
    if overrides:
        write_config(work, **overrides)
    snakemake(work, "--cores", "2")
    return work


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """The default config.yaml, as `make run` uses it."""
    return run_workflow(tmp_path_factory.mktemp("consumers") / "default")


@pytest.fixture(scope="module")
def tangler_run(tmp_path_factory):
    return run_workflow(tmp_path_factory.mktemp("consumers") / "tangler", **TANGLER)


@pytest.fixture(scope="module")
def pad_run(tmp_path_factory):
    return run_workflow(tmp_path_factory.mktemp("consumers") / "pad", **PAD)


RUNS = ("default_run", "tangler_run", "pad_run")


def config_of(work: Path) -> dict:
    return yaml.safe_load((work / "config.yaml").read_text())


def read_tsv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


def expected_records(work: Path, split: str) -> list[dict]:
    """The index rows of ``split`` that are records, in record order (shard, position)."""
    results = work / "results"
    rejected = {
        (row["shard"], row["position"])
        for row in read_tsv(results / "rejects.tsv")
        if row["split"] == split
    }
    index = {row["synset"]: int(row["index"]) for row in read_tsv(results / "index/labels.tsv")}
    rows = [
        {**row, "index": index[row["class"]]}
        for row in read_tsv(results / "index" / f"{split}.tsv")
        if (row["shard"], row["position"]) not in rejected
    ]
    assert rows, f"no records expected for {split}"
    return sorted(rows, key=lambda row: (row["shard"], int(row["position"])))


def stored_jpegs(work: Path, split: str) -> list[bytes]:
    """The JPEG of every imagenet record of ``split``, in record order (for cross-checks)."""
    import tensorflow as tf

    files = sorted(glob.glob(str(work / "results/records/imagenet" / f"{split}-*")))
    feature = {"image/encoded": tf.io.FixedLenFeature([], tf.string)}
    return [
        tf.io.parse_single_example(record, feature)["image/encoded"].numpy()
        for record in tf.data.TFRecordDataset(files)
    ]


# -- TPU ResNet --------------------------------------------------------------------------
# tensorflow/tpu models/official/resnet/imagenet_input.py: ImageNetInput.make_source_dataset
# globs os.path.join(data_dir, 'train-*' if is_training else 'validation-*') with
# tf.data.Dataset.list_files and reads plain tf.data.TFRecordDataset(filename, buffer_size)
TPU_PATTERN = {True: "train-*", False: "validation-*"}
TPU_IMAGE_SIZE = 224  # ImageNetTFExampleInput(image_size=224)
TPU_CROP_FRACTION = 0.875  # resnet_preprocessing.py CROP_FRACTION


def tpu_keys_to_features(tf) -> dict:
    # ImageNetTFExampleInput.dataset_parser
    return {
        "image/encoded": tf.io.FixedLenFeature((), tf.string, ""),
        "image/class/label": tf.io.FixedLenFeature([], tf.int64, -1),
    }


def tpu_decode_and_center_crop(tf, image_bytes, image_size=TPU_IMAGE_SIZE):
    # resnet_preprocessing.py _decode_and_center_crop: crop window from extract_jpeg_shape,
    # tf.image.decode_and_crop_jpeg(channels=3), bicubic resize to image_size
    shape = tf.image.extract_jpeg_shape(image_bytes)
    height, width = shape[0], shape[1]
    padding = round(image_size * (1 / TPU_CROP_FRACTION - 1))
    side = tf.cast(
        image_size / (image_size + padding) * tf.cast(tf.minimum(height, width), tf.float32),
        tf.int32,
    )
    window = tf.stack([(height - side + 1) // 2, (width - side + 1) // 2, side, side])
    image = tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3)
    return tf.compat.v1.image.resize_bicubic([image], [image_size, image_size])[0]


def tpu_decode_and_random_crop(tf, image_bytes, image_size=TPU_IMAGE_SIZE):
    # resnet_preprocessing.py distorted_bounding_box_crop / _decode_and_random_crop:
    # tf.io.decode_image(channels=3, expand_animations=False), a distorted box of the whole
    # image, falling back to the centre crop when the box is the full image
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    begin, size, _ = tf.image.sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, [1, 1, 4]),
        seed=1,
        min_object_covered=0.1,
        aspect_ratio_range=(3.0 / 4, 4.0 / 3.0),
        area_range=(0.08, 1.0),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    cropped = tf.image.crop_to_bounding_box(image, begin[0], begin[1], size[0], size[1])
    same = tf.equal(tf.image.extract_jpeg_shape(image_bytes), size)
    return tf.cond(
        tf.reduce_sum(tf.cast(same, tf.int32)) >= 3,  # _at_least_x_are_equal(..., 3)
        lambda: tpu_decode_and_center_crop(tf, image_bytes, image_size),
        lambda: tf.compat.v1.image.resize_bicubic([cropped], [image_size, image_size])[0],
    )


def tpu_dataset(tf, data_dir: Path, is_training: bool, include_background_label=False):
    def dataset_parser(value):
        parsed = tf.io.parse_single_example(value, tpu_keys_to_features(tf))
        image_bytes = tf.reshape(parsed["image/encoded"], shape=[])
        # resnet_preprocessing.py preprocess_for_train / preprocess_for_eval
        if is_training:
            image = tpu_decode_and_random_crop(tf, image_bytes)
            image = tf.image.random_flip_left_right(image, seed=1)  # _flip
        else:
            image = tpu_decode_and_center_crop(tf, image_bytes)
        image = tf.reshape(image, [TPU_IMAGE_SIZE, TPU_IMAGE_SIZE, 3])
        image = tf.image.convert_image_dtype(image, dtype=tf.float32)  # values 0..255
        label = tf.cast(tf.reshape(parsed["image/class/label"], shape=[]), tf.int32)
        if not include_background_label:
            label -= 1  # 'image/class/label' is 1..num_classes; one-hot wants 0..n-1
        return image, label

    pattern = os.path.join(data_dir, TPU_PATTERN[is_training])
    files = tf.data.Dataset.list_files(pattern, shuffle=False)
    records = files.interleave(
        lambda name: tf.data.TFRecordDataset(name, buffer_size=8 * 1024 * 1024), cycle_length=1
    )
    return records.map(dataset_parser)


# -- tensorflow/models --------------------------------------------------------------------
# official/legacy/image_classification/resnet/imagenet_preprocessing.py (and the older
# official/resnet/imagenet_main.py): get_filenames() hard-codes the shard names
MODELS_NUM_TRAIN_FILES = 1024


def models_get_filenames(is_training: bool, data_dir: Path) -> list[str]:
    if is_training:
        names = [f"train-{i:05d}-of-01024" for i in range(MODELS_NUM_TRAIN_FILES)]
    else:
        names = [f"validation-{i:05d}-of-00128" for i in range(128)]
    return [os.path.join(data_dir, name) for name in names]


def models_feature_map(tf, label_shape=()) -> dict:
    # parse_example_proto; the legacy imagenet_main.py (and DLBS' parse_example_proto) use
    # label shape [1]
    return {
        "image/encoded": tf.io.FixedLenFeature([], dtype=tf.string, default_value=""),
        "image/class/label": tf.io.FixedLenFeature(
            list(label_shape), dtype=tf.int64, default_value=-1
        ),
        "image/class/text": tf.io.FixedLenFeature([], dtype=tf.string, default_value=""),
        **{
            f"image/object/bbox/{k}": tf.io.VarLenFeature(dtype=tf.float32)
            for k in ("xmin", "ymin", "xmax", "ymax")
        },
    }


def models_dataset(tf, filenames: list[str], is_training: bool, label_shape=()):
    resize_min, output = 256, 224  # _RESIZE_MIN, DEFAULT_IMAGE_SIZE
    means = [123.68, 116.78, 103.94]  # CHANNEL_MEANS

    def parse_record(raw_record):
        features = tf.io.parse_single_example(raw_record, models_feature_map(tf, label_shape))
        corners = [
            tf.expand_dims(features[f"image/object/bbox/{k}"].values, 0)
            for k in ("ymin", "xmin", "ymax", "xmax")  # (y, x) order, as the reader imposes
        ]
        bbox = tf.transpose(tf.expand_dims(tf.concat(corners, 0), 0), perm=[0, 2, 1])
        buffer = features["image/encoded"]
        if is_training:  # _decode_crop_and_flip, then a bilinear resize
            begin, size, _ = tf.image.sample_distorted_bounding_box(
                tf.image.extract_jpeg_shape(buffer),
                bounding_boxes=bbox,
                seed=1,
                min_object_covered=0.1,
                aspect_ratio_range=[0.75, 1.33],
                area_range=[0.05, 1.0],
                max_attempts=100,
                use_image_if_no_bounding_boxes=True,
            )
            window = tf.stack([begin[0], begin[1], size[0], size[1]])
            image = tf.image.decode_and_crop_jpeg(buffer, window, channels=3)
            image = tf.image.random_flip_left_right(image, seed=1)
            image = tf.image.resize(image, [output, output], method="bilinear")
        else:  # decode_jpeg, aspect-preserving resize to 256, central crop 224 (tf.slice)
            image = tf.io.decode_jpeg(buffer, channels=3)
            shape = tf.cast(tf.shape(image)[:2], tf.float32)
            scale = resize_min / tf.reduce_min(shape)
            image = tf.image.resize(image, tf.cast(shape * scale, tf.int32), method="bilinear")
            top = (tf.shape(image)[0] - output) // 2
            left = (tf.shape(image)[1] - output) // 2
            image = tf.slice(image, [top, left, 0], [output, output, -1])
        image.set_shape([output, output, 3])
        image -= tf.broadcast_to(means, tf.shape(image))
        label = tf.cast(tf.reshape(features["image/class/label"], shape=[1]), tf.int32) - 1
        return image, tf.cast(label, tf.float32), features["image/class/text"]

    records = tf.data.Dataset.from_tensor_slices(filenames).interleave(
        tf.data.TFRecordDataset, cycle_length=1
    )
    return records.map(parse_record)


# -- TF-slim --------------------------------------------------------------------------------
# tensorflow/models research/slim/datasets/imagenet.py get_split(): _FILE_PATTERN, the
# keys_to_features and items_to_handlers; the Image handler decodes as
# tf_slim/data/tfexample_decoder.py Image._decode does
SLIM_FILE_PATTERN = "%s-*"
SLIM_NUM_CLASSES = 1001  # 0 is 'background'


def slim_keys_to_features(tf) -> dict:
    return {
        "image/encoded": tf.io.FixedLenFeature((), tf.string, default_value=""),
        "image/format": tf.io.FixedLenFeature((), tf.string, default_value="jpeg"),
        "image/class/label": tf.io.FixedLenFeature([], dtype=tf.int64, default_value=-1),
        "image/class/text": tf.io.FixedLenFeature([], dtype=tf.string, default_value=""),
        **{
            f"image/object/bbox/{k}": tf.io.VarLenFeature(dtype=tf.float32)
            for k in ("xmin", "ymin", "xmax", "ymax")
        },
        "image/object/class/label": tf.io.VarLenFeature(dtype=tf.int64),
    }


def slim_decode(tf, serialized) -> dict:
    """TFExampleDecoder.decode with get_split's items_to_handlers."""
    keys_to_features = slim_keys_to_features(tf)
    example = tf.io.parse_single_example(serialized, keys_to_features)
    for key, feature in keys_to_features.items():
        if isinstance(feature, tf.io.FixedLenFeature):
            example[key] = tf.reshape(example[key], feature.shape)
    buffer, image_format = example["image/encoded"], example["image/format"]

    def check_jpeg():
        return tf.cond(
            tf.io.is_jpeg(buffer),
            lambda: tf.cast(tf.io.decode_jpeg(buffer, channels=3, dct_method=""), tf.uint8),
            lambda: tf.cast(tf.io.decode_image(buffer, channels=3), tf.uint8),
        )

    is_raw = tf.logical_or(tf.equal(image_format, "raw"), tf.equal(image_format, "RAW"))
    image = tf.case(
        [(is_raw, lambda: tf.io.decode_raw(buffer, tf.uint8))], default=check_jpeg, exclusive=True
    )
    image.set_shape([None, None, 3])
    # BoundingBox(['ymin', 'xmin', 'ymax', 'xmax'], 'image/object/bbox/'): [num_boxes, 4]
    sides = [
        tf.expand_dims(example[f"image/object/bbox/{k}"].values, 0)
        for k in ("ymin", "xmin", "ymax", "xmax")
    ]
    return {
        "image": image,
        "label": example["image/class/label"],  # Tensor handler: as stored
        "label_text": example["image/class/text"],
        "object/bbox": tf.transpose(tf.concat(sides, 0)),
        "object/label": tf.sparse.to_dense(example["image/object/class/label"], 0),
    }


# -- DLBS -----------------------------------------------------------------------------------
# HewlettPackard/dlcookbook-dlbs python/tf_cnn_benchmarks: datasets.py
# Dataset.tf_record_pattern globs os.path.join(data_dir, '%s-*-of-*' % subset);
# preprocessing.py _feature_map, parse_example_proto_with_tensor and train_image_fast (the
# DLBS_TF_CNN_BENCHMARKS_FAST_PREPROCESSING=1 path), minibatch's final reshape
DLBS_PATTERN = "%s-*-of-*"
DLBS_NUM_CLASSES = 1000  # datasets.create_dataset: imagenet default
# models/*.py: the image side each model's preprocessor slices
DLBS_MODEL_SIDES = {
    "resnet50": 224,
    "vgg16": 224,
    "googlenet": 224,
    "alexnet": 227,
    "overfeat": 231,
    "inception3": 299,
    "nasnet_large": 331,
}


def dlbs_feature_map(tf) -> dict:
    return {
        "image/encoded": tf.io.FixedLenFeature([], dtype=tf.string, default_value=""),
        "image/class/label": tf.io.FixedLenFeature([1], dtype=tf.int64, default_value=-1),
        "image/format": tf.io.FixedLenFeature([], dtype=tf.string, default_value=""),
        "image/height": tf.io.FixedLenFeature([], dtype=tf.int64, default_value=-1),
        "image/width": tf.io.FixedLenFeature([], dtype=tf.int64, default_value=-1),
        "image/channels": tf.io.FixedLenFeature([], dtype=tf.int64, default_value=-1),
        "image/order": tf.io.FixedLenFeature([], dtype=tf.string, default_value="HWC"),
    }


def dlbs_parse_example_proto_with_tensor(tf, example_serialized):
    features = tf.io.parse_single_example(example_serialized, dlbs_feature_map(tf))
    image = tf.io.decode_raw(features["image/encoded"], out_type=tf.uint8)
    shape = tf.stack(
        [tf.cast(features[f"image/{k}"], tf.int32) for k in ("height", "width", "channels")]
    )
    return tf.reshape(image, shape), tf.cast(features["image/class/label"], tf.int32)


def dlbs_train_image_fast(tf, image, height, width):
    image = tf.slice(image, [0, 0, 0], [height, width, 3])
    return tf.image.random_flip_left_right(image, seed=1)


def dlbs_minibatch(tf, data_dir: Path, subset: str, side: int):
    files = tf.io.gfile.glob(os.path.join(data_dir, DLBS_PATTERN % subset))
    assert files, f"Found no files in --data_dir matching: {DLBS_PATTERN % subset}"

    def parse_and_preprocess(value):
        image, label_index = dlbs_parse_example_proto_with_tensor(tf, value)
        return label_index, dlbs_train_image_fast(tf, image, side, side)

    batch = 1024  # the whole split in one batch, then minibatch's reshape
    dataset = tf.data.TFRecordDataset(sorted(files)).map(parse_and_preprocess).batch(batch)
    labels, images = zip(*dataset, strict=True)
    labels, images = tf.concat(labels, 0), tf.concat(images, 0)
    images = tf.reshape(tf.cast(images, tf.float32), [-1, side, side, 3])
    return tf.reshape(labels, [-1]).numpy(), images.numpy()


def dlbs_tensors(tf, data_dir: Path, subset: str) -> list[np.ndarray]:
    files = sorted(tf.io.gfile.glob(os.path.join(data_dir, DLBS_PATTERN % subset)))
    return [
        dlbs_parse_example_proto_with_tensor(tf, record)[0].numpy()
        for record in tf.data.TFRecordDataset(files)
    ]


# -- Tangler --------------------------------------------------------------------------------
# jperryhouts/Tangler docs/data/make_tfrecords.py (writer, _RECORD_FORMAT_VERSION = 6),
# tangler/train.py load_dataset (glob '*.tfrecord' in the split folder, version check on
# the first record, res and n_pins from it), tangler/utils.py parse_example and
# get_decoder(res, n_pins, rotate='none')
TANGLER_VERSION = 6


def tangler_parse_example(tf, serialized) -> dict:
    return tf.io.parse_single_example(
        serialized,
        features={
            "record/version": tf.io.FixedLenFeature([], tf.int64),
            "image/encoded": tf.io.FixedLenFeature([], tf.string),
            "image/name": tf.io.FixedLenFeature([], tf.string, default_value=""),
            "image/format": tf.io.FixedLenFeature([], tf.string, default_value=b"jpeg"),
            "image/res": tf.io.FixedLenFeature([], tf.int64),
            "target/n_pins": tf.io.FixedLenFeature([], tf.int64, default_value=256),
            "target/indices": tf.io.FixedLenFeature([], tf.string),
            "target/sparsity": tf.io.FixedLenFeature([], tf.int64),
        },
    )


def tangler_decoder(tf, res: int, n_pins: int):
    x, y = np.mgrid[-1 : 1 : res * 1j, -1 : 1 : res * 1j]
    inside = tf.convert_to_tensor((x**2 + y**2 < 1.0).reshape(res, res, 1).astype(np.uint8))

    @tf.function
    def decode_example(serialized):
        example = tangler_parse_example(tf, serialized)
        image = tf.reshape(tf.image.decode_jpeg(example["image/encoded"]), (res, res, 1))
        sparsity = example["target/sparsity"]
        indices = tf.io.parse_tensor(example["target/indices"], tf.uint8)
        indices = tf.reshape(tf.cast(indices, tf.int64), (sparsity, 2))
        tangle = tf.sparse.to_dense(
            tf.sparse.SparseTensor(indices, tf.ones(sparsity, tf.int64), (n_pins, n_pins))
        )
        tangle = tf.clip_by_value(tangle + tf.transpose(tangle), 0, 1)
        image = image * inside + 127 * (1 - inside)
        image = (tf.cast(image, tf.float32) - 127.5) / 127.5  # preprocess_img, no contrast
        return image, tangle

    return decode_example


def tangler_load_dataset(tf, source: Path):
    records = glob.glob(os.path.join(source, "*.tfrecord"))
    assert records, source
    dataset = tf.data.TFRecordDataset(sorted(records))
    first = next(dataset.take(1).map(lambda s: tangler_parse_example(tf, s)).as_numpy_iterator())
    assert first["record/version"] == TANGLER_VERSION
    res, n_pins = int(first["image/res"]), int(first["target/n_pins"])
    return dataset.map(tangler_decoder(tf, res, n_pins)), res, n_pins


# -- the tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("is_training", [True, False])
def test_tpu_dataset_parser_reads_every_imagenet_record(request, run, is_training):
    import tensorflow as tf

    work = request.getfixturevalue(run)
    base = config_of(work)["labels"]["base"]
    split = "train" if is_training else "validation"
    expected = expected_records(work, split)
    data_dir = work / "results/records/imagenet"
    pairs = list(tpu_dataset(tf, data_dir, is_training).as_numpy_iterator())
    assert len(pairs) == len(expected)
    for (image, label), row in zip(pairs, expected, strict=True):
        assert image.shape == (TPU_IMAGE_SIZE, TPU_IMAGE_SIZE, 3) and image.dtype == np.float32
        assert np.isfinite(image).all() and image.max() - image.min() > 32  # a real photo
        assert label == row["index"] + base - 1  # with labels.base 1: the class index
    background = tpu_dataset(tf, data_dir, is_training, include_background_label=True)
    labels = [int(label) for _, label in background.as_numpy_iterator()]
    assert labels == [row["index"] + base for row in expected]


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("is_training", [True, False])
def test_tensorflow_models_parse_record_reads_every_imagenet_record(request, run, is_training):
    import tensorflow as tf

    work = request.getfixturevalue(run)
    base = config_of(work)["labels"]["base"]
    split = "train" if is_training else "validation"
    expected = expected_records(work, split)
    data_dir = work / "results/records/imagenet"
    # input_fn(filenames=...) takes the shards; get_filenames() would want 1024/128 of them
    filenames = sorted(glob.glob(os.path.join(data_dir, f"{split}-*")))
    for label_shape in ((), (1,)):
        triples = list(models_dataset(tf, filenames, is_training, label_shape))
        assert len(triples) == len(expected)
        for (image, label, text), row in zip(triples, expected, strict=True):
            assert image.shape == (224, 224, 3) and np.isfinite(image.numpy()).all()
            assert label.numpy().tolist() == [row["index"] + base - 1]
            assert text.numpy().decode() == row["text"]


def test_tensorflow_models_get_filenames_are_our_shard_names():
    for is_training, split, shards in ((True, "train", 1024), (False, "validation", 128)):
        ours = [get_format("imagenet").shard_filename(split, i, shards) for i in range(shards)]
        assert [os.path.basename(p) for p in models_get_filenames(is_training, Path("d"))] == ours
        ours = [get_format("dlbs").shard_filename(split, i, shards) for i in range(shards)]
        assert [os.path.basename(p) for p in models_get_filenames(is_training, Path("d"))] == ours


@pytest.mark.parametrize("run", RUNS)
def test_slim_decoder_reads_every_imagenet_record(request, run):
    import tensorflow as tf

    work = request.getfixturevalue(run)
    config = config_of(work)
    side, base = config["resize"]["size"], config["labels"]["base"]
    for split in SPLITS:
        expected = expected_records(work, split)
        pattern = os.path.join(work / "results/records/imagenet", SLIM_FILE_PATTERN % split)
        files = sorted(tf.io.gfile.glob(pattern))
        items = [slim_decode(tf, record) for record in tf.data.TFRecordDataset(files)]
        assert len(items) == len(expected)
        for item, row, jpeg in zip(items, expected, stored_jpegs(work, split), strict=True):
            image = item["image"].numpy()
            assert image.shape == (side, side, 3) and image.dtype == np.uint8
            pillow = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
            assert np.abs(image.astype(int) - pillow).mean() < 2  # TF's IDCT vs libjpeg's
            assert int(item["label"]) == row["index"] + base
            if base == 1:
                assert 1 <= int(item["label"]) < SLIM_NUM_CLASSES
            assert item["label_text"].numpy().decode() == row["text"]
            assert item["object/bbox"].shape == (0, 4)  # the sample has no boxes
            assert item["object/label"].shape == (0,)


@pytest.mark.parametrize("run", ["default_run", "pad_run"])
def test_dlbs_fast_path_reads_every_dlbs_record(request, run):
    import tensorflow as tf

    work = request.getfixturevalue(run)
    side = config_of(work)["resize"]["size"]
    data_dir = work / "results/records/dlbs"
    for split in SPLITS:
        expected = expected_records(work, split)
        tensors = dlbs_tensors(tf, data_dir, split)
        assert len(tensors) == len(expected)
        # what DLBS' writer stores: every tensor img_size x img_size x 3, the stored JPEG's
        # pixels (the same resized image the imagenet records hold)
        for tensor, jpeg in zip(tensors, stored_jpegs(work, split), strict=True):
            assert tensor.shape == (side, side, 3)
            np.testing.assert_array_equal(tensor, np.asarray(Image.open(io.BytesIO(jpeg))))
        fits = {model: s for model, s in DLBS_MODEL_SIDES.items() if s <= side}
        assert "resnet50" in fits and (side < 227 or "alexnet" in fits)
        for model, model_side in fits.items():
            labels, images = dlbs_minibatch(tf, data_dir, split, model_side)
            assert images.shape == (len(expected), model_side, model_side, 3), model
            assert labels.tolist() == [row["index"] for row in expected]  # 0-based always
            assert labels.min() >= 0 and labels.max() < DLBS_NUM_CLASSES
            for image, tensor in zip(images, tensors, strict=True):
                corner = tensor[:model_side, :model_side].astype(np.float32)
                assert np.array_equal(image, corner) or np.array_equal(image, corner[:, ::-1])
        too_big = [s for s in DLBS_MODEL_SIDES.values() if s > side]
        if too_big:  # the crash the issue saw: a model wider than resize.size
            with pytest.raises(tf.errors.InvalidArgumentError):
                dlbs_minibatch(tf, data_dir, split, min(too_big))


def test_dlbs_records_carry_the_keys_dlbs_writes(default_run):
    import tensorflow as tf

    # python/dlbs/data/imagenet/tensorflow_worker.py TFRecord.convert_to_example
    writer_keys = {
        "image/height",
        "image/width",
        "image/colorspace",
        "image/channels",
        "image/class/label",
        "image/format",
        "image/encoded",
        "image/filename",
        "image/class/synset",
        "image/class/text",
    }
    files = sorted(glob.glob(str(default_run / "results/records/dlbs/train-*")))
    for record in tf.data.TFRecordDataset(files):
        feature = tf.train.Example.FromString(record.numpy()).features.feature
        assert writer_keys <= set(feature)
        assert feature["image/format"].bytes_list.value == [b"tensor"]
        assert feature["image/colorspace"].bytes_list.value == [b"RGB"]
        assert feature["image/channels"].int64_list.value == [3]


def test_tangler_decoder_reads_every_tangler_record(tangler_run):
    import tensorflow as tf

    work = tangler_run
    config = config_of(work)
    for split in SPLITS:
        expected = expected_records(work, split)
        source = work / "results/records/tangler" / split
        dataset, res, n_pins = tangler_load_dataset(tf, source)
        assert (res, n_pins) == (config["resize"]["size"], config["ravel"]["pins"]) == (256, 256)
        pairs = list(dataset.as_numpy_iterator())
        assert len(pairs) == len(expected)
        records = sorted(glob.glob(os.path.join(source, "*.tfrecord")))
        paths, name = tf.io.VarLenFeature(tf.int64), tf.io.FixedLenFeature([], tf.string)
        for (image, tangle), record, row in zip(
            pairs, tf.data.TFRecordDataset(records), expected, strict=True
        ):
            assert image.shape == (res, res, 1) and -1.0 <= image.min() <= image.max() <= 1.0
            assert tangle.shape == (n_pins, n_pins) and tangle.dtype == np.int64
            # the target is the adjacency of the pin path the record stores
            ex = tf.io.parse_single_example(record, {"target/path": paths, "record/name": name})
            path = ex["target/path"].values.numpy()
            adjacency = np.zeros((n_pins, n_pins), np.int64)
            adjacency[path[:-1], path[1:]] = adjacency[path[1:], path[:-1]] = 1
            np.testing.assert_array_equal(tangle, adjacency)
            assert ex["record/name"].numpy().decode() == row["filename"]


def test_readme_snippets_run_as_shown(default_run, tangler_run):
    import tensorflow as tf

    expected = expected_records(default_run, "train")
    scope = {"data_dir": str(default_run / "results/records/imagenet")}
    exec(readme_snippet("tpu-models"), scope)
    images, labels = zip(*scope["dataset"].unbatch().as_numpy_iterator(), strict=True)
    assert [int(label) for label in labels] == [row["index"] for row in expected]
    assert {image.shape for image in images} == {(224, 224, 3)}

    expected = expected_records(tangler_run, "train")
    scope = {"data_dir": str(tangler_run / "results/records/tangler")}
    exec(readme_snippet("tangler"), scope)
    pairs = list(scope["dataset"].as_numpy_iterator())
    assert len(pairs) == len(expected)
    reference, _, _ = tangler_load_dataset(tf, tangler_run / "results/records/tangler/train")
    for (image, tangle), (_, their_tangle) in zip(pairs, reference, strict=True):
        assert image.shape == (256, 256, 1) and image.dtype == np.uint8
        np.testing.assert_array_equal(tangle, their_tangle.numpy())


def readme_snippet(name: str) -> str:
    """The python block that follows ``<!-- tested: name -->`` in the README."""
    text = (REPO / "README.md").read_text()
    match = re.search(rf"<!-- tested: {re.escape(name)} -->\n```python\n(.*?)```", text, re.S)
    assert match, f"README has no snippet {name!r}"
    return match.group(1)


# -- the config keeps dlbs records readable --------------------------------------------------


@pytest.mark.parametrize(
    ("resize", "key"),
    [
        ({"upscale": False}, "resize.upscale"),
        ({"colorspace": "gray"}, "resize.colorspace"),
        ({"size": [256, 224]}, "resize.size"),
        ({"mode": "shorter-side"}, "resize.mode"),
        ({"mode": "keep"}, "resize.mode"),
    ],
)
def test_dlbs_needs_square_rgb_full_size_tensors(tmp_path, resize, key):
    (tmp_path / "src" / "train").mkdir(parents=True)
    good = {"mode": "center-crop", "size": 256, "upscale": True, "colorspace": "rgb"}
    config = base_config(tmp_path / "src", tmp_path / "r", records={"schemas": ["dlbs"]})
    assert validate_config({**config, "resize": good})["records"]["schemas"] == ["dlbs"]
    with pytest.raises(ConfigError, match=f"'{re.escape(key)}': schema dlbs needs"):
        validate_config({**config, "resize": {**good, **resize}})


def test_dlbs_with_small_images_fails_before_any_job(tmp_path):
    work = new_workdir(tmp_path / "w")
    write_config(work, resize={"upscale": False})
    proc = snakemake(work, "--cores", "1", check=False)
    assert proc.returncode != 0
    assert "'resize.upscale': schema dlbs needs true" in proc.stdout + proc.stderr
    assert not (work / "results").exists()
