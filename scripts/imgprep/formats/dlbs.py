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
from imgprep.formats.tfrecords import tfds_tensor

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


FORMAT = DlbsFormat()
