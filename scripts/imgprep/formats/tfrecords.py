"""The TFRecord container that imagenet, dlbs, tangler and koalarization share.

Writing goes through imgprep.files.tfrecord (no TensorFlow: it runs once per shard); reading
back goes through tf.data with the format's own parser, so that the real consumer's
parser and JPEG decoder get the last word. Uncompressed shards get a DALI / ``tfrecord``
index file and, in the format's folder, the TFDS metadata that
``tfds.builder_from_directory`` loads: what ``tfds.folder_dataset.write_metadata`` writes
(tensorflow-datasets 4.9.10; a test compares the bytes), built from the label table and
the verification report, so no shard is read again.

TFDS file templates: TFDS formats ``{SPLIT}``, ``{SHARD_INDEX}``, ``{NUM_SHARDS}`` and
``{SHARD_X_OF_Y}`` with ``str.format``, shard numbers zero-padded to 5 digits and counted
from 0. ``imagenet``/``dlbs`` shards (``train-00000-of-01024``) fit
``{SPLIT}-{SHARD_X_OF_Y}``. Tangler's ``tangle_00001-of-01024.tfrecord`` (counted from 1)
and Koalarization's ``lab_images_0.tfrecord`` (not padded) cannot be produced by any
template, so there every shard file is a TFDS split of its own, named after the file
(``train-tangle_00001-of-01024``, ``lab_images_0``), with a literal template
(``tfds_split_per_file``); ``split="a+b+…"`` reads several.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from imgprep.files.labels import read_labels
from imgprep.files.tfrecord import Feature, TFRecordWriter, encode_example, normalize_compression
from imgprep.formats.base import MetadataInputs, RecordFormat, Sample, UnreadableShard

__all__ = ["LABELS_FILE", "TFRecordFormat", "tensorflow"]

_BATCH = 64
_FEATURES = "tensorflow_datasets.core.features."
VERSION = "1.0.0"  # write_metadata's fallback when the folder name is not a version
CLASS_KEY = "image/class/label"
# ClassLabel saves its names under the feature's key with "/" replaced by "-"
LABELS_FILE = CLASS_KEY.replace("/", "-") + ".labels.txt"
_TFDS_FILES = ("dataset_info.json", "features.json")
_BACKGROUND = "background"


def tensorflow(threads: int):
    """Import TensorFlow quietly and bound its thread pools to ``threads``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf  # env: only verify_records, report_sheet needs it

    # Only possible before the runtime starts (not in a process that used TF already).
    threading = tf.config.threading
    if threading.get_intra_op_parallelism_threads() != threads:
        with contextlib.suppress(RuntimeError):
            threading.set_intra_op_parallelism_threads(threads)
    if threading.get_inter_op_parallelism_threads() != threads:
        with contextlib.suppress(RuntimeError):
            threading.set_inter_op_parallelism_threads(threads)
    return tf


def _first_line(exc) -> str:
    """The gist of a TF error, without its {{function_node ...}} and [Op:...] wrapping."""
    if isinstance(exc, UnicodeDecodeError):  # TF quoted the bad record's raw bytes
        return "not a parsable tf.train.Example (TensorFlow's message is not UTF-8)"
    text = (getattr(exc, "message", None) or str(exc)).strip()
    text = re.sub(r"\{\{[^}]*\}\}|\[Op:[^\]]*\].*", "", text.splitlines()[0] if text else "")
    return text.strip()[:300] or type(exc).__name__


class _TFRecordReader:
    """tf.data over one shard at a time with the format's parser, in batches."""

    def __init__(self, spec: TFRecordFormat, threads: int):
        self.tf = tensorflow(threads)
        self.parse = spec.parser(self.tf)
        self.name_key = spec.name_key
        self.padded = spec.padded_batches
        self.threads = threads

    def batches(self, path, compression: str) -> Iterator[dict]:
        tf, parse = self.tf, self.parse
        options = tf.data.Options()
        options.threading.private_threadpool_size = self.threads

        def parse_sized(record):
            summary = parse(record)  # TFDS' dataset_info numBytes: the records' own bytes
            summary["record_bytes"] = tf.cast(tf.strings.length(record), tf.int64)
            return summary

        dataset = tf.data.TFRecordDataset(str(path), compression_type=compression).map(
            parse_sized, num_parallel_calls=self.threads, deterministic=True
        )
        # records of varying length (tangler's targets) are padded; lengths travel along
        dataset = dataset.padded_batch(_BATCH) if self.padded else dataset.batch(_BATCH)
        dataset = dataset.prefetch(1).with_options(options)
        count = 0
        try:
            for batch in dataset.as_numpy_iterator():
                yield batch
                count += len(batch["filename"])
        except (tf.errors.OpError, UnicodeDecodeError):  # TF errors quoting raw bytes
            raise UnreadableShard(self._locate_failure(path, compression, count)) from None

    def _locate_failure(self, path, compression, start: int) -> str:
        """Re-read a failed shard record by record to say which record broke, and why."""
        tf = self.tf
        name_only = {self.name_key: tf.io.FixedLenFeature([], tf.string, default_value=b"?")}
        number = 0
        records = iter(tf.data.TFRecordDataset(str(path), compression_type=compression))
        while True:
            try:
                record = next(records)
            except StopIteration:
                return f"error after record {start} did not reproduce"
            except (tf.errors.OpError, UnicodeDecodeError) as exc:
                return f"record {number} unreadable: {_first_line(exc)}"
            if number >= start:
                try:
                    self.parse(record)
                except (tf.errors.OpError, ValueError, UnicodeDecodeError) as exc:
                    try:
                        name = tf.io.parse_single_example(record, name_only)[self.name_key]
                        name = name.numpy().decode("utf-8", "surrogateescape")
                    except (tf.errors.OpError, UnicodeDecodeError):
                        name = "not an Example"
                    return f"record {number} ({name}): {_first_line(exc)}"
            number += 1


