"""tangler: Tangler's make_tfrecords.py format version 6, a gray square JPEG with its
string-art target (the ravel stage's pin path and its adjacency), one folder per split."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from imgprep.files.tfrecord import Feature, bytes_feature, int64_feature, serialize_tensor_uint8
from imgprep.formats.base import (
    Sample,
    check_square_resize,
    count_names,
    same_everywhere,
)
from imgprep.formats.jpeg import jpeg_header
from imgprep.formats.tfrecords import (
    TFRecordFormat,
    snippet_dataset_args,
    tfds_image,
    tfds_int64,
    tfds_tensor,
    tfds_text,
)

__all__ = ["FORMAT", "TANGLER_VERSION"]

TANGLER_VERSION = 6


class TanglerFormat(TFRecordFormat):
    name = "tangler"
    description = "gray square JPEG + ravel pin path and adjacency (Tangler v6)"
    name_pattern = r"tangle_\d{5}-of-\d{5}\.tfrecord"
    needs = frozenset({"ravel"})
    across_shards = ("n_pins", "path_length")
    name_key = "record/name"
    padded_batches = True  # targets vary in length per record
    tfds_split_per_file = True

    def shard_name(self, split: str, index: int, total: int) -> str:
        return f"tangle_{index + 1:05d}-of-{total:05d}.tfrecord"  # counted from 1

    def shard_folder(self, split: str) -> str:
        return split  # the split is not in the file name

    def check_config(self, config: dict) -> None:
        # Tangler's decoder reshapes every image to (res, res, 1), the image its target
        # was computed from
        check_square_resize(config["resize"], self.name, "gray")

    def features(self, sample: Sample, label: int) -> dict[str, Feature]:
        from imgprep.kernels.stringart import adjacency_indices  # numba: only for this format

        jpeg_header(sample)
        if sample.channels != 1 or sample.width != sample.height:
            raise ValueError(
                f"{sample.where()}: tangler needs a square 1-channel JPEG, got "
                f"{sample.width}x{sample.height}x{sample.channels} (configure gray center-crop)"
            )
        if sample.pin_path is None or sample.n_pins is None:
            raise ValueError(f"{sample.where()}: tangler needs a pin path and n_pins")
        indices = adjacency_indices(sample.pin_path, sample.n_pins)
        return {
            "record/version": int64_feature(TANGLER_VERSION),
            "record/name": bytes_feature(sample.filename),
            "image/encoded": bytes_feature(sample.data),
            "image/res": int64_feature(sample.width),
            "target/n_pins": int64_feature(sample.n_pins),
            "target/sparsity": int64_feature(len(indices)),
            "target/indices": bytes_feature(serialize_tensor_uint8(indices.reshape(-1))),
            "target/path": int64_feature(sample.pin_path),
        }

    def parser(self, tf) -> Callable:
        int64 = tf.io.FixedLenFeature([], tf.int64)
        string = tf.io.FixedLenFeature([], tf.string)
        features = {
            "record/version": int64,
            "record/name": string,
            "image/encoded": string,
            "image/res": int64,
            "target/n_pins": int64,
            "target/sparsity": int64,
            "target/indices": string,
            "target/path": tf.io.VarLenFeature(tf.int64),
        }

        def parse(record):
            example = tf.io.parse_single_example(record, features)
            image = tf.io.decode_jpeg(example["image/encoded"], channels=0)
            indices = tf.reshape(tf.io.parse_tensor(example["target/indices"], tf.uint8), [-1])
            path = example["target/path"].values
            return {
                "filename": example["record/name"],
                "version": example["record/version"],
                "res": example["image/res"],
                "decoded": tf.shape(image, out_type=tf.int64),
                "n_pins": example["target/n_pins"],
                "sparsity": example["target/sparsity"],
                # padded in the batch: the lengths say where each row's values end
                "indices": indices,
                "n_indices": tf.size(indices, out_type=tf.int64),
                "path": path,
                "path_length": tf.size(path, out_type=tf.int64),
            }

        return parse

    def preview_parser(self, tf) -> Callable:
        """Tangler's parse_example and decoder: decode_jpeg reshaped to (res, res, 1); and
        the stored pin path, for the string-art panel."""
        int64 = tf.io.FixedLenFeature([], tf.int64)
        features = {
            "record/name": tf.io.FixedLenFeature([], tf.string),
            "image/encoded": tf.io.FixedLenFeature([], tf.string),
            "image/res": int64,
            "target/n_pins": int64,
            "target/path": tf.io.VarLenFeature(tf.int64),
        }

        def parse(record):
            example = tf.io.parse_single_example(record, features)
            res = example["image/res"]
            image = tf.io.decode_jpeg(example["image/encoded"])
            return {
                "filename": example["record/name"],
                "image": tf.reshape(image, tf.stack([res, res, 1])),
                "n_pins": example["target/n_pins"],
                "path": example["target/path"].values,
            }

        return parse

    def preview(self, example: dict):
        """The photo and its "string art": the stored pin path drawn by the ravel kernel's
        own model (pins on the inscribed circle, each chord darkening its pixels by the
        thread's visual weight), at the default thread width and frame (the record stores
        neither)."""
        import io

        from PIL import Image

        from imgprep.formats.base import Preview
        from imgprep.kernels.stringart import render_png

        image = example["image"]
        art = render_png(example["path"], int(example["n_pins"]), image.shape[0])
        with Image.open(io.BytesIO(art)) as png:
            panel = np.asarray(png)[..., np.newaxis]
        return Preview(
            filename=example["filename"].decode("utf-8", "surrogateescape"),
            label=-1,
            text="",
            image=image,
            panels={"string art": panel},
        )

    def check_batch(self, batch: dict, first: int, expected, problems, seen) -> None:
        """Image shape and target consistency; no labels to check."""
        from imgprep.kernels.stringart import adjacency_indices  # numba: only for this format

        for i, where in count_names(batch, first, expected, seen):
            version, res = int(batch["version"][i]), int(batch["res"][i])
            if version != TANGLER_VERSION:
                problems.add("wrong record/version", f"{where}: {version}, want {TANGLER_VERSION}")
            decoded = batch["decoded"][i].tolist()
            if decoded != [res, res, 1]:
                got = "x".join(map(str, decoded))
                problems.add("decoded image is not res x res x 1", f"{where}: {got}, res {res}")
            n_pins, sparsity = int(batch["n_pins"][i]), int(batch["sparsity"][i])
            indices = batch["indices"][i][: batch["n_indices"][i]]
            pins = batch["path"][i][: batch["path_length"][i]]
            if len(indices) != 2 * sparsity:
                problems.add(
                    "target/indices length != 2 * sparsity", f"{where}: {len(indices)}, {sparsity}"
                )
            for key, value in (("n_pins", n_pins), ("path_length", len(pins))):
                same_everywhere(seen, key, value, where, problems)
            if not 1 <= n_pins <= 256:
                problems.add("target/n_pins outside 1..256", f"{where}: {n_pins}")
            elif pins.size and (pins.min() < 0 or pins.max() >= n_pins):
                problems.add("target/path pin outside 0..n_pins-1", f"{where}: n_pins {n_pins}")
            elif not np.array_equal(indices, adjacency_indices(pins, n_pins).reshape(-1)):
                problems.add("target/indices do not match target/path", where)

    def tfds_features(self, classes: int, settings: Mapping, embedding_size: int | None) -> dict:
        return {
            "record/version": tfds_int64(),
            "record/name": tfds_text(),
            "image/encoded": tfds_image(1),
            "image/res": tfds_int64(),
            "target/n_pins": tfds_int64(),
            "target/sparsity": tfds_int64(),
            "target/indices": tfds_tensor("string"),  # tf.io.parse_tensor(..., tf.uint8)
            "target/path": tfds_tensor("int64", [None]),
        }

    def loading_snippet(self, records_folder: str, splits, config: dict) -> str:
        """Tangler's parse (README, *Tangler*): the gray image reshaped by ``image/res`` and
        the pin adjacency from ``target/indices``, over each split folder's ``*.tfrecord``
        (what tangler/train.py globs)."""
        import json

        opened = snippet_dataset_args(config)
        return f"""import glob
