"""Read finished shards back with TensorFlow itself and check them against inputs.

The writer (imgprep.files.tfrecord) deliberately avoids TensorFlow, so this is where
the real consumer's parser and JPEG decoder get the last word: every record is
parsed and every image decoded with tf.data, and the labels, file names and
counts are checked against the shard index, rejects and label table. Runs once
per schema, so TensorFlow is imported once for all shards.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from imgprep.atomic import atomic_write
from imgprep.files.tables import read_tsv
from imgprep.files.tfrecord import normalize_compression, record_index
from imgprep.records import (
    COLORSPACE_CHANNELS,
    INDEX_COLUMNS,
    KOALARIZATION_EMBEDDING,
    KOALARIZATION_LAB_SIZE,
    TANGLER_VERSION,
    get_schema,
    read_labels,
)

__all__ = ["VerificationError", "forget_failed", "read_recorded_sha256", "verify_shards"]

_EXAMPLES = 5  # how many offending records a message quotes per problem
_BATCH = 64
# bumped when a verdict's content changes, so cached verdicts of older code are redone
_VERIFIER = 2


class VerificationError(Exception):
    """A shard does not hold what its inputs say it should; ``failed``: those shards."""

    def __init__(self, message: str, failed=()):
        super().__init__(message)
        self.failed = list(failed)


def _tensorflow(threads: int):
    """Import TensorFlow quietly and bound its thread pools to ``threads``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    # Only possible before the runtime starts (not in a process that used TF already).
    threading = tf.config.threading
    if threading.get_intra_op_parallelism_threads() != threads:
        with contextlib.suppress(RuntimeError):
            threading.set_intra_op_parallelism_threads(threads)
    if threading.get_inter_op_parallelism_threads() != threads:
        with contextlib.suppress(RuntimeError):
            threading.set_inter_op_parallelism_threads(threads)
    return tf


# -- per-schema parse + decode (graph functions for Dataset.map) ---------------------


def _common_features(tf) -> dict:
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


def _summary(tf, example: dict, shape) -> dict:
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


def _imagenet_parser(tf) -> Callable:
    features = _common_features(tf)
    bbox_keys = [f"image/object/bbox/{k}" for k in ("xmin", "ymin", "xmax", "ymax")]
    features.update({k: tf.io.VarLenFeature(tf.float32) for k in bbox_keys})
    features["image/object/bbox/label"] = tf.io.VarLenFeature(tf.int64)

    def parse(record):
        example = tf.io.parse_single_example(record, features)
        image = tf.io.decode_jpeg(example["image/encoded"], channels=0)
        summary = _summary(tf, example, tf.shape(image))
        counts = [tf.size(example[k].values) for k in [*bbox_keys, "image/object/bbox/label"]]
        summary["boxes"] = tf.cast(tf.stack(counts), tf.int64)
        summary["boxes_valid"] = tf.cond(
            tf.equal(tf.reduce_min(counts), tf.reduce_max(counts)),
            lambda: _boxes_valid(tf, *(example[k].values for k in bbox_keys)),
            lambda: tf.constant(False),
        )
        return summary

    return parse


def _boxes_valid(tf, xmin, ymin, xmax, ymax):
    """Normalized, ordered, not empty: what consumers' crop code assumes."""
    ordered = tf.logical_and(xmin < xmax, ymin < ymax)
    inside = tf.logical_and(
        tf.logical_and(xmin >= 0.0, ymin >= 0.0), tf.logical_and(xmax <= 1.0, ymax <= 1.0)
    )
    return tf.reduce_all(tf.logical_and(ordered, inside))


def _dlbs_parser(tf) -> Callable:
    features = _common_features(tf)

    def parse(record):
        example = tf.io.parse_single_example(record, features)
        pixels = tf.io.decode_raw(example["image/encoded"], tf.uint8)
        hwc = tf.stack([example["image/height"], example["image/width"], example["image/channels"]])
        shape = tf.cond(
            tf.size(pixels, out_type=tf.int64) == tf.reduce_prod(hwc),
            lambda: tf.shape(tf.reshape(pixels, hwc), out_type=tf.int64),
            lambda: tf.constant([-1, -1, -1], tf.int64),
        )
        summary = _summary(tf, example, shape)
        summary["nbytes"] = tf.size(pixels, out_type=tf.int64)
        return summary

    return parse


