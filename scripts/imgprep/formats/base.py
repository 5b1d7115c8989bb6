"""What a record format provides: the interface every module of imgprep.formats implements.

A format owns everything about one consumer's records: the file names of its shards (and
the regex the rules constrain them with), what it needs upstream (ravel, embed), its
configuration constraints, how one sample becomes a record and a shard file, how a shard
is read back and checked, and the metadata files of its folder. The stages (records,
verify, metadata) and the rules know only this interface; adding a format is one module
and one line in the registry (imgprep/formats/__init__.py).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from imgprep.errors import ConfigError

__all__ = [
    "COLORSPACE_CHANNELS",
    "MetadataInputs",
    "Preview",
    "RecordFormat",
    "Sample",
    "ShardReader",
    "UnreadableShard",
    "check_square_resize",
    "count_names",
    "same_everywhere",
]

# meta.tsv colorspace -> channel count of the stored image
COLORSPACE_CHANNELS = {"RGB": 3, "Grayscale": 1}
NEVER = r"(?!)"  # a regex no name matches: a format without metadata files


@dataclass(frozen=True)
class Sample:
    """One resized image with what its metadata and the label table say about it."""

    position: int
    path: str
    data: bytes  # JPEG bytes from the resized tar
    width: int
    height: int
    channels: int
    colorspace: str
    label_index: int | None  # 0-based position in the label map; None: unlabelled
    synset: str
    text: str
    boxes: tuple[tuple[float, float, float, float], ...] = ()
    # numpy arrays, not typed as such: the configuration imports this module (through the
    # registry) and needs neither numpy nor Pillow
    pin_path: Any = None  # int64 [lines + 1] ravel pin path (formats that need "ravel")
    n_pins: int | None = None
    embedding: Any = None  # float32 [D] CNN embedding (stage embed)

    @property
    def filename(self) -> str:
        return os.path.basename(self.path)

    def where(self) -> str:
        return f"position {self.position} ({self.path})"


@dataclass(frozen=True, eq=False)
class Preview:
    """One record read back and decoded the way its consumer decodes it (for a look at
    it: imgprep.figures.sheets). Images are numpy uint8 HxWxC (C 1 or 3). eq=False:
    arrays have no single truth value, so compare the fields, not the Previews."""

    filename: str
    label: int  # as stored; -1 where the format stores none
    text: str  # the label's text where the record or its label map has it, else ""
    image: Any
    boxes: tuple[tuple[float, float, float, float], ...] = ()  # (xmin, ymin, xmax, ymax), 0..1
    panels: Mapping[str, Any] = field(default_factory=dict)  # more views of the record


class UnreadableShard(Exception):
    """A shard's container could not be read to the end; the message says where."""


class ShardReader(Protocol):
    """Reads shards of one format back, in batches of per-record facts (numpy arrays).

    Every batch holds ``filename`` (bytes, one per record) and ``record_bytes`` (each
    record's size without its framing: TFDS' numBytes) besides what the format's
    ``check_batch`` reads. Raises UnreadableShard when a record cannot be read.
    """

    def batches(self, path, compression: str) -> Iterator[dict]: ...


@dataclass(frozen=True)
class MetadataInputs:
    """What a metadata file of a format's folder is written from."""

    report: Mapping  # the verification report: {"splits": {split: [shard result, ...]}}
    record_paths: Mapping[str, Sequence[str]]  # per split, shard paths in the folder
    labels_tsv: str
    label_base: int
    settings: Mapping  # the format's metadata_settings(config)


def count_names(batch: dict, first: int, expected, seen) -> Iterator[tuple[int, str]]:
    """Count each record's name (and its class) for the shard-level checks of formats
    that store no label; yield (index in batch, where) for the format's own checks."""
    names = [n.decode("utf-8", "surrogateescape") for n in batch["filename"]]
    for i, name in enumerate(names):
        seen["names"][name] += 1
        wanted = expected.get(name)
        if wanted:
            seen["labels"].add(wanted[0][0])
        yield i, f"record {first + i} ({name})"


