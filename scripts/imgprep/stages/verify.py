"""Stage verify: read finished shards back and check them against their inputs.

The writers avoid the consumers' libraries, so this is where a real reader gets the last
word: the format (imgprep.formats) reads every record back (TFRecord formats with
TensorFlow's own parser and JPEG decoder) and checks each batch; this module checks what
every format shares: labels, file names and counts against the shard index, rejects and
label table, the index file of each shard, the digest recorded when the shard was
written, and facts every shard must agree on. Runs once per format, so a reader (and
TensorFlow) is made once for all shards; verdicts are cached per shard.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter, defaultdict
from pathlib import Path

from imgprep.atomic import atomic_write
from imgprep.files.labels import read_labels
from imgprep.files.tables import read_tsv
from imgprep.files.tfrecord import normalize_compression, record_index
from imgprep.formats import get_format
from imgprep.formats.base import RecordFormat, UnreadableShard
from imgprep.progress import Progress, tracked

__all__ = ["VerificationError", "forget_failed", "read_recorded_sha256", "verify_shards"]

_EXAMPLES = 5  # how many offending records a message quotes per problem
# bumped when a verdict's content changes, so cached verdicts of older code are redone
_VERIFIER = 2
_INDEX_READ = ("path", "class")  # the columns of the shard index that are checked


class VerificationError(Exception):
    """A shard does not hold what its inputs say it should; ``failed``: those shards."""

    def __init__(self, message: str, failed=()):
        super().__init__(message)
        self.failed = list(failed)


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


def _file_digest(path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _expected(shard: dict, labels, label_of, problems: _Problems):
    """Per file name, the (label, synset, text) the shard should hold; and counts."""
    index = read_tsv(shard["index"], _INDEX_READ)
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
    dropped = shard.get("dropped", {})  # leaking train images (imgprep.duplicates)
    for position, path in dropped.items():
        if not 0 <= position < len(index) or paths[position] != path:
            problems.add("dropped duplicate not in the index", f"{position}: {path}")
        elif position in rejected:
            problems.add("position rejected twice", str(position))
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
    return expected, len(index), len(rejects) + len(dropped)


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


def _verify_shard(spec: RecordFormat, reader, shard, labels, label_base, compression):
    path = Path(shard["record"])
    problems = _Problems()
    expected, n_index, n_rejects = _expected(
        shard, labels, lambda index: spec.label(index, label_base), problems
    )
    seen = {"names": Counter(), "labels": set()}
    seen.update(dict.fromkeys(spec.across_shards, None))
    count = example_bytes = 0
    try:
        for batch in reader.batches(path, compression):
            spec.check_batch(batch, count, expected, problems, seen)
            count += len(batch["filename"])
            example_bytes += int(batch["record_bytes"].sum())
    except UnreadableShard as error:
        problems.add("unreadable record", str(error))
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
    for key in spec.across_shards:
        result[key] = seen[key]
    return result


def _check_across_shards(results: list[dict], keys) -> None:
    """Every shard's records must agree on ``keys`` (the format's across_shards)."""
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
    if "dropped" in shard:
        key["dropped"] = sorted(shard["dropped"])
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
    1.28M images. The reader (TensorFlow) is made only when some shard needs reading.
    A shard whose digest is not the recorded one fails (it changed after it was written).
    ``full`` ignores the cache: every shard is read and its digest compared, which also
    catches a change that kept size and mtime.
    """
    spec = get_format(schema)
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
    reader = None
    shards = list(shards)
    progress = Progress(f"verify {schema}", len(shards), unit="shards")
    for shard in tracked(shards, progress):
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
        if reader is None:
            reader = spec.reader(threads)
        try:
            result = _verify_shard(spec, reader, shard, labels, label_base, compression)
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
    _check_across_shards(results, spec.across_shards)
    return results
