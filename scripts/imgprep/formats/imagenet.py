"""imagenet: JPEG bytes under the tensorflow/models keys (build_imagenet_data,
imagenet_to_gcs), read by the TPU ResNet, tensorflow/models, TF-slim, DALI and TFDS."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from imgprep.files.tfrecord import Feature, float_feature, int64_feature
from imgprep.formats.base import Sample
from imgprep.formats.described import DescribedImageFormat
from imgprep.formats.jpeg import jpeg_header
from imgprep.formats.tfrecords import snippet_dataset_args, tfds_image, tfds_tensor

__all__ = ["FORMAT"]

_BOX_SIDES = ("xmin", "ymin", "xmax", "ymax")


def split_index_of_total(split: str, index: int, total: int) -> str:
    """``train-00000-of-01024``: the name tensorflow/models, TPU and slim glob for."""
    return f"{split}-{index:05d}-of-{total:05d}"


SPLIT_INDEX_OF_TOTAL = r"[^/]+-\d{5}-of-\d{5}"


class ImagenetFormat(DescribedImageFormat):
    name = "imagenet"
    description = "JPEG bytes + tensorflow/models ImageNet keys"
    name_pattern = SPLIT_INDEX_OF_TOTAL
    stores_boxes = True
    format_value = b"JPEG"

    def shard_name(self, split: str, index: int, total: int) -> str:
        return split_index_of_total(split, index, total)

    def features(self, sample: Sample, label: int) -> dict[str, Feature]:
        jpeg_header(sample)
        boxes = np.asarray(sample.boxes, dtype=np.float64).reshape(-1, 4)
        features = {
            **self.described(sample, label, sample.data),
            "image/object/bbox/xmin": float_feature(boxes[:, 0]),
            "image/object/bbox/ymin": float_feature(boxes[:, 1]),
            "image/object/bbox/xmax": float_feature(boxes[:, 2]),
            "image/object/bbox/ymax": float_feature(boxes[:, 3]),
            "image/object/bbox/label": int64_feature([label] * len(boxes)),
        }
        return self.with_embedding(sample, features)

    def parser(self, tf) -> Callable:
        features = self.parse_features(tf)
        bbox_keys = [f"image/object/bbox/{k}" for k in _BOX_SIDES]
        features.update({k: tf.io.VarLenFeature(tf.float32) for k in bbox_keys})
        features["image/object/bbox/label"] = tf.io.VarLenFeature(tf.int64)

        def boxes_valid(xmin, ymin, xmax, ymax):
            """Normalized, ordered, not empty: what consumers' crop code assumes."""
            ordered = tf.logical_and(xmin < xmax, ymin < ymax)
            inside = tf.logical_and(
                tf.logical_and(xmin >= 0.0, ymin >= 0.0), tf.logical_and(xmax <= 1.0, ymax <= 1.0)
            )
            return tf.reduce_all(tf.logical_and(ordered, inside))

        def parse(record):
            example = tf.io.parse_single_example(record, features)
            image = tf.io.decode_jpeg(example["image/encoded"], channels=0)
            summary = self.summary(tf, example, tf.shape(image))
            counts = [tf.size(example[k].values) for k in [*bbox_keys, "image/object/bbox/label"]]
            summary["boxes"] = tf.cast(tf.stack(counts), tf.int64)
            summary["boxes_valid"] = tf.cond(
                tf.equal(tf.reduce_min(counts), tf.reduce_max(counts)),
                lambda: boxes_valid(*(example[k].values for k in bbox_keys)),
                lambda: tf.constant(False),
            )
            return summary

        return parse

    def preview_parser(self, tf) -> Callable:
        """What the TPU ResNet and tensorflow/models read: decode_jpeg of image/encoded
        (channels as stored) and the boxes as [N, 4] (xmin, ymin, xmax, ymax)."""
        features = self.parse_features(tf)
        bbox_keys = [f"image/object/bbox/{k}" for k in _BOX_SIDES]
        features.update({k: tf.io.VarLenFeature(tf.float32) for k in bbox_keys})

        def parse(record):
            example = tf.io.parse_single_example(record, features)
            return {
                **self.described_preview(tf, example),
                "image": tf.io.decode_jpeg(example["image/encoded"], channels=0),
                "boxes": tf.stack([example[k].values for k in bbox_keys], axis=1),
            }

        return parse

    def metadata_settings(self, config: dict) -> dict:
        channels = 3 if config["resize"]["colorspace"] == "rgb" else 1
        return {"channels": channels, **super().metadata_settings(config)}

    def tfds_features(self, classes: int, settings: Mapping, embedding_size: int | None) -> dict:
        """Boxes stay four float lists (TFDS' BBoxFeature wants one [N, 4] ymin,xmin,ymax,
        xmax key, and the records keep tensorflow/models' separate keys)."""
        flat = self.tfds_described(tfds_image(settings.get("channels", 3)), classes)
        for side in _BOX_SIDES:
            flat[f"image/object/bbox/{side}"] = tfds_tensor("float32", [None])
        flat["image/object/bbox/label"] = tfds_tensor("int64", [None])
        return self.tfds_with_embedding(flat, settings, embedding_size)

    def loading_snippet(self, records_folder: str, splits, config: dict) -> str:
        """TPU ResNet's and tensorflow/models' parse (README, *Loading*), over each split's
        ``{split}-*-of-*`` files as their readers glob them."""
        import json

        base = config["labels"]["base"]
        label = (
            'features["image/class/label"] - 1  # labels.base 1: 0..N-1, as TPU and models do'
            if base
            else 'features["image/class/label"]  # labels.base 0: already 0..N-1'
        )
        opened = snippet_dataset_args(config)
        return f"""import os

import tensorflow as tf

data_dir = {json.dumps(records_folder)}  # relative to this card's folder: run it from there


def parse(serialized):
    features = tf.io.parse_single_example(
        serialized,
        {{
            "image/encoded": tf.io.FixedLenFeature([], tf.string, ""),
            "image/class/label": tf.io.FixedLenFeature([], tf.int64, -1),
        }},
    )
    image = tf.image.resize(tf.io.decode_jpeg(features["image/encoded"], channels=3), [224, 224])
    return image, {label}


for split in {json.dumps(list(splits))}:
    pattern = os.path.join(data_dir, f"{{split}}-*-of-*")
    files = tf.data.Dataset.list_files(pattern, shuffle=False)
    dataset = tf.data.TFRecordDataset({opened}).map(parse).batch(32)
    count = sum(int(labels.shape[0]) for images, labels in dataset)
    print(f"{{split}}: {{count}} records")
"""


FORMAT = ImagenetFormat()
