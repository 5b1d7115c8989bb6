"""The described-image layout that imagenet and dlbs share: the image with its shape,
colorspace, class and file name under tensorflow/models' ``image/...`` keys, and the
checks of those keys when read back."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from imgprep.files.tfrecord import Feature, bytes_feature, float_feature, int64_feature
from imgprep.formats.base import COLORSPACE_CHANNELS, Sample, check_described, check_square_resize
from imgprep.formats.tfrecords import (
    CLASS_KEY,
    TFRecordFormat,
    tfds_class_label,
    tfds_int64,
    tfds_tensor,
    tfds_text,
)

__all__ = ["DescribedImageFormat"]


class DescribedImageFormat(TFRecordFormat):
    """A labelled TFRecord format of described images; ``image/embedding`` is added when
    embed.in_records. Subclasses give ``format_value``, ``features`` and ``parser``."""

    format_value = b""  # what image/format holds
    labelled = True
    takes_embeddings = True
    square_colorspace: str | None = None  # the consumer reads one square side, this colorspace

    def check_config(self, config: dict) -> None:
        if self.square_colorspace is not None:
            check_square_resize(config["resize"], self.name, self.square_colorspace)

    def described(self, sample: Sample, label: int, encoded: bytes) -> dict[str, Feature]:
        """Keys both layouts share: the image's shape, colorspace, class and name."""
        return {
            "image/encoded": bytes_feature(encoded),
            "image/format": bytes_feature(self.format_value),
            "image/height": int64_feature(sample.height),
            "image/width": int64_feature(sample.width),
            "image/channels": int64_feature(sample.channels),
            "image/colorspace": bytes_feature(sample.colorspace),
            "image/class/label": int64_feature(label),
            "image/class/synset": bytes_feature(sample.synset),
            "image/class/text": bytes_feature(sample.text),
            "image/filename": bytes_feature(sample.filename),
        }

    @staticmethod
    def with_embedding(sample: Sample, features: dict[str, Feature]) -> dict[str, Feature]:
        """Add ``image/embedding`` when the sample has one; otherwise the features unchanged."""
        if sample.embedding is not None:
            features["image/embedding"] = float_feature(sample.embedding)
        return features

    @staticmethod
    def parse_features(tf) -> dict:
        string = tf.io.FixedLenFeature([], tf.string)
        int64 = tf.io.FixedLenFeature([], tf.int64)
        return {
            "image/encoded": string,
            "image/format": string,
            "image/height": int64,
            "image/width": int64,
            "image/channels": int64,
            "image/colorspace": string,
            "image/class/label": int64,
            "image/class/synset": string,
            "image/class/text": string,
            "image/filename": string,
        }

    @staticmethod
    def summary(tf, example: dict, shape) -> dict:
        """The small per-record facts checked in Python (never the pixels)."""
        return {
            "filename": example["image/filename"],
            "label": example["image/class/label"],
            "synset": example["image/class/synset"],
            "text": example["image/class/text"],
            "format": example["image/format"],
            "colorspace": example["image/colorspace"],
            "hwc": tf.stack(
                [example["image/height"], example["image/width"], example["image/channels"]]
            ),
            "decoded": tf.cast(shape, tf.int64),
        }

    @staticmethod
    def described_preview(tf, example: dict) -> dict:
        """A preview's name, label and text (the class text, else its synset) from the
        parsed keys both layouts share; the format decodes the image."""
        text, synset = example["image/class/text"], example["image/class/synset"]
        return {
            "filename": example["image/filename"],
            "label": example["image/class/label"],
            "text": tf.where(tf.strings.length(text) > 0, text, synset),
        }

    def check_batch(self, batch: dict, first: int, expected, problems, seen) -> None:
        names = [n.decode("utf-8", "surrogateescape") for n in batch["filename"]]
        hwc, decoded = batch["hwc"], batch["decoded"]
        for i, name in enumerate(names):
            where = f"record {first + i} ({name})"
            seen["names"][name] += 1
            label = int(batch["label"][i])
            seen["labels"].add(label)
            synset = batch["synset"][i].decode("utf-8", "surrogateescape")
            text = batch["text"][i].decode("utf-8", "surrogateescape")
            if batch["format"][i] != self.format_value:
                problems.add("wrong image/format", f"{where}: {batch['format'][i]!r}")
            colorspace = batch["colorspace"][i].decode("utf-8", "surrogateescape")
            if COLORSPACE_CHANNELS.get(colorspace) != hwc[i][2]:
                problems.add("colorspace/channels mismatch", f"{where}: {colorspace} {hwc[i][2]}")
            if not np.array_equal(hwc[i], decoded[i]):
                got = "x".join(map(str, decoded[i]))
                want = "x".join(map(str, hwc[i]))
                if "nbytes" in batch:  # raw pixels: a wrong size shows as a wrong byte count
                    got = f"{batch['nbytes'][i]} bytes"
                    want = f"{want} = {np.prod(hwc[i])} bytes"
                problems.add(
                    "decoded image does not match its size", f"{where}: {got}, want {want}"
                )
            if "boxes" in batch and len(set(batch["boxes"][i].tolist())) != 1:
                problems.add(
                    "bbox lists differ in length", f"{where}: {batch['boxes'][i].tolist()}"
                )
            elif "boxes_valid" in batch and not batch["boxes_valid"][i]:
                problems.add("bbox outside [0, 1] or empty", where)
            check_described(expected.get(name), label, synset, text, where, problems)

    def metadata_settings(self, config: dict) -> dict:
        return {"embedding": config["embed"]["in_records"]}

    @staticmethod
    def tfds_described(encoded: dict, classes: int) -> dict:
        return {
            "image/encoded": encoded,
            "image/format": tfds_text(),
            "image/height": tfds_int64(),
            "image/width": tfds_int64(),
            "image/channels": tfds_int64(),
            "image/colorspace": tfds_text(),
            CLASS_KEY: tfds_class_label(classes),
            "image/class/synset": tfds_text(),
            "image/class/text": tfds_text(),
            "image/filename": tfds_text(),
        }

    @staticmethod
    def tfds_with_embedding(flat: dict, settings: Mapping, embedding_size: int | None) -> dict:
        if settings.get("embedding"):
            flat["image/embedding"] = tfds_tensor("float32", [embedding_size])
        return flat