class TFRecordFormat(RecordFormat):
    """A format whose shards are TFRecord files of tf.train.Examples. Subclasses give
    ``shard_name``, ``features``, ``parser``, ``check_batch`` and ``tfds_features``."""

    name_key = "image/filename"  # the feature holding a record's file name
    padded_batches = False  # parsed records differ in shape: batch them padded
    labelled = False  # stores class labels: TFDS gets the class names file
    tfds_split_per_file = False  # no TFDS file template names the shards
    metadata_pattern = "|".join(re.escape(name) for name in (*_TFDS_FILES, LABELS_FILE))

    def features(self, sample: Sample, label: int) -> dict[str, Feature]:
        """The tf.train.Example features of one sample (``label`` as stored)."""
        raise NotImplementedError

    def parser(self, tf) -> Callable:
        """A graph function record -> dict of per-record facts (for Dataset.map)."""
        raise NotImplementedError

    def tfds_features(self, classes: int, settings: Mapping, embedding_size: int | None) -> dict:
        """The flat key -> TFDS feature config of the Examples (``classes`` counts the
        ClassLabel names, background included)."""
        raise NotImplementedError

    # -- container -------------------------------------------------------------------

    def has_record_index(self, compression: str | None) -> bool:
        # DALI and the tfrecord package seek by an index of uncompressed files only
        return normalize_compression(compression) == ""

    def write_shard(
        self, samples: Iterable[Sample], out_path, compression: str, index_path, label_base: int
    ) -> dict:
        with TFRecordWriter(out_path, compression, index_path) as writer:
            for sample in samples:
                label = self.label(sample.label_index, label_base)
                writer.write(encode_example(self.features(sample, label)))
        return {"records": writer.count, "sha256": writer.sha256, "bytes": writer.nbytes}

    def reader(self, threads: int) -> _TFRecordReader:
        return _TFRecordReader(self, threads)

    def previews(self, path, compression: str | None, limit: int) -> Iterator:
        """tf.data over the shard (compression as written) and the format's
        ``preview_parser``, its consumer's parse and decode, on the first ``limit``
        records. TensorFlow's thread pools are left as they are (a process sets them once)."""
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf  # env: only verify_records, report_sheet needs it

        dataset = tf.data.TFRecordDataset(
            str(path), compression_type=normalize_compression(compression)
        )
        for example in dataset.take(limit).map(self.preview_parser(tf)).as_numpy_iterator():
            yield self.preview(example)

    def preview_parser(self, tf) -> Callable:
        """A graph function record -> {"filename", "image" (uint8 HWC) and, where the
        records store them, "label", "text", "boxes" ([N, 4] xmin, ymin, xmax, ymax)}."""
        raise NotImplementedError(f"format {self.name} has no previews")

    def preview(self, example: dict):
        """The Preview of one record as ``preview_parser`` read it (numpy values)."""
        from imgprep.formats.base import Preview

        return Preview(
            filename=example["filename"].decode("utf-8", "surrogateescape"),
            label=int(example.get("label", -1)),
            text=example.get("text", b"").decode("utf-8", "surrogateescape"),
            image=example["image"],
            boxes=tuple(tuple(float(v) for v in box) for box in example.get("boxes", ())),
        )

    # -- TFDS metadata -----------------------------------------------------------------

    def metadata_files(self, splits: Sequence[str], compression: str) -> list[str]:
        if normalize_compression(compression):  # TFDS opens TFRecords uncompressed
            return []
        return [*_TFDS_FILES, LABELS_FILE] if self.labelled else list(_TFDS_FILES)

    def metadata(self, name: str, inputs: MetadataInputs) -> str:
        if name == "features.json":
            names = self.label_names(inputs.labels_tsv, inputs.label_base)
            sizes = {
                shard.get("embedding_size")
                for shards in inputs.report["splits"].values()
                for shard in shards
                if shard.get("embedding_size")
            }
            embedding_size = sizes.pop() if len(sizes) == 1 else None
            flat = self.tfds_features(len(names), inputs.settings, embedding_size)
            return json.dumps(tfds_nest(flat), indent=4, sort_keys=True)
        if name == "dataset_info.json":
            info = self.dataset_info(inputs.report, inputs.record_paths)
            return json.dumps(info, indent=2, sort_keys=True)
        if name == LABELS_FILE and self.labelled:
            names = self.label_names(inputs.labels_tsv, inputs.label_base)
            return "".join(f"{name}\n" for name in names)
        return super().metadata(name, inputs)

    def label_names(self, labels_tsv, label_base: int) -> list[str]:
        """ClassLabel names in label order: the synsets, after ``background`` when the
        stored labels start at 1; none for a format that stores no label."""
        if not self.labelled:
            return []
        labels = read_labels(labels_tsv, label_base)
        synsets = sorted(labels.index, key=labels.index.__getitem__)
        if self.label(0, label_base) == 0:
            return synsets
        if _BACKGROUND in synsets:
            raise ValueError(f"{labels_tsv}: a class named {_BACKGROUND!r} collides with label 0")
        return [_BACKGROUND, *synsets]

    def dataset_info(self, report: Mapping, record_paths: Mapping[str, Sequence[str]]) -> dict:
        """dataset_info.json from the verification report ({"splits": {split: [shard, …]}})
        and each split's shard paths relative to the folder, in shard order."""
        splits = []
        for split, paths in record_paths.items():
            shards = report["splits"].get(split, [])
            names = [shard["record"] for shard in shards]
            if names != [os.path.basename(p) for p in paths]:
                raise ValueError(
                    f"verification report of {self.name}/{split} lists {names[:3]}…, "
                    f"the workflow's shards are {list(paths)[:3]}…"
                )
            if self.tfds_split_per_file:
                for path, shard in zip(paths, shards, strict=True):
                    name = path.removesuffix(".tfrecord").replace("/", "-")
                    splits.append(
                        _split_entry(name, path, [shard["records"]], shard["example_bytes"])
                    )
            else:
                splits.append(
                    _split_entry(
                        split,
                        "{SPLIT}-{SHARD_X_OF_Y}",
                        [shard["records"] for shard in shards],
                        sum(shard["example_bytes"] for shard in shards),
                    )
                )
        return {
            "description": f"imgprep {self.name} records: {self.description}",
            "fileFormat": "tfrecord",
            "splits": splits,
            "version": VERSION,
        }


