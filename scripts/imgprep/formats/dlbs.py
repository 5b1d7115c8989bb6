"""dlbs: DLBS fast ingestion, pre-decoded HWC uint8 pixels so training skips JPEG
decoding, 0-based labels, every image exactly ``resize.size`` square and RGB."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from imgprep.files.tfrecord import Feature
from imgprep.formats.base import Sample
from imgprep.formats.described import DescribedImageFormat
from imgprep.formats.imagenet import SPLIT_INDEX_OF_TOTAL, split_index_of_total
from imgprep.formats.jpeg import jpeg_header
from imgprep.formats.tfrecords import snippet_dataset_args, tfds_tensor

__all__ = ["FORMAT"]


def _raw_pixels(tf, example):
    """The stored bytes as uint8 and the (height, width, channels) they claim to be."""
    pixels = tf.io.decode_raw(example["image/encoded"], tf.uint8)
    hwc = tf.stack([example["image/height"], example["image/width"], example["image/channels"]])
    return pixels, hwc


class DlbsFormat(DescribedImageFormat):
    name = "dlbs"
    description = "raw HWC uint8 tensor, 0-based labels (DLBS)"
    name_pattern = SPLIT_INDEX_OF_TOTAL
    zero_based_labels = True
    format_value = b"tensor"
    # DLBS' writer centre-crops and resizes every image to --img_size, RGB, and its fast
    # path slices [0, 0, 0]..[size, size, 3] of it
    square_colorspace = "rgb"

    def shard_name(self, split: str, index: int, total: int) -> str:
        return split_index_of_total(split, index, total)

    def features(self, sample: Sample, label: int) -> dict[str, Feature]:
        pixels = np.asarray(jpeg_header(sample))  # decodes; shape checked by the header
        return self.with_embedding(sample, self.described(sample, label, pixels.tobytes()))

    def parser(self, tf) -> Callable:
        features = self.parse_features(tf)

        def parse(record):
            example = tf.io.parse_single_example(record, features)
            pixels, hwc = _raw_pixels(tf, example)
            shape = tf.cond(
                tf.size(pixels, out_type=tf.int64) == tf.reduce_prod(hwc),
                lambda: tf.shape(tf.reshape(pixels, hwc), out_type=tf.int64),
                lambda: tf.constant([-1, -1, -1], tf.int64),
            )
            summary = self.summary(tf, example, shape)
            summary["nbytes"] = tf.size(pixels, out_type=tf.int64)
            return summary

        return parse

    def preview_parser(self, tf) -> Callable:
        """DLBS' parse_example_proto_with_tensor: decode_raw of the pixels, reshaped to
        (height, width, channels)."""
        features = self.parse_features(tf)

        def parse(record):
            example = tf.io.parse_single_example(record, features)
            pixels, hwc = _raw_pixels(tf, example)
            return {**self.described_preview(tf, example), "image": tf.reshape(pixels, hwc)}

        return parse

    def tfds_features(self, classes: int, settings: Mapping, embedding_size: int | None) -> dict:
        # raw HWC uint8 bytes: tf.io.decode_raw + reshape(height, width, channels)
        flat = self.tfds_described(tfds_tensor("string"), classes)
        return self.tfds_with_embedding(flat, settings, embedding_size)

    def loading_snippet(self, records_folder: str, splits, config: dict) -> str:
        """DLBS' fast path (README, *dlbs*): the raw tensor reshaped, the model's S x S x 3
        corner sliced off it; its reader's glob ``{split}-*-of-*``."""
        import json

        size = config["resize"]["size"]
        side = min(224, size if isinstance(size, int) else min(size))
        opened = snippet_dataset_args(config)
        return f"""import glob
import os

import tensorflow as tf

data_dir = {json.dumps(records_folder)}  # relative to this card's folder: run it from there
side = {side}  # the model's input side S: DLBS' fast path slices [S, S, 3] off every tensor


def parse(serialized):
    int64 = tf.io.FixedLenFeature([], tf.int64)
    features = tf.io.parse_single_example(
        serialized,
        {{
            "image/encoded": tf.io.FixedLenFeature([], tf.string),
            "image/height": int64,
            "image/width": int64,
            "image/channels": int64,
            "image/class/label": tf.io.FixedLenFeature([], tf.int64, -1),
        }},
    )
    height, width = features["image/height"], features["image/width"]
    image = tf.io.decode_raw(features["image/encoded"], tf.uint8)
    image = tf.reshape(image, tf.stack([height, width, features["image/channels"]]))
    return tf.slice(image, [0, 0, 0], [side, side, 3]), features["image/class/label"]  # 0-based


for split in {json.dumps(list(splits))}:
    files = sorted(glob.glob(os.path.join(data_dir, f"{{split}}-*-of-*")))
    dataset = tf.data.TFRecordDataset({opened}).map(parse).batch(32)
    count = sum(int(labels.shape[0]) for images, labels in dataset)
    print(f"{{split}}: {{count}} records")
"""


FORMAT = DlbsFormat()
