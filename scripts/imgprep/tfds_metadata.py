"""TFDS metadata for a schema's records folder, so ``tfds.builder_from_directory`` loads it.

Writes what ``tfds.folder_dataset.write_metadata`` writes (tensorflow-datasets 4.9.10;
a test compares the bytes): ``features.json`` (the FeaturesDict, one feature per key of
our Examples, so TFDS' serialized spec is exactly our feature keys), ``dataset_info.json``
(splits with their shard lengths and file template) and, for labelled schemas, the
ClassLabel names file. Built from what already exists — the label table and the
verification report (records and record bytes per shard) — so no shard is read again
and the workflow needs no TensorFlow or TFDS for it.

File templates: TFDS formats ``{SPLIT}``, ``{SHARD_INDEX}``, ``{NUM_SHARDS}`` and
``{SHARD_X_OF_Y}`` with Python's ``str.format``, shard numbers zero-padded to 5 digits
and counted from 0. ``imagenet``/``dlbs`` shards (``train-00000-of-01024``) fit
``{SPLIT}-{SHARD_X_OF_Y}``. Tangler's ``tangle_00001-of-01024.tfrecord`` (counted from
1) and Koalarization's ``lab_images_0.tfrecord`` (not padded) cannot be produced by any
template, so there every shard file is a TFDS split of its own, named after the file
(``train-tangle_00001-of-01024``, ``lab_images_0``), with a literal template;
``split="a+b+…"`` reads several.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

from imgprep.atomic import atomic_write
from imgprep.records import get_schema, read_labels

__all__ = [
    "dataset_info",
    "features_for",
    "label_names",
    "metadata_files",
    "write_metadata",
]

_FEATURES = "tensorflow_datasets.core.features."
VERSION = "1.0.0"  # write_metadata's fallback when the folder name is not a version
CLASS_KEY = "image/class/label"
# ClassLabel saves its names under the feature's key with "/" replaced by "-"
LABELS_FILE = CLASS_KEY.replace("/", "-") + ".labels.txt"
_BACKGROUND = "background"
_PER_FILE_SPLITS = ("tangler", "koalarization")  # no template names their files


# -- features.json ------------------------------------------------------------------


def _text() -> dict:
    return {"pythonClassName": _FEATURES + "text_feature.Text", "text": {}}


def _tensor(dtype: str, shape: Sequence[int | None] = (), scalar: bool = False) -> dict:
    dimensions = {"dimensions": [str(-1 if d is None else d) for d in shape]} if shape else {}
    cls = "scalar.Scalar" if scalar else "tensor_feature.Tensor"
    return {
        "pythonClassName": _FEATURES + cls,
        "tensor": {"dtype": dtype, "encoding": "none", "shape": dimensions},
    }


def _int64() -> dict:
    return _tensor("int64", scalar=True)


def _image(channels: int) -> dict:
    return {
        "image": {
            "dtype": "uint8",
            "encodingFormat": "jpeg",
            "shape": {"dimensions": ["-1", "-1", str(channels)]},
        },
        "pythonClassName": _FEATURES + "image_feature.Image",
    }


def _class_label(count: int) -> dict:
    return {
        "classLabel": {"numClasses": str(count)},
        "pythonClassName": _FEATURES + "class_label_feature.ClassLabel",
    }


def _nest(flat: Mapping[str, dict]) -> dict:
    """FeaturesDict of FeaturesDicts from "/"-separated keys: TFDS flattens nested dicts
    back to exactly these keys when it parses an Example."""
    tree: dict = {}
    for key, feature in flat.items():
        *parents, leaf = key.split("/")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = feature

    def to_feature(node: dict) -> dict:
        children = {
            name: to_feature(child) if "pythonClassName" not in child else child
            for name, child in node.items()
        }
        return {
            "featuresDict": {"features": children},
            "pythonClassName": _FEATURES + "features_dict.FeaturesDict",
        }

    return to_feature(tree)


def _described_image(encoded: dict, classes: int) -> dict:
    return {
        "image/encoded": encoded,
        "image/format": _text(),
        "image/height": _int64(),
        "image/width": _int64(),
        "image/channels": _int64(),
        "image/colorspace": _text(),
        CLASS_KEY: _class_label(classes),
        "image/class/synset": _text(),
        "image/class/text": _text(),
        "image/filename": _text(),
    }


def features_for(
    schema: str,
    classes: int,
    channels: int = 3,
    embedding: bool = False,
    lab_size: int = 224,
    embedding_size: int | None = None,
) -> dict:
    """The flat key -> TFDS feature config of a schema's Examples.

    ``classes`` counts ClassLabel names (incl. background); ``channels`` is the stored
    JPEGs' (``resize.colorspace``); ``embedding``: imagenet/dlbs carry ``image/embedding``.
    Boxes stay four float lists (TFDS' BBoxFeature wants one [N, 4] ymin,xmin,ymax,xmax
    key, and our records keep tensorflow/models' separate keys).
    """
    if schema == "imagenet":
        flat = _described_image(_image(channels), classes)
        for side in ("xmin", "ymin", "xmax", "ymax"):
            flat[f"image/object/bbox/{side}"] = _tensor("float32", [None])
        flat["image/object/bbox/label"] = _tensor("int64", [None])
    elif schema == "dlbs":  # raw HWC uint8 bytes: tf.io.decode_raw + reshape(height, width, c)
        flat = _described_image(_tensor("string"), classes)
    elif schema == "tangler":
        flat = {
            "record/version": _int64(),
            "record/name": _text(),
            "image/encoded": _image(1),
            "image/res": _int64(),
            "target/n_pins": _int64(),
            "target/sparsity": _int64(),
            "target/indices": _tensor("string"),  # tf.io.parse_tensor(..., tf.uint8)
            "target/path": _tensor("int64", [None]),
        }
    elif schema == "koalarization":
        flat = {
            "image_name": _text(),
            "image_l": _tensor("float32", [lab_size * lab_size]),
            "image_ab": _tensor("float32", [lab_size * lab_size * 2]),
            "image_embedding": _tensor("float32", [embedding_size]),
        }
    else:
        raise ValueError(f"no TFDS features for schema {schema!r}")
    if embedding and schema in ("imagenet", "dlbs"):
        flat["image/embedding"] = _tensor("float32", [embedding_size])
    return flat


# -- dataset_info.json --------------------------------------------------------------


def _split_entry(name: str, template: str, lengths: Sequence[int], nbytes: int) -> dict:
    entry = {"filepathTemplate": template, "name": name}
    if nbytes:  # proto3 JSON leaves out zero values
        entry["numBytes"] = str(nbytes)
    entry["shardLengths"] = [str(n) for n in lengths]
    return entry


def dataset_info(schema: str, report: Mapping, record_paths: Mapping[str, Sequence[str]]) -> dict:
    """dataset_info.json from the verification report ({"splits": {split: [shard, …]}})
    and each split's shard paths relative to the schema folder, in shard order."""
    splits = []
    for split, paths in record_paths.items():
        shards = report["splits"].get(split, [])
        names = [shard["record"] for shard in shards]
        if names != [os.path.basename(p) for p in paths]:
            raise ValueError(
                f"verification report of {schema}/{split} lists {names[:3]}…, "
                f"the workflow's shards are {list(paths)[:3]}…"
            )
        if schema in _PER_FILE_SPLITS:
            for path, shard in zip(paths, shards, strict=True):
                name = path.removesuffix(".tfrecord").replace("/", "-")
                splits.append(_split_entry(name, path, [shard["records"]], shard["example_bytes"]))
        else:
            splits.append(
                _split_entry(
                    split,
                    "{SPLIT}-{SHARD_X_OF_Y}",
                    [shard["records"] for shard in shards],
                    sum(shard["example_bytes"] for shard in shards),
                )
            )
    spec = get_schema(schema)
    return {
        "description": f"imgprep {schema} records: {spec.description}",
        "fileFormat": "tfrecord",
        "splits": splits,
        "version": VERSION,
    }


def label_names(labels_tsv, label_base: int, schema: str) -> list[str]:
    """ClassLabel names in label order: the synsets, after ``background`` when the
    schema's labels start at 1."""
    labels = read_labels(labels_tsv, label_base)
    synsets = sorted(labels.index, key=labels.index.__getitem__)
    if get_schema(schema).label(0, label_base) == 0:
        return synsets
    if _BACKGROUND in synsets:
        raise ValueError(f"{labels_tsv}: a class named {_BACKGROUND!r} collides with label 0")
    return [_BACKGROUND, *synsets]


def metadata_files(schema: str) -> list[str]:
    """The files write_metadata puts in the schema's folder."""
    files = ["dataset_info.json", "features.json"]
    return [*files, LABELS_FILE] if schema in ("imagenet", "dlbs") else files


def write_metadata(
    folder,
    schema: str,
    report: Mapping,
    record_paths: Mapping[str, Sequence[str]],
    labels_tsv,
    label_base: int,
    channels: int = 3,
    embedding: bool = False,
    lab_size: int = 224,
) -> list[str]:
    """Write the TFDS metadata of ``schema`` into ``folder`` (atomically, file by file);
    returns the paths written. ``record_paths``: per split, the shard paths relative to
    ``folder`` in shard order."""
    labelled = schema in ("imagenet", "dlbs")
    names = label_names(labels_tsv, label_base, schema) if labelled else []
    sizes = {
        shard.get("embedding_size")
        for shards in report["splits"].values()
        for shard in shards
        if shard.get("embedding_size")
    }
    embedding_size = sizes.pop() if len(sizes) == 1 else None
    flat = features_for(schema, len(names), channels, embedding, lab_size, embedding_size)
    contents = {
        "features.json": json.dumps(_nest(flat), indent=4, sort_keys=True),
        "dataset_info.json": json.dumps(
            dataset_info(schema, report, record_paths), indent=2, sort_keys=True
        ),
    }
    if labelled:
        contents[LABELS_FILE] = "".join(f"{name}\n" for name in names)
    written = []
    for name in metadata_files(schema):
        path = os.path.join(folder, name)
        with atomic_write(path, "w", encoding="utf-8", newline="") as handle:
            handle.write(contents[name])
        written.append(path)
    return written