def _split_entry(name: str, template: str, lengths: Sequence[int], nbytes: int) -> dict:
    entry = {"filepathTemplate": template, "name": name}
    if nbytes:  # proto3 JSON leaves out zero values
        entry["numBytes"] = str(nbytes)
    entry["shardLengths"] = [str(n) for n in lengths]
    return entry


# -- TFDS feature configs (features.json) ---------------------------------------------


def tfds_text() -> dict:
    return {"pythonClassName": _FEATURES + "text_feature.Text", "text": {}}


def snippet_dataset_args(config: dict) -> str:
    """What a loading snippet passes tf.data.TFRecordDataset: the files, and the records'
    compression where they have one (none of the consumers' readers passes it)."""
    compression = config["records"]["compression"]
    return "files" if compression == "none" else f'files, compression_type="{compression.upper()}"'


def tfds_tensor(dtype: str, shape: Sequence[int | None] = (), scalar: bool = False) -> dict:
    dimensions = {"dimensions": [str(-1 if d is None else d) for d in shape]} if shape else {}
    cls = "scalar.Scalar" if scalar else "tensor_feature.Tensor"
    return {
        "pythonClassName": _FEATURES + cls,
        "tensor": {"dtype": dtype, "encoding": "none", "shape": dimensions},
    }


def tfds_int64() -> dict:
    return tfds_tensor("int64", scalar=True)


def tfds_image(channels: int) -> dict:
    return {
        "image": {
            "dtype": "uint8",
            "encodingFormat": "jpeg",
            "shape": {"dimensions": ["-1", "-1", str(channels)]},
        },
        "pythonClassName": _FEATURES + "image_feature.Image",
    }


def tfds_class_label(count: int) -> dict:
    return {
        "classLabel": {"numClasses": str(count)},
        "pythonClassName": _FEATURES + "class_label_feature.ClassLabel",
    }


def tfds_nest(flat: Mapping[str, dict]) -> dict:
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
