"""webdataset: tar shards that ``webdataset.WebDataset`` streams and ``wids`` indexes.

Each image is one sample of three members sharing a key (webdataset groups members by
the part of the name before the first dot): ``{key}.jpg`` (the resized JPEG as stored),
``{key}.cls`` (the 0-based class index as decimal text, -1 unlabelled: what webdataset's
``cls`` decoder turns into an int) and ``{key}.json`` (synset, text, file name, shape and
the boxes, normalized ``[xmin, ymin, xmax, ymax]``). A key is the shard's file stem and the
image's position, ``train-000003-000017``: unique in the dataset and dot-free. Shards
are ``{split}-{i:06d}.tar`` (webdataset's own numbering, from 0) in one folder, with
members in position order and headers free of clocks and owners, so the same samples
give the same bytes. Beside them, ``{split}.shardindex.json`` is the
``wids-shard-index-v1`` description ``wids.ShardListDataset`` opens (url relative to the
index file, nsamples, filesize), written from the verification report.
``records.compression`` does not apply (it is the TFRecord framing's): tars of JPEGs stay
uncompressed, as webdataset's ``.tar`` shards are.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from imgprep.atomic import atomic_write
from imgprep.files.tars import reproducible_tar_info
from imgprep.formats.base import (
    MetadataInputs,
    RecordFormat,
    Sample,
    UnreadableShard,
    check_described,
    written,
)
from imgprep.formats.jpeg import jpeg_header

__all__ = ["FORMAT", "SHARD_INDEX_KIND"]

SHARD_INDEX_KIND = "wids-shard-index-v1"  # wids_index.py's __kind__ (wids 0.1.11)
_INDEX_SUFFIX = ".shardindex.json"
_EXTENSIONS = ("cls", "jpg", "json")  # a sample's members, in the order written
_BATCH = 64


def _json_member(sample: Sample, label: int) -> bytes:
    """The sample's description; ASCII with \\u escapes, so an undecodable file name
    (a surrogate escape) comes back exactly from ``json.loads``."""
    return json.dumps(
        {
            "boxes": [list(box) for box in sample.boxes],
            "channels": sample.channels,
            "filename": sample.filename,
            "height": sample.height,
            "label": label,
            "synset": sample.synset,
            "text": sample.text,
            "width": sample.width,
        },
        sort_keys=True,
    ).encode("ascii")


class _ShardReader:
    """Reads a shard back the way webdataset does: members grouped by key, in order;
    decodes every JPEG with Pillow (webdataset's ``decode("pil")``)."""

    def batches(self, path, compression: str) -> Iterator[dict]:
        batch: list[dict] = []
        try:
            for key, members in _samples(path):
                batch.append(_read_sample(key, members))
                if len(batch) == _BATCH:
                    yield _stack(batch)
                    batch = []
        except (tarfile.TarError, OSError, EOFError) as error:
            raise UnreadableShard(f"not a readable tar: {error}") from None
        if batch:
            yield _stack(batch)


def _samples(path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) of each run of members sharing a key."""
    key, members = None, {}
    with tarfile.open(path, mode="r|") as tar:
        for member in tar:
            if not member.isfile():
                raise UnreadableShard(f"member {member.name} is not a regular file")
            stem, dot, extension = member.name.partition(".")
            if not dot:
                raise UnreadableShard(f"member {member.name} has no extension")
            if stem != key:
                if key is not None:
                    yield key, members
                key, members = stem, {}
            if extension in members:
                raise UnreadableShard(f"member {member.name} appears twice")
            members[extension] = tar.extractfile(member).read()
    if key is not None:
        yield key, members


def _read_sample(key: str, members: dict[str, bytes]) -> dict:
    if sorted(members) != list(_EXTENSIONS):
        raise UnreadableShard(f"sample {key} has members {sorted(members)}, want {_EXTENSIONS}")
    try:
        label = int(members["cls"].decode("ascii"))
        described = json.loads(members["json"])
        image = Image.open(io.BytesIO(members["jpg"]))
        image.load()
    except (ValueError, OSError, UnicodeDecodeError) as error:
        raise UnreadableShard(f"sample {key}: {error}") from None
    decoded = (image.height, image.width, len(image.getbands()))
    return {
        "key": key,
        "filename": str(described.get("filename", "")).encode("utf-8", "surrogateescape"),
        "record_bytes": sum(len(data) for data in members.values()),
        "label": label,
        "json_label": described.get("label"),
        "synset": str(described.get("synset", "")),
        "text": str(described.get("text", "")),
        "hwc": (described.get("height"), described.get("width"), described.get("channels")),
        "decoded": decoded,
        "format": image.format,
        "boxes_valid": _boxes_valid(described.get("boxes")),
    }


def _boxes_valid(boxes) -> bool:
    try:
        array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    except (TypeError, ValueError):
        return False
    inside = (array >= 0).all() and (array <= 1).all()
    return bool(inside and (array[:, 0] < array[:, 2]).all() and (array[:, 1] < array[:, 3]).all())


def _stack(rows: list[dict]) -> dict:
    """One batch: numpy arrays of the per-record facts, as the verify stage counts them."""
    return {
        key: np.array([row[key] for row in rows], dtype=object if key == "hwc" else None)
        for key in rows[0]
    }


class WebDatasetFormat(RecordFormat):
    name = "webdataset"
    description = "tar shards of {key}.jpg/.cls/.json samples + wids shard index (WebDataset)"
    name_pattern = r"[^/]+-\d{6}\.tar"
    zero_based_labels = True  # class indices as the PyTorch loaders count them
    stores_boxes = True
    metadata_pattern = r"[^/]+" + re.escape(_INDEX_SUFFIX)

    def shard_name(self, split: str, index: int, total: int) -> str:
        return f"{split}-{index:06d}.tar"

    def write_shard(
        self, samples: Iterable[Sample], out_path, compression: str, index_path, label_base: int
    ) -> dict:
        stem = Path(out_path).name.removesuffix(".tar")
        count = 0
        with (
            atomic_write(out_path) as handle,
            tarfile.open(fileobj=handle, mode="w", format=tarfile.USTAR_FORMAT) as tar,
        ):
            for sample in samples:
                jpeg_header(sample)
                label = self.label(sample.label_index, label_base)
                key = f"{stem}-{sample.position:06d}"
                data = {
                    "cls": str(label).encode("ascii"),
                    "jpg": sample.data,
                    "json": _json_member(sample, label),
                }
                for extension in _EXTENSIONS:
                    member = data[extension]
                    info = reproducible_tar_info(f"{key}.{extension}", len(member))
                    tar.addfile(info, io.BytesIO(member))
                count += 1
        return written(out_path, count)

    def reader(self, threads: int) -> _ShardReader:
        return _ShardReader()

    def previews(self, path, compression: str | None, limit: int) -> Iterator:
        """The first ``limit`` samples as webdataset groups the members (``{key}.jpg``,
        ``.cls``, ``.json``); the .jpg decoded by Pillow (its ``decode("pil")``), in the
        stored mode, the label from .cls, text (else synset) and boxes from .json."""
        import contextlib
        import itertools

        from imgprep.formats.base import Preview

        with contextlib.closing(_samples(path)) as samples:
            for _key, members in itertools.islice(samples, limit):
                described = json.loads(members["json"])
                with Image.open(io.BytesIO(members["jpg"])) as image:
                    pixels = np.asarray(image)
                yield Preview(
                    filename=described["filename"],
                    label=int(members["cls"].decode("ascii")),
                    text=described["text"] or described["synset"],
                    image=pixels.reshape(*pixels.shape[:2], -1),
                    boxes=tuple(tuple(float(v) for v in box) for box in described["boxes"]),
                )

    def check_batch(self, batch: dict, first: int, expected, problems, seen) -> None:
        for i, raw in enumerate(batch["filename"]):
            name = raw.decode("utf-8", "surrogateescape")
            where = f"record {first + i} ({name}, key {batch['key'][i]})"
            seen["names"][name] += 1
            label = int(batch["label"][i])
            seen["labels"].add(label)
            synset, text = batch["synset"][i], batch["text"][i]
            if batch["json_label"][i] != label:
                problems.add(
                    ".cls and .json labels differ", f"{where}: {label}, {batch['json_label'][i]}"
                )
            if batch["format"][i] != "JPEG":
                problems.add("not a JPEG", f"{where}: {batch['format'][i]}")
            hwc, decoded = tuple(batch["hwc"][i]), tuple(batch["decoded"][i])
            if hwc != decoded:
                problems.add(
                    "decoded image does not match its size", f"{where}: {decoded}, want {hwc}"
                )
            if not batch["boxes_valid"][i]:
                problems.add("bbox outside [0, 1] or empty", where)
            check_described(expected.get(name), label, synset, text, where, problems)

    # -- the wids shard index ------------------------------------------------------

    def metadata_files(self, splits, compression: str) -> list[str]:
        return [f"{split}{_INDEX_SUFFIX}" for split in splits]

    def metadata(self, name: str, inputs: MetadataInputs) -> str:
        split = name.removesuffix(_INDEX_SUFFIX)
        if split == name or split not in inputs.record_paths:
            return super().metadata(name, inputs)
        shards = inputs.report["splits"].get(split, [])
        paths = list(inputs.record_paths[split])
        if [shard["record"] for shard in shards] != [Path(p).name for p in paths]:
            raise ValueError(
                f"verification report of {self.name}/{split} does not list the split's shards"
            )
        index = {
            "__kind__": SHARD_INDEX_KIND,
            "wids_version": 1,
            "name": split,
            "shardlist": [
                {"url": path, "nsamples": shard["records"], "filesize": shard["bytes"]}
                for path, shard in zip(paths, shards, strict=True)
            ],
        }
        return json.dumps(index, indent=2) + "\n"

    # -- the dataset card ------------------------------------------------------------

    def loading_snippet(self, records_folder: str, splits, config: dict) -> str:
        """webdataset's stream (README, *WebDataset and wids*): each split's shards,
        decoded to PIL images, ``.cls`` the 0-based class index."""
        import json

        return f"""import glob
import os

import webdataset as wds

data_dir = {json.dumps(records_folder)}  # relative to this card's folder: run it from there

for split in {json.dumps(list(splits))}:
    shards = sorted(glob.glob(os.path.join(data_dir, f"{{split}}-*.tar")))
    dataset = (
        wds.WebDataset(shards, shardshuffle=False)  # shuffle with .shuffle(n) or shardshuffle
        .decode("pil")
        .to_tuple("jpg", "cls", "json")
    )
    count = sum(1 for image, label, info in dataset)  # label: 0-based class index, -1 none
    print(f"{{split}}: {{count}} records")
"""


FORMAT = WebDatasetFormat()