def check_described(wanted, label, synset, text, where: str, problems) -> None:
    """A record's (label, synset, text) against what the index expects of its file name
    (``wanted``: every (label, synset, text) the name has there); the first that differs
    names the problem."""
    if not wanted or any(w == (label, synset, text) for w in wanted):
        return  # a name the index lacks is reported with the file name multiset
    want_label, want_synset, want_text = wanted[0]
    if all(w[0] != label for w in wanted):
        problems.add("wrong label", f"{where}: {label}, want {want_label}")
    elif all(w[1] != synset for w in wanted):
        problems.add("wrong synset", f"{where}: {synset}, want {want_synset}")
    else:
        problems.add("wrong text", f"{where}: {text!r}, want {want_text!r}")


def written(out_path, records: int) -> dict:
    """What ``write_shard`` returns: the record count, and the sha256 and size of the file
    as written (read back at once, from the page cache)."""
    with open(out_path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    return {"records": records, "sha256": digest, "bytes": os.stat(out_path).st_size}


def same_everywhere(seen: dict, key: str, value, where: str, problems) -> None:
    """Record ``value`` under ``key`` (one of the format's ``across_shards``): every
    record must agree."""
    if seen[key] is None:
        seen[key] = value
    elif seen[key] != value:
        problems.add(f"{key} differs between records", f"{where}: {value}, {seen[key]}")


class RecordFormat:
    """One consumer's record format. Subclasses set the class attributes and implement
    ``shard_name``, ``write_shard``, ``reader``, ``check_batch`` and, where the folder
    holds any, the metadata methods (imgprep.formats.tfrecords.TFRecordFormat does all
    but ``shard_name``, the features and the checks for TFRecord formats)."""

    name: str = ""
    description: str = ""
    # regex of a shard's file name (no "/"; its folder is shard_folder's); it must not
    # match the metadata files' names
    name_pattern: str = NEVER
    needs: frozenset[str] = frozenset()  # upstream stages the records are made from
    takes_embeddings: bool = False  # stores Sample.embedding when embed.in_records
    stores_boxes: bool = False  # stores Sample.boxes (moved through the resize geometry)
    zero_based_labels: bool = False  # ignores labels.base (the consumer wants 0..n-1)
    memory_mb: int = 4000  # what one records job holds (per attempt): its mem_mb request
    across_shards: tuple[str, ...] = ()  # facts every record of every shard shares
    metadata_pattern: str = NEVER  # regex of the metadata files' names in the folder

    # -- names ---------------------------------------------------------------------

    def shard_name(self, split: str, index: int, total: int) -> str:
        """File name of shard ``index`` of ``total`` (0-based, in range) of ``split``."""
        raise NotImplementedError

    def shard_folder(self, split: str) -> str:
        """The folder (one level, no "/") of ``split``'s shards inside records/<name>/;
        "" for shards in the format's folder itself."""
        return ""

    def shard_filename(self, split: str, index: int, total: int) -> str:
        if not 0 <= index < total:
            raise ValueError(f"shard index {index} outside 0..{total - 1}")
        return self.shard_name(split, index, total)

    def shard_path(self, split: str, index: int, total: int) -> str:
        """The shard's path inside records/<name>/: the one naming function (rules too)."""
        name = self.shard_filename(split, index, total)
        folder = self.shard_folder(split)
        return f"{folder}/{name}" if folder else name

    def label(self, index: int | None, label_base: int) -> int:
        """The stored label; -1 for an unlabelled image (index None), as TFDS does."""
        if index is None:
            return -1
        return index if self.zero_based_labels else index + label_base

    # -- configuration ---------------------------------------------------------------

    def check_config(self, config: dict) -> None:
        """Raise ConfigError (naming the key) where ``config`` cannot give these records;
        called for the formats listed in records.schemas."""

    def check_own_keys(self, config: dict) -> None:
        """Check the keys that only this format reads; called whether listed or not."""

    def record_settings(self, config: dict) -> dict:
        """Settings besides the common ones that the records depend on (upstream digest)."""
        return {}

    def uses_embeddings(self, config: dict) -> bool:
        """Whether the records are made from the embed stage's output."""
        return "embed" in self.needs or (self.takes_embeddings and config["embed"]["in_records"])

    # -- the container ---------------------------------------------------------------

    def has_record_index(self, compression: str | None) -> bool:
        """Whether each shard gets an index file, ``idx/<file name>.idx`` in the shard's
        folder (rules/records.smk declares the path), written in the same pass."""
        return False

    def write_shard(
        self,
        samples: Iterable[Sample],
        out_path,
        compression: str | None,
        index_path,
        label_base: int,
    ) -> dict:
        """Write ``samples`` as one shard (atomically, byte-identically for the same
        samples); returns {"records", "sha256", "bytes"}."""
        raise NotImplementedError

    def reader(self, threads: int) -> ShardReader:
        """A reader for this format's shards (made once per verification job)."""
        raise NotImplementedError

    def previews(self, path, compression: str | None, limit: int) -> Iterator[Preview]:
        """The first ``limit`` records of shard ``path`` (written with ``compression``),
        read back and decoded as the format's consumer reads them."""
        raise NotImplementedError(f"format {self.name} has no previews")

    def check_batch(self, batch: dict, first: int, expected, problems, seen) -> None:
        """Check one batch of records: ``expected`` maps file name -> [(label, synset,
        text), ...]; count names and labels in ``seen`` ({"names": Counter, "labels":
        set, each of across_shards: None}); report with ``problems.add(kind, example)``."""
        raise NotImplementedError

    # -- metadata files --------------------------------------------------------------

    def metadata_files(self, splits: Sequence[str], compression: str) -> list[str]:
        """Names of the metadata files of the format's folder (matching metadata_pattern)."""
        return []

    def metadata_settings(self, config: dict) -> dict:
        """The settings the metadata files depend on (a rule param: a change re-runs them)."""
        return {}

    def metadata(self, name: str, inputs: MetadataInputs) -> str:
        """The text of metadata file ``name``."""
        raise NotImplementedError(f"format {self.name} has no metadata file {name!r}")

    # -- the dataset card ------------------------------------------------------------

    def loading_snippet(
        self, records_folder: str, splits: Sequence[str], config: dict
    ) -> str | None:
        """Python code that loads the records the way this format's consumer does, for the
        dataset card (imgprep.stages.card): it runs as it stands from the card's folder
        (``records_folder``, the format's folder relative to it), reads every record of
        each of ``splits`` and prints one line ``<split>: <count> records`` per split.
        ``config`` is the dataset's effective configuration. None: no snippet."""
        return None


def check_square_resize(resize: dict, name: str, colorspace: str) -> None:
    """For formats whose consumer reads every image at exactly one square side, in one
    colorspace: a resize that cannot promise that is a configuration error."""
    size = resize["size"]
    if isinstance(size, list) and size[0] != size[1]:
        raise ConfigError(
            f"config key 'resize.size': schema {name} needs a square size, not {size}"
        )
    if resize["colorspace"] != colorspace:
        raise ConfigError(f"config key 'resize.colorspace': schema {name} needs '{colorspace}'")
    if resize["mode"] not in ("center-crop", "stretch", "pad"):
        raise ConfigError(
            f"config key 'resize.mode': schema {name} needs one side for every image "
            f"(center-crop, stretch or pad), not '{resize['mode']}'"
        )
    if not resize["upscale"]:
        raise ConfigError(
            f"config key 'resize.upscale': schema {name} needs true (every image at the full side)"
        )
