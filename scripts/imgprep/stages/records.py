"""Stage records: turn one shard's resized images into one shard of a record format.

The generic part: read the shard's list, labels, resized tar and meta (plus the pin paths
and embeddings a format needs) into samples in position order, and hand them to the
format (imgprep.formats), which builds each record and writes the file. No TensorFlow:
this runs once per shard and format.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from imgprep.files.labels import LabelMap, read_labels
from imgprep.files.tables import member_name, read_tsv
from imgprep.formats import get_format
from imgprep.formats.base import COLORSPACE_CHANNELS, Sample
from imgprep.progress import Progress, tracked

__all__ = ["iter_samples", "write_shard"]

# the columns this stage reads of the index and the meta tables
_INDEX_READ = ("path", "class")
_META_READ = ("position", "width", "height", "channels", "colorspace")
_META_INTS = ("position", "width", "height", "channels")


def _tar_files(path) -> Iterator[tuple[str, bytes]]:
    """Yield (name, bytes) of the tar's regular files, streaming (nothing extracted)."""
    if os.path.getsize(path) == 0:  # an empty shard's tar may be an empty file
        return
    with tarfile.open(path, mode="r|") as tar:
        for member in tar:
            if member.isfile():
                handle = tar.extractfile(member)
                yield member.name.removeprefix("./"), handle.read()


def _read_meta(path, n_index: int) -> pd.DataFrame:
    meta = read_tsv(path, _META_READ, ints=(*_META_INTS, "nbytes"))
    meta = meta.sort_values("position", kind="stable").reset_index(drop=True)
    positions = meta["position"]
    if positions.duplicated().any():
        duplicated = positions[positions.duplicated()].tolist()
        raise ValueError(f"{path}: duplicate position(s) {duplicated[:5]}")
    outside = positions[(positions < 0) | (positions >= n_index)].tolist()
    if outside:
        raise ValueError(
            f"{path}: position(s) outside the shard index (0..{n_index - 1}): {outside[:5]}"
        )
    bad = meta[meta["colorspace"].map(COLORSPACE_CHANNELS) != meta["channels"]]
    if len(bad):
        row = bad.iloc[0]
        raise ValueError(
            f"{path}: position {row['position']}: colorspace "
            f"{row['colorspace']!r} with {row['channels']} channel(s)"
        )
    return meta


def iter_samples(
    index_tsv,
    labels: LabelMap,
    meta_tsv,
    tar_path,
    boxes=None,
    pin_paths=None,
    n_pins=None,
    embeddings=None,
    drop=(),
) -> Iterator[Sample]:
    """The shard's images in position order, each joined with its label row; positions
    in ``drop`` (the duplicate audit's leaks) are read past, not yielded.

    ``pin_paths`` and ``embeddings`` (optional) hold one row per meta row, in position
    order; row r becomes the r-th sample's ``pin_path`` / ``embedding``.
    """
    index = read_tsv(index_tsv, _INDEX_READ)
    meta = _read_meta(meta_tsv, len(index))
    for what, rows in (("targets", pin_paths), ("embeddings", embeddings)):
        if rows is not None and len(rows) != len(meta):
            raise ValueError(f"{what} have {len(rows)} row(s), {meta_tsv} has {len(meta)} image(s)")
    paths = index["path"].tolist()
    classes = index["class"].tolist()
    unknown = sorted({classes[p] for p in meta["position"]} - labels.index.keys() - {""})
    if unknown:
        raise ValueError(f"{index_tsv}: class(es) not in the labels table: {unknown[:10]}")
    if boxes is None:
        boxes = _index_boxes(index, meta)
    has_nbytes = "nbytes" in meta.columns
    files = _tar_files(tar_path)
    try:
        for number, row in enumerate(meta.itertuples(index=False)):
            position = int(row.position)
            expected_name = member_name(position)
            name, data = next(files, (None, None))
            if name != expected_name:
                raise ValueError(f"{tar_path}: expected member {expected_name}, found {name}")
            if has_nbytes and len(data) != row.nbytes:
                raise ValueError(
                    f"{tar_path}: {name} has {len(data)} bytes, meta says {row.nbytes}"
                )
            if position in drop:
                continue
            synset = classes[position]
            yield Sample(
                position=position,
                path=paths[position],
                data=data,
                width=int(row.width),
                height=int(row.height),
                channels=int(row.channels),
                colorspace=row.colorspace,
                label_index=labels.index[synset] if synset else None,
                synset=synset,
                text=labels.text[synset] if synset else "",
                boxes=tuple(tuple(map(float, box)) for box in boxes.get(position, ())),
                pin_path=None if pin_paths is None else pin_paths[number],
                n_pins=n_pins,
                embedding=None if embeddings is None else embeddings[number],
            )
        extra = next(files, None)
        if extra is not None:
            raise ValueError(f"{tar_path}: member {extra[0]} has no row in {meta_tsv}")
    finally:
        files.close()