def _tangler_parser(tf) -> Callable:
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


def _koalarization_parser(tf) -> Callable:
    """Koalarization's reader layout: L and ab fixed at 224 x 224; the embedding read at
    any length, so that a wrong size is reported as such, not as an unreadable record."""
    pixels = KOALARIZATION_LAB_SIZE * KOALARIZATION_LAB_SIZE
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


# schema -> (parser factory, image/format value or None, key holding the file name)
_PARSERS = {
    "imagenet": (_imagenet_parser, b"JPEG", "image/filename"),
    "dlbs": (_dlbs_parser, b"tensor", "image/filename"),
    "tangler": (_tangler_parser, None, "record/name"),
    "koalarization": (_koalarization_parser, None, "image_name"),
}
# per schema, the facts every record (and every shard) must agree on
_ACROSS_SHARDS = {"tangler": ("n_pins", "path_length"), "koalarization": ("embedding_size",)}
_L_TOLERANCE = 1e-3


# -- checks -----------------------------------------------------------------------


class _Problems:
    """Problem counts with the first few examples of each, for one message."""

    def __init__(self):
        self.examples: dict[str, list[str]] = defaultdict(list)
        self.counts: Counter[str] = Counter()

    def add(self, kind: str, example: str) -> None:
        self.counts[kind] += 1
        if len(self.examples[kind]) < _EXAMPLES:
            self.examples[kind].append(example)

    def __bool__(self) -> bool:
        return bool(self.counts)

    def message(self, shard: str) -> str:
        lines = [f"shard {shard} failed verification:"]
        for kind, count in self.counts.items():
            lines.append(f"  {kind} ({count}): " + "; ".join(self.examples[kind]))
        # file names may carry surrogate escapes (undecodable bytes): keep them printable
        return "\n".join(lines).encode("utf-8", "backslashreplace").decode("utf-8")


def _first_line(exc) -> str:
    """The gist of a TF error, without its {{function_node ...}} and [Op:...] wrapping."""
    if isinstance(exc, UnicodeDecodeError):  # TF quoted the bad record's raw bytes
        return "not a parsable tf.train.Example (TensorFlow's message is not UTF-8)"
    text = (getattr(exc, "message", None) or str(exc)).strip()
    text = re.sub(r"\{\{[^}]*\}\}|\[Op:[^\]]*\].*", "", text.splitlines()[0] if text else "")
    return text.strip()[:300] or type(exc).__name__