import os

import tensorflow as tf

data_dir = {json.dumps(records_folder)}  # relative to this card's folder: run it from there


def parse(serialized):
    ex = tf.io.parse_single_example(
        serialized,
        {{
            "record/version": tf.io.FixedLenFeature([], tf.int64),
            "image/encoded": tf.io.FixedLenFeature([], tf.string),
            "image/res": tf.io.FixedLenFeature([], tf.int64),
            "target/n_pins": tf.io.FixedLenFeature([], tf.int64, 256),
            "target/sparsity": tf.io.FixedLenFeature([], tf.int64),
            "target/indices": tf.io.FixedLenFeature([], tf.string),
        }},
    )
    side, pins = ex["image/res"], ex["target/n_pins"]
    image = tf.reshape(tf.io.decode_jpeg(ex["image/encoded"]), [side, side, 1])
    pairs = tf.io.parse_tensor(ex["target/indices"], tf.uint8)
    pairs = tf.reshape(tf.cast(pairs, tf.int64), [ex["target/sparsity"], 2])
    ones = tf.ones([ex["target/sparsity"]], tf.int64)
    lower = tf.sparse.to_dense(tf.sparse.SparseTensor(pairs, ones, [pins, pins]))
    return image, tf.clip_by_value(lower + tf.transpose(lower), 0, 1)  # pin adjacency


for split in {json.dumps(list(splits))}:
    files = sorted(glob.glob(os.path.join(data_dir, split, "*.tfrecord")))
    dataset = tf.data.TFRecordDataset({opened}).map(parse)
    count = sum(1 for image, adjacency in dataset)
    print(f"{{split}}: {{count}} records")
"""


FORMAT = TanglerFormat()