def _index_boxes(index: pd.DataFrame, meta: pd.DataFrame) -> dict[int, list]:
    """Boxes of the index (raw, source pixels) moved into each stored image's frame."""
    if "boxes" not in index.columns or not index["boxes"].astype(bool).any():
        return {}
    from imgprep.boxes import decode_boxes, normalize_boxes, transform_boxes

    texts = index["boxes"].tolist()
    found = {}
    for row in meta.to_dict("records"):
        text = texts[int(row["position"])]
        if text:
            raw = decode_boxes(text)
            normalized = normalize_boxes(raw, int(row["source_width"]), int(row["source_height"]))
            found[int(row["position"])] = transform_boxes(normalized, row)
    return found


def _read_targets(schema: str, targets, n_pins) -> np.ndarray:
    """Load and check the pin paths a format that needs ``ravel`` requires."""
    if targets is None:
        raise ValueError(f"schema {schema!r} needs targets (a .npy file of pin paths)")
    if n_pins is None or isinstance(n_pins, bool) or not 1 <= int(n_pins) <= 256:
        raise ValueError(f"schema {schema!r} needs n_pins in 1..256, got {n_pins!r}")
    paths = np.load(targets, allow_pickle=False)
    if paths.ndim != 2 or paths.dtype.kind not in "iu":
        raise ValueError(f"{targets}: need a 2-D integer array, got {paths.dtype} {paths.shape}")
    if paths.size and (paths.min() < 0 or paths.max() >= n_pins):
        raise ValueError(f"{targets}: pins outside 0..{n_pins - 1}")
    return paths.astype(np.int64)


def _read_embeddings(schema: str, embeddings) -> np.ndarray:
    """Load and check a ``.npy`` of float embeddings, shape [meta rows, D]."""
    if embeddings is None:
        raise ValueError(f"schema {schema!r} needs embeddings (a .npy file, one row per image)")
    array = np.load(embeddings, allow_pickle=False)
    if array.ndim != 2 or array.dtype.kind != "f" or array.shape[1] == 0:
        raise ValueError(
            f"{embeddings}: need a 2-D float array [images, D>0], got {array.dtype} {array.shape}"
        )
    if not np.isfinite(array).all():
        raise ValueError(f"{embeddings}: embeddings are not all finite")
    return array.astype(np.float32)


def write_shard(
    schema: str,
    index_tsv,
    labels_tsv,
    meta_tsv,
    tar_path,
    out_path,
    compression: str | None = None,
    label_base: int = 0,
    boxes: Mapping[int, Sequence[Sequence[float]]] | None = None,
    targets=None,
    n_pins: int | None = None,
    embeddings=None,
    index_path=None,
    drop=(),
) -> dict:
    """Write one shard of format ``schema``; same inputs give a byte-identical file.

    ``boxes`` maps position -> [(xmin, ymin, xmax, ymax), ...] (normalized) for
    formats that store boxes; None takes them from the index's boxes column and the
    meta's resize geometry. ``targets`` is a ``.npy`` file of integer pin paths, shape
    [meta rows, lines + 1], row r for the r-th meta row in position order, with pins
    numbered 0..``n_pins``-1 (formats that need ``ravel``; others ignore both).
    ``embeddings`` is a float ``.npy`` file, shape [meta rows, D], row r for the r-th
    meta row in position order: required by formats that need ``embed``, stored by
    those that take embeddings when given (their records are otherwise unchanged), an
    error for other formats. ``index_path`` (formats with index files) gets the
    shard's index, written in the same pass. ``drop``: positions left out (leaking
    train images, imgprep.duplicates). Returns records, sha256 and bytes.
    """
    spec = get_format(schema)
    labels = read_labels(labels_tsv, label_base)
    vectors = None
    if "embed" in spec.needs or (embeddings is not None and spec.takes_embeddings):
        vectors = _read_embeddings(schema, embeddings)
    elif embeddings is not None:
        raise ValueError(f"schema {schema!r} does not store embeddings")
    pin_paths = None
    if "ravel" in spec.needs:
        pin_paths = _read_targets(schema, targets, n_pins)
        n_pins = int(n_pins)
    else:
        n_pins = None
    if boxes is None and not spec.stores_boxes:
        boxes = {}  # the index's boxes are moved through the geometry only where stored
    samples = iter_samples(
        index_tsv, labels, meta_tsv, tar_path, boxes, pin_paths, n_pins, vectors, drop
    )
    samples = tracked(samples, Progress(f"records {schema}", _count_rows(meta_tsv) - len(drop)))
    return spec.write_shard(samples, out_path, compression, index_path, label_base)


def _count_rows(tsv) -> int:
    with open(tsv, "rb") as handle:
        return max(0, sum(1 for line in handle if line.strip()) - 1)