def _file_digest(path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _locate_failure(tf, path, compression, parse, start: int, name_key: str) -> str:
    """Re-read a failed shard record by record to say which record broke, and why."""
    name_only = {name_key: tf.io.FixedLenFeature([], tf.string, default_value=b"?")}
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
                parse(record)
            except (tf.errors.OpError, ValueError, UnicodeDecodeError) as exc:
                try:
                    name = tf.io.parse_single_example(record, name_only)[name_key]
                    name = name.numpy().decode("utf-8", "surrogateescape")
                except (tf.errors.OpError, UnicodeDecodeError):
                    name = "not an Example"
                return f"record {number} ({name}): {_first_line(exc)}"
        number += 1


def _expected(shard: dict, labels, label_of, problems: _Problems):
    """Per file name, the (label, synset, text) the shard should hold; and counts."""
    index = read_tsv(shard["index"], INDEX_COLUMNS)
    rejects = read_tsv(shard["rejects"], ("position",), ints=("position",))
    paths, classes = index["path"].tolist(), index["class"].tolist()
    rejected = set()
    for row in rejects.itertuples(index=False):
        position = int(row.position)
        if not 0 <= position < len(index):
            problems.add("reject position outside the index", str(position))
        elif position in rejected:
            problems.add("position rejected twice", str(position))
        elif "path" in rejects.columns and row.path != paths[position]:
            problems.add("reject path differs from index", f"{position}: {row.path}")
        rejected.add(position)
    expected: dict[str, list[tuple[int, str, str]]] = defaultdict(list)
    for position, (path, synset) in enumerate(zip(paths, classes, strict=True)):
        if position in rejected:
            continue
        if not synset:  # unlabelled (a test split): label -1, no synset or text
            expected[os.path.basename(path)].append((label_of(None), "", ""))
            continue
        if synset not in labels.index:
            problems.add("class not in the labels table", f"{synset} ({path})")
            continue
        label = label_of(labels.index[synset])
        expected[os.path.basename(path)].append((label, synset, labels.text[synset]))
    return expected, len(index), len(rejects)


def _check_batch(batch: dict, first: int, expected, format_: bytes, problems, seen) -> None:
    names = [n.decode("utf-8", "surrogateescape") for n in batch["filename"]]
    hwc, decoded = batch["hwc"], batch["decoded"]
    for i, name in enumerate(names):
        where = f"record {first + i} ({name})"
        seen["names"][name] += 1
        label = int(batch["label"][i])
        seen["labels"].add(label)
        synset = batch["synset"][i].decode("utf-8", "surrogateescape")
        text = batch["text"][i].decode("utf-8", "surrogateescape")
        if batch["format"][i] != format_:
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
            problems.add("decoded image does not match its size", f"{where}: {got}, want {want}")
        if "boxes" in batch and len(set(batch["boxes"][i].tolist())) != 1:
            problems.add("bbox lists differ in length", f"{where}: {batch['boxes'][i].tolist()}")
        elif "boxes_valid" in batch and not batch["boxes_valid"][i]:
            problems.add("bbox outside [0, 1] or empty", where)
        wanted = expected.get(name)
        if not wanted:
            continue  # reported with the file name multiset
        if not any(w == (label, synset, text) for w in wanted):
            want_label, want_synset, want_text = wanted[0]
            if all(w[0] != label for w in wanted):
                problems.add("wrong label", f"{where}: {label}, want {want_label}")
            elif all(w[1] != synset for w in wanted):
                problems.add("wrong synset", f"{where}: {synset}, want {want_synset}")
            else:
                problems.add("wrong text", f"{where}: {text!r}, want {want_text!r}")


def _check_tangler_batch(batch: dict, first: int, expected, problems, seen) -> None:
    """Tangler records: image shape, target consistency; no labels to check."""
    from imgprep.kernels.stringart import adjacency_indices  # numba: only for this schema

    for i, where in _count_names(batch, first, expected, seen):
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
            _same_everywhere(seen, key, value, where, problems)
        if not 1 <= n_pins <= 256:
            problems.add("target/n_pins outside 1..256", f"{where}: {n_pins}")
        elif pins.size and (pins.min() < 0 or pins.max() >= n_pins):
            problems.add("target/path pin outside 0..n_pins-1", f"{where}: n_pins {n_pins}")
        elif not np.array_equal(indices, adjacency_indices(pins, n_pins).reshape(-1)):
            problems.add("target/indices do not match target/path", where)


def _count_names(batch: dict, first: int, expected, seen):
    """Count each record's name (and its class) for the shard-level checks of unlabelled
    schemas; yield (index in batch, where) for the schema's own checks."""
    names = [n.decode("utf-8", "surrogateescape") for n in batch["filename"]]
    for i, name in enumerate(names):
        seen["names"][name] += 1
        wanted = expected.get(name)
        if wanted:
            seen["labels"].add(wanted[0][0])
        yield i, f"record {first + i} ({name})"


def _same_everywhere(seen: dict, key: str, value, where: str, problems) -> None:
    if seen[key] is None:
        seen[key] = value
    elif seen[key] != value:
        problems.add(f"{key} differs between records", f"{where}: {value}, {seen[key]}")


def _check_koalarization_batch(batch: dict, first: int, expected, problems, seen) -> None:
    """Koalarization records: L and ab in [-1, 1], finite, 1001 logits; no labels."""
    for i, where in _count_names(batch, first, expected, seen):
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
        if size != KOALARIZATION_EMBEDDING:
            problems.add(
                f"image_embedding not {KOALARIZATION_EMBEDDING} values (Koalarization's reader)",
                f"{where}: {size}",
            )
        _same_everywhere(seen, "embedding_size", size, where, problems)


def _check_record_index(path: Path, index_path, problems: _Problems) -> None:
    """The shard's DALI / tfrecord index must be exactly what tfrecord2idx computes."""
    try:
        stored = Path(index_path).read_bytes()
    except OSError as exc:
        problems.add("record index unreadable", f"{index_path}: {exc}")
        return
    try:
        wanted = record_index(path)
    except ValueError as exc:
        problems.add("record index not computable", str(exc))
        return
    if stored != wanted:
        stored_lines, wanted_lines = stored.splitlines(), wanted.splitlines()
        pairs = zip(stored_lines, wanted_lines, strict=False)  # the shorter one ends it
        line = next(
            (i for i, (got, want) in enumerate(pairs) if got != want),
            min(len(stored_lines), len(wanted_lines)),
        )
        problems.add(
            "record index does not match the shard",
            f"{Path(index_path).name}: {len(stored_lines)} line(s), the shard has "
            f"{len(wanted_lines)} record(s); first difference at line {line + 1}",
        )


def _verify_shard(tf, spec, parse, format_, shard, labels, label_base, compression, threads):
    path = Path(shard["record"])
    problems = _Problems()
    expected, n_index, n_rejects = _expected(
        shard, labels, lambda index: spec.label(index, label_base), problems
    )
    tangler = spec.name == "tangler"
    koalarization = spec.name == "koalarization"
    name_key = _PARSERS[spec.name][2]
    options = tf.data.Options()
    options.threading.private_threadpool_size = threads

    def parse_sized(record):
        summary = parse(record)  # TFDS' dataset_info numBytes: the records' own bytes
        summary["record_bytes"] = tf.cast(tf.strings.length(record), tf.int64)
        return summary

    dataset = tf.data.TFRecordDataset(str(path), compression_type=compression).map(
        parse_sized, num_parallel_calls=threads, deterministic=True
    )
    # tangler targets vary in length per record: pad them, the lengths travel along
    dataset = dataset.padded_batch(_BATCH) if tangler else dataset.batch(_BATCH)
    dataset = dataset.prefetch(1).with_options(options)
    seen = {"names": Counter(), "labels": set()}
    seen.update(dict.fromkeys(_ACROSS_SHARDS.get(spec.name, ()), None))
    count = example_bytes = 0
    try:
        for batch in dataset.as_numpy_iterator():
            if tangler:
                _check_tangler_batch(batch, count, expected, problems, seen)
            elif koalarization:
                _check_koalarization_batch(batch, count, expected, problems, seen)
            else:
                _check_batch(batch, count, expected, format_, problems, seen)
            count += len(batch["filename"])
            example_bytes += int(batch["record_bytes"].sum())
    except (tf.errors.OpError, UnicodeDecodeError):  # TF errors quoting raw bytes fail to decode
        problems.add(
            "unreadable record",
            _locate_failure(tf, path, compression, parse, start=count, name_key=name_key),
        )
    else:
        if count + n_rejects != n_index:
            problems.add("records + rejects != index rows", f"{count} + {n_rejects} != {n_index}")
        wanted = Counter({name: len(rows) for name, rows in expected.items()})
        missing = sorted((wanted - seen["names"]).elements())
        unexpected = sorted((seen["names"] - wanted).elements())
        if missing:
            problems.add("missing from the shard", ", ".join(missing[:_EXAMPLES]))
        if unexpected:
            problems.add("not expected in the shard", ", ".join(unexpected[:_EXAMPLES]))
        if shard.get("record_index"):
            _check_record_index(path, shard["record_index"], problems)
    if problems:
        raise VerificationError(problems.message(path.name))
    size, sha256 = _file_digest(path)
    result = {
        "record": path.name,
        "records": count,
        "rejects": n_rejects,
        "index": n_index,
        "bytes": size,
        "example_bytes": example_bytes,
        "sha256": sha256,
        "classes": len(seen["labels"]),
    }
    # None for an empty shard; compared across shards by verify_shards
    for key in _ACROSS_SHARDS.get(spec.name, ()):
        result[key] = seen[key]
    return result


def _check_across_shards(results: list[dict], keys) -> None:
    """Every shard's records must agree on ``keys`` (tangler: n_pins, path length)."""
    for key in keys:
        values = {}
        for result in results:
            if result.get(key) is not None:
                values.setdefault(result[key], result["record"])
        if len(values) > 1:
            shown = ", ".join(f"{value} in {record}" for value, record in values.items())
            raise VerificationError(f"{key} differs between shards: {shown}")


def _cache_key(shard: dict, labels_digest: str, settings: dict, recorded: str | None) -> dict:
    """What a shard's verdict depends on: its files (size, mtime), the label table and
    the sha256 recorded when the shard was written."""
    key = {"labels": labels_digest, "recorded_sha256": recorded, **settings}
    for role in ("record", "index", "rejects", "record_index"):
        if role not in shard:
            continue
        stat = os.stat(shard[role])
        key[role] = [str(shard[role]), stat.st_size, stat.st_mtime_ns]
    return key


def read_recorded_sha256(path) -> str:
    """The digest of a ``sha256sum``-style line (``<hex>  <name>``) written with a shard."""
    digest = Path(path).read_text().split(maxsplit=1)[0] if Path(path).stat().st_size else ""
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise VerificationError(f"{path}: not a recorded sha256")
    return digest


def forget_failed(error: VerificationError, reports=()) -> list[str]:
    """A failed check stays failed: remove each failed shard and the sha256 recorded with
    it, so that the next run rebuilds the shard and checks it again, and remove the
    ``reports`` (the summary) that vouched for the old files. Snakemake itself only
    removes the verification's own output, and would then treat it as a missing
    intermediate behind an up-to-date summary: "Nothing to be done". Returns what was
    removed."""
    removed = []
    paths = [shard.get(role) for shard in error.failed for role in ("record", "sha256")]
    for path in [*paths, *reports]:
        if path is not None and os.path.lexists(path):
            os.unlink(path)
            removed.append(str(path))
    return removed


def verify_shards(
    schema: str,
    shards: list[dict],
    labels_tsv,
    label_base: int,
    compression: str | None = None,
    threads: int = 1,
    cache_dir=None,
    full: bool = False,
) -> list[dict]:
    """Verify each shard ({"record", "index", "rejects"} paths, optionally "sha256": the
    digest recorded when the shard was written, and "record_index": its DALI / tfrecord
    index file); raise VerificationError naming every bad shard (``failed``) after
    checking them all.

    Returns per shard: record (file name), records, rejects, index, bytes,
    example_bytes (the records without their framing, TFDS' numBytes), sha256 and
    classes (distinct labels present). With ``cache_dir``, a shard whose
    files are unchanged since it last passed (same size and mtime, as Snakemake judges
    them) is not read again: touching one image of ImageNet re-verifies one shard, not
    1.28M images. TensorFlow is imported only when some shard needs reading.
    A shard whose digest is not the recorded one fails (it changed after it was written).
    ``full`` ignores the cache: every shard is read and its digest compared, which also
    catches a change that kept size and mtime.
    """
    spec = get_schema(schema)
    if schema not in _PARSERS:
        raise ValueError(f"no verifier for schema {schema!r}")
    labels = read_labels(labels_tsv, label_base)
    compression = normalize_compression(compression)
    settings = {
        "schema": schema,
        "compression": compression,
        "label_base": label_base,
        "verifier": _VERIFIER,
    }
    labels_digest = hashlib.sha256(Path(labels_tsv).read_bytes()).hexdigest()
    cache = Path(cache_dir) if cache_dir is not None else None
    results, failures = [], []
    tf = parse = format_ = None
    for shard in shards:
        try:
            recorded = read_recorded_sha256(shard["sha256"]) if shard.get("sha256") else None
        except (OSError, VerificationError) as error:
            failures.append((shard, f"shard {Path(shard['record']).name}: {error}"))
            continue
        key = _cache_key(shard, labels_digest, settings, recorded)
        entry = cache / f"{Path(shard['record']).name}.json" if cache else None
        if entry is not None and not full and entry.exists():
            cached = json.loads(entry.read_text())
            if cached.get("key") == key:
                results.append(cached["result"])
                continue
        if tf is None:
            tf = _tensorflow(threads)
            make_parser, format_, _ = _PARSERS[schema]
            parse = make_parser(tf)
        try:
            result = _verify_shard(
                tf, spec, parse, format_, shard, labels, label_base, compression, threads
            )
        except VerificationError as error:
            failures.append((shard, str(error)))
            continue
        if recorded is not None and result["sha256"] != recorded:
            failures.append(
                (
                    shard,
                    f"shard {result['record']} failed verification:\n  sha256 {result['sha256']}"
                    f" is not the {recorded} recorded when it was written (changed since)",
                )
            )
            continue
        results.append(result)
        if entry is not None:
            with atomic_write(entry, "w") as handle:
                json.dump({"key": key, "result": result}, handle, sort_keys=True)
    if failures:
        message = "\n".join(text for _, text in failures)
        raise VerificationError(message, failed=[shard for shard, _ in failures])
    _check_across_shards(results, _ACROSS_SHARDS.get(schema, ()))
    return results
