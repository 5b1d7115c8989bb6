"""koalarization: Deep Koalarization's lab_batch records, L and ab targets with the CNN
embedding of each image (stage embed); no label is stored.

What its reader declares: ``LabImageRecordReader``
(koalarization/dataset/tfrecords/images/lab_image_record.py) parses ``image_l`` FixedLen
[224 * 224], ``image_ab`` FixedLen [224 * 224 * 2] and ``image_embedding`` FixedLen [1001]
(TF-slim Inception-ResNet-v2 logits, class 0 the background); a record of any other size
fails to parse.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable, Mapping

import numpy as np

from imgprep.errors import ConfigError
from imgprep.files.tfrecord import Feature, bytes_feature, float_feature
from imgprep.formats.base import Sample, count_names, same_everywhere
from imgprep.formats.jpeg import jpeg_header
from imgprep.formats.tfrecords import TFRecordFormat, snippet_dataset_args, tfds_tensor, tfds_text

__all__ = ["EMBEDDING", "FORMAT", "LAB_SIZE", "slim_logits"]

LAB_SIZE = 224
EMBEDDING = 1001
_L_TOLERANCE = 1e-3


def slim_logits(embedding: np.ndarray) -> np.ndarray:
    """ImageNet logits in TF-slim's 1001-class order (0 = background, slim k+1 = Keras k).

    1001 values are slim's already and stay as they are. 1000 values (a Keras
    classifier, which has no background class) get a background entry at index 0 that
    holds their minimum: never the argmax, and softmax gives it the least probability,
    as a trained slim model does (no ImageNet image is labelled background).
    """
    embedding = np.asarray(embedding, dtype=np.float32)
    if embedding.shape == (EMBEDDING,):
        return embedding
    if embedding.shape == (EMBEDDING - 1,):
        return np.concatenate([embedding.min(keepdims=True), embedding])
    raise ValueError(
        f"koalarization stores {EMBEDDING} ImageNet logits (TF-slim's order) "
        f"or takes 1000 (Keras' order, background added); the embedding has "
        f"{embedding.size} values (embed.output must be 'logits')"
    )


def _lab_images(split: str, index: int) -> str:
    """Koalarization's training reader globs lab_images_*.tfrecord and its evaluation
    reader val_lab_images_*.tfrecord, both in one folder; other splits get their name
    as prefix, so neither glob picks them up."""
    prefix = {"train": "", "validation": "val_", "val": "val_"}.get(split, f"{split}_")
    return f"{prefix}lab_images_{index}.tfrecord"


def keras_file_units(path) -> int | None:
    """Units of the Dense layer a whole-model ``.keras`` file outputs (its config.json,
    read without TensorFlow); None when the output is no Dense layer."""
    try:
        with zipfile.ZipFile(path) as archive:
            model = json.loads(archive.read("config.json"))["config"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise ConfigError(
            f"config key 'embed.weights': {path} is no .keras model: {error}"
        ) from None
    layers = {layer["config"].get("name"): layer for layer in model.get("layers", [])}
    outputs = model.get("output_layers")
    if outputs is None:  # Sequential: the last layer
        last = model["layers"][-1] if model.get("layers") else None
    else:
        if outputs and isinstance(outputs[0], str):  # one output: [name, node, tensor]
            last = layers.get(outputs[0])
        else:  # [[name, node, tensor], ...]: one output only
            last = layers.get(outputs[0][0]) if len(outputs) == 1 else None
    if last is None or last.get("class_name") != "Dense":
        return None
    return last["config"].get("units")


class KoalarizationFormat(TFRecordFormat):
    name = "koalarization"
    description = "Lab targets (image_l, image_ab) + CNN embedding (Deep Koalarization)"
    name_pattern = r"[^/]*lab_images_\d+\.tfrecord"
    needs = frozenset({"embed"})
    takes_embeddings = True
    memory_mb = 8000  # 224 x 224 x 3 float targets per image, besides the shard's tar
    across_shards = ("embedding_size",)
    name_key = "image_name"
    tfds_split_per_file = True

    def shard_name(self, split: str, index: int, total: int) -> str:
        return _lab_images(split, index)

    # -- configuration ---------------------------------------------------------------

    def check_own_keys(self, config: dict) -> None:
        lab_size = config["embed"]["lab_size"]
        if lab_size != LAB_SIZE:
            raise ConfigError(
                f"config key 'embed.lab_size': schema koalarization stores "
                f"{LAB_SIZE}x{LAB_SIZE} Lab targets, what Deep Koalarization's "
                f"LabImageRecordReader declares (any other side makes every record "
                f"unreadable); drop the key or set {LAB_SIZE}, not {lab_size}"
            )

    def check_config(self, config: dict) -> None:
        """image_embedding FixedLen [1001]: ImageNet logits in TF-slim's order (a Keras
        classifier's 1000 get the background entry added)."""
        if config["embed"]["output"] != "logits":
            raise ConfigError(
                f"config key 'embed.output': schema koalarization stores "
                f"{EMBEDDING} ImageNet logits (Deep Koalarization's reader "
                f"declares image_embedding FixedLen [{EMBEDDING}]); use 'logits', "
                f"not {config['embed']['output']!r}"
            )
        weights = config["embed"]["weights"]
        if weights is not None and str(weights).endswith(".keras"):
            units = keras_file_units(weights)
            if units not in (EMBEDDING - 1, EMBEDDING):
                raise ConfigError(
                    f"config key 'embed.weights': schema koalarization needs ImageNet logits "
                    f"(1000, or {EMBEDDING} with slim's background) from the "
                    f"model's output; {weights} ends in "
                    + ("no Dense layer" if units is None else f"a Dense layer of {units} units")
                )

    def record_settings(self, config: dict) -> dict:
        return {"lab_size": config["embed"]["lab_size"]}

    # -- records ---------------------------------------------------------------------

    def features(self, sample: Sample, label: int) -> dict[str, Feature]:
        """image_l is 2L/100 - 1 and image_ab is ab/127, both flattened row-major (HW,
        HWC) at 224 x 224; image_embedding holds 1001 logits in slim's order."""
        from imgprep.kernels.lab import lab_targets  # colour conversion: only for this format

        jpeg_header(sample)
        if sample.embedding is None:
            raise ValueError(f"{sample.where()}: koalarization needs an embedding")
        try:
            logits = slim_logits(sample.embedding)
        except ValueError as error:
            raise ValueError(f"{sample.where()}: {error}") from None
        size = LAB_SIZE
        lightness, ab = lab_targets(sample.data, size)
        lightness, ab = np.asarray(lightness), np.asarray(ab)
        if lightness.shape != (size, size) or ab.shape != (size, size, 2):
            raise ValueError(
                f"{sample.where()}: Lab targets have shapes {lightness.shape} and {ab.shape}, "
                f"want ({size}, {size}) and ({size}, {size}, 2)"
            )
        return {
            "image_name": bytes_feature(sample.filename),
            "image_l": float_feature(lightness),
            "image_ab": float_feature(ab),
            "image_embedding": float_feature(logits),
        }

    # -- verification ----------------------------------------------------------------

    def parser(self, tf) -> Callable:
        """L and ab fixed at 224 x 224; the embedding read at any length, so that a wrong
        size is reported as such, not as an unreadable record."""
        pixels = LAB_SIZE * LAB_SIZE
        features = {
            "image_name": tf.io.FixedLenFeature([], tf.string),
            "image_l": tf.io.FixedLenFeature([pixels], tf.float32),
            "image_ab": tf.io.FixedLenFeature([pixels * 2], tf.float32),
            "image_embedding": tf.io.VarLenFeature(tf.float32),
        }

        def parse(record):
            example = tf.io.parse_single_example(record, features)
            lightness, ab = example["image_l"], example["image_ab"]
            embedding = example["image_embedding"].values
            finite = tf.stack(
                [
                    tf.reduce_all(tf.math.is_finite(lightness)),
                    tf.reduce_all(tf.math.is_finite(ab)),
                    tf.reduce_all(tf.math.is_finite(embedding)),
                ]
            )
            return {
                "filename": example["image_name"],
                "l_range": tf.stack([tf.reduce_min(lightness), tf.reduce_max(lightness)]),
                "ab_range": tf.stack([tf.reduce_min(ab), tf.reduce_max(ab)]),
                "finite": finite,
                "embedding_size": tf.size(embedding, out_type=tf.int64),
            }

        return parse

    def preview_parser(self, tf) -> Callable:
        """LabImageRecordReader's FixedLen image_l and image_ab, reshaped to the image."""
        pixels = LAB_SIZE * LAB_SIZE
        features = {
            "image_name": tf.io.FixedLenFeature([], tf.string),
            "image_l": tf.io.FixedLenFeature([pixels], tf.float32),
            "image_ab": tf.io.FixedLenFeature([pixels * 2], tf.float32),
        }

        def parse(record):
            example = tf.io.parse_single_example(record, features)
            return {
                "filename": example["image_name"],
                "l": tf.reshape(example["image_l"], [LAB_SIZE, LAB_SIZE]),
                "ab": tf.reshape(example["image_ab"], [LAB_SIZE, LAB_SIZE, 2]),
            }

        return parse

    def preview(self, example: dict):
        """The stored Lab back in sRGB; "L": the lightness alone (a = b = 0, gray), "ab":
        the colour alone (at L = 50, out-of-gamut colours clipped)."""
        from imgprep.formats.base import Preview
        from imgprep.kernels.lab import lab_to_srgb

        lightness = (example["l"].astype(np.float64) + 1.0) * 50.0  # image_l = 2 L / 100 - 1
        ab = example["ab"].astype(np.float64) * 127.0  # image_ab = ab / 127
        zeros, mid = np.zeros_like(ab), np.full_like(lightness, 50.0)
        return Preview(
            filename=example["filename"].decode("utf-8", "surrogateescape"),
            label=-1,
            text="",
            image=lab_to_srgb(np.dstack([lightness, ab])),
            panels={
                "L": lab_to_srgb(np.dstack([lightness, zeros]))[..., :1],
                "ab": lab_to_srgb(np.dstack([mid, ab])),
            },
        )

    def check_batch(self, batch: dict, first: int, expected, problems, seen) -> None:
        """L and ab in [-1, 1], finite, 1001 logits; no labels."""
        for i, where in count_names(batch, first, expected, seen):
            finite = batch["finite"][i]
            for flag, key in zip(finite, ("image_l", "image_ab", "image_embedding"), strict=True):
                if not flag:
                    problems.add(f"{key} not finite", where)
            for key, flag, values in (
                ("image_l", finite[0], batch["l_range"][i]),
                ("image_ab", finite[1], batch["ab_range"][i]),
            ):
                low, high = (float(v) for v in values)
                if flag and (low < -1 - _L_TOLERANCE or high > 1 + _L_TOLERANCE):
                    problems.add(f"{key} outside [-1, 1]", f"{where}: {low:.4g}..{high:.4g}")
            size = int(batch["embedding_size"][i])
            if size != EMBEDDING:
                problems.add(
                    f"image_embedding not {EMBEDDING} values (Koalarization's reader)",
                    f"{where}: {size}",
                )
            same_everywhere(seen, "embedding_size", size, where, problems)

    # -- TFDS ------------------------------------------------------------------------

    def metadata_settings(self, config: dict) -> dict:
        return {"lab_size": config["embed"]["lab_size"]}

    def tfds_features(self, classes: int, settings: Mapping, embedding_size: int | None) -> dict:
        lab_size = settings.get("lab_size", LAB_SIZE)
        return {
            "image_name": tfds_text(),
            "image_l": tfds_tensor("float32", [lab_size * lab_size]),
            "image_ab": tfds_tensor("float32", [lab_size * lab_size * 2]),
            "image_embedding": tfds_tensor("float32", [embedding_size]),
        }

    def loading_snippet(self, records_folder: str, splits, config: dict) -> str:
        """Deep Koalarization's parse in TF2 (README, *Deep Koalarization*), over the files
        its readers glob: ``lab_images_*.tfrecord`` (train), ``val_lab_images_*`` (val)."""
        import json

        globs = {split: self.shard_name(split, 0, 1).replace("_0.", "_*.") for split in splits}
        side = config["embed"]["lab_size"]
        opened = snippet_dataset_args(config)
        return f"""import glob
import os

import tensorflow as tf

data_dir = {json.dumps(records_folder)}  # relative to this card's folder: run it from there
features = {{
    "image_name": tf.io.FixedLenFeature([], tf.string),
    "image_l": tf.io.FixedLenFeature([{side} * {side}], tf.float32),
    "image_ab": tf.io.FixedLenFeature([{side} * {side} * 2], tf.float32),
    "image_embedding": tf.io.FixedLenFeature([{EMBEDDING}], tf.float32),
}}


def parse(serialized):
    example = tf.io.parse_single_example(serialized, features)
    return (
        tf.reshape(example["image_l"], [{side}, {side}, 1]),
        tf.reshape(example["image_ab"], [{side}, {side}, 2]),
        example["image_embedding"],
    )


for split, pattern in {json.dumps(globs)}.items():
    files = sorted(glob.glob(os.path.join(data_dir, pattern)))
    dataset = tf.data.TFRecordDataset({opened}).map(parse).batch(32)
    count = sum(int(embeddings.shape[0]) for lightness, ab, embeddings in dataset)
    print(f"{{split}}: {{count}} records")
"""


FORMAT = KoalarizationFormat()
