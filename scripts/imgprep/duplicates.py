"""The duplicate audit of one dataset: exact and near duplicates, within and across splits.

Every stored image has three keys in its shard's meta.tsv (imgprep.kernels.phash): the
sha256 of the source file, of its decoded pixels, and the 64-bit DCT hash of the stored
JPEG. Two images are

- ``exact_bytes``: the same source bytes;
- ``exact_pixels``: else the same decoded pixels (a re-saved copy, other metadata);
- ``near``: else phashes at most ``duplicates.near_distance`` bits apart (a re-encoded,
  resized, brightened copy).

A pair is listed once, with the first of these kinds that holds, the image earlier in the
dataset's order (split order, then shard, then position) first.

The near search is not quadratic (imgprep.kernels.pairs: multi-index hashing). Reading
the leaks table (records, verify) needs neither numba nor numpy's search.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgprep.atomic import atomic_write
from imgprep.files.tables import DUPLICATE_COLUMNS, LEAK_COLUMNS, TEXT, clean, read_tsv, table_bytes

__all__ = [
    "KINDS",
    "Images",
    "duplicate_pairs",
    "leak_drops",
    "read_drops",
    "read_images",
    "write_audit",
]

KINDS = ("exact_bytes", "exact_pixels", "near")
_HASH_COLUMNS = ("position", "source_sha256", "pixels_sha256", "phash")


# -- the images ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Images:
    """The dataset's stored images in its order; arrays of one row per image."""

    splits: tuple[str, ...]  # the dataset's split order
    split: np.ndarray  # int: index into splits
    shard: list[str]
    position: np.ndarray
    path: list[str]
    source_sha256: list[str]
    pixels_sha256: list[str]
    phash: np.ndarray  # uint64 (0 where has_phash is False)
    has_phash: np.ndarray  # bool
    # images of meta tables written before the audit (no hash columns): not audited
    unhashed: int = 0

    def __len__(self) -> int:
        return len(self.path)


def meta_shard(meta_path) -> tuple[str, str]:
    """(split, shard) of a resized/<key><split>/<shard>.meta.tsv."""
    path = Path(meta_path)
    return path.parent.name, path.name.removesuffix(".meta.tsv")


def read_images(splits: Sequence[str], tables: Sequence, metas: Sequence):
    """Join each split's index table (paths) with its shards' meta tables (hashes); and
    the meta tables without hashes (resized before the audit existed: a build made then
    is not re-resized for it, `snakemake --forcerun resize_shard` does that)."""
    import pandas as pd

    paths = {}
    for split, table in zip(splits, tables, strict=True):
        frame = read_tsv(table, ("path", "shard", "position"), ints=("position",))
        for shard, part in frame.groupby("shard", sort=False):
            paths[(split, shard)] = dict(zip(part["position"], part["path"], strict=True))
    parts, unhashed = [], []
    for meta in metas:
        split, shard = meta_shard(meta)
        frame = read_tsv(meta, ints=("position",))
        if any(c not in frame.columns for c in _HASH_COLUMNS):
            unhashed.append((str(meta), len(frame)))
            continue
        frame = frame[list(_HASH_COLUMNS)].copy()
        where = paths.get((split, shard), {})  # an empty shard has no rows in the table
        try:
            frame["path"] = [where[p] for p in frame["position"]]
        except KeyError as error:
            raise ValueError(f"{meta}: position {error} of {split}/{shard} not indexed") from None
        frame["split"] = splits.index(split)
        frame["shard"] = shard
        parts.append(frame)
    columns = ["split", "shard", *_HASH_COLUMNS, "path"]
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    frame = frame.sort_values(["split", "shard", "position"], kind="stable")
    return Images(
        splits=tuple(splits),
        split=frame["split"].to_numpy(np.int64),
        shard=frame["shard"].tolist(),
        position=frame["position"].to_numpy(np.int64),
        path=frame["path"].tolist(),
        source_sha256=frame["source_sha256"].tolist(),
        pixels_sha256=frame["pixels_sha256"].tolist(),
        phash=np.array([int(h or "0", 16) for h in frame["phash"]], dtype=np.uint64),
        has_phash=(frame["phash"] != "").to_numpy(bool),
        unhashed=sum(n for _, n in unhashed),
    ), [m for m, _ in unhashed]


# -- pair searches ------------------------------------------------------------------------


def exact_pairs(keys: Sequence[str]) -> np.ndarray:
    """(a, b), a < b, of the rows with equal non-empty keys: every pair of each group."""
    groups: dict[str, list[int]] = {}
    for row, key in enumerate(keys):
        if key:
            groups.setdefault(key, []).append(row)
    pairs = [(a, b) for rows in groups.values() for i, a in enumerate(rows) for b in rows[i + 1 :]]
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def hamming(hashes: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    x = hashes[pairs[:, 0]] ^ hashes[pairs[:, 1]]
    return np.array([int(v).bit_count() for v in x.tolist()], dtype=np.int64)


def duplicate_pairs(images: Images, near_distance: int) -> np.ndarray:
    """int64 [pairs, 4]: a, b (rows, a < b), kind (index into KINDS), phash distance (-1
    where an image has none); sorted by a, b."""
    from imgprep.kernels.pairs import near_pairs  # numba: only the audit's job loads it

    found = [
        exact_pairs(images.source_sha256),
        exact_pairs(images.pixels_sha256),
        np.flatnonzero(images.has_phash)[near_pairs(images.phash[images.has_phash], near_distance)],
    ]
    kinds = np.concatenate([np.full(len(p), k, np.int64) for k, p in enumerate(found)])
    pairs = np.concatenate(found).reshape(-1, 2)
    order = np.lexsort((kinds, pairs[:, 1], pairs[:, 0]))
    pairs, kinds = pairs[order], kinds[order]
    first = np.ones(len(pairs), bool)
    first[1:] = (pairs[1:] != pairs[:-1]).any(axis=1)
    pairs, kinds = pairs[first], kinds[first]
    distance = hamming(images.phash, pairs)
    distance[~(images.has_phash[pairs[:, 0]] & images.has_phash[pairs[:, 1]])] = -1
    return np.column_stack([pairs, kinds, distance]).astype(np.int64)


# -- leaks ----------------------------------------------------------------------------------


def leak_drops(images: Images, pairs: np.ndarray, train_splits: Sequence[str]) -> list[tuple]:
    """(split, shard, position, path, reason) of each image of a train split with a
    duplicate in a split that is not one: its partner the first by kind, then order."""
    train = {images.splits.index(s) for s in train_splits if s in images.splits}
    best: dict[int, tuple[int, int]] = {}
    for a, b, kind, _ in pairs.tolist():
        for mine, other in ((a, b), (b, a)):
            if images.split[mine] in train and images.split[other] not in train:
                best[mine] = min(best.get(mine, (kind, other)), (kind, other))
    drops = []
    for row in sorted(best):
        kind, other = best[row]
        reason = (
            f"duplicate of {images.splits[images.split[other]]} image ({KINDS[kind]}): "
            f"{images.path[other]}"
        )
        split, shard = images.splits[images.split[row]], images.shard[row]
        drops.append((split, shard, int(images.position[row]), images.path[row], reason))
    return drops


def read_drops(leaks_tsv, split: str, shard: str) -> dict[int, str]:
    """position -> path of the shard's images that the audit drops (leaks: drop)."""
    table = read_tsv(leaks_tsv, LEAK_COLUMNS, ints=("position",))
    rows = table[(table["split"] == split) & (table["shard"] == shard)]
    return dict(zip(rows["position"].tolist(), rows["path"].tolist(), strict=True))


# -- outputs --------------------------------------------------------------------------------


def counts(images: Images, pairs: np.ndarray, drops: list[tuple], settings: dict) -> dict:
    """What duplicates.json and the summary say: pairs per kind, within and across splits
    (per split pair, "<a>/<b>" in the dataset's order), images hashed, leaks."""
    zero = dict.fromkeys(KINDS, 0)
    by_kind, within, across = dict(zero), dict(zero), dict(zero)
    split_pairs = {
        f"{a}/{b}": dict(zero) for i, a in enumerate(images.splits) for b in images.splits[i:]
    }
    for a, b, kind, _ in pairs.tolist():
        name = KINDS[kind]
        sa, sb = images.split[a], images.split[b]
        by_kind[name] += 1
        (within if sa == sb else across)[name] += 1
        split_pairs[f"{images.splits[sa]}/{images.splits[sb]}"][name] += 1
    leaking: dict[str, int] = {}
    for split, *_ in drops:
        leaking[split] = leaking.get(split, 0) + 1
    return {
        "images": len(images),
        "unhashed_images": images.unhashed,
        "near_distance": settings["near_distance"],
        "pairs": {**by_kind, "total": len(pairs)},
        "within_splits": within,
        "across_splits": across,
        "split_pairs": split_pairs,
        "leaks": {
            "policy": settings["leaks"],
            "train_splits": list(settings["train_splits"]),
            "images": leaking,
            "dropped": leaking if settings["leaks"] == "drop" else {},
        },
    }


def write_audit(
    splits: Sequence[str], tables, metas, settings: dict, pairs_tsv, counts_json, leaks_tsv
) -> dict:
    """The audit: pairs table, counts and the leaking train images (dropped from the
    records with ``leaks: drop``, listed either way); returns the counts."""
    images, unhashed = read_images(splits, tables, metas)
    if unhashed:
        advice = "`snakemake --forcerun resize_shard` adds them"
        if settings["leaks"] == "drop":
            raise ValueError(f"duplicates.leaks: drop needs hashes; {advice}: {unhashed[:3]}")
        print(f"{len(unhashed)} meta table(s) without hashes, not audited ({advice})")
    pairs = duplicate_pairs(images, settings["near_distance"])
    drops = leak_drops(images, pairs, settings["train_splits"])
    rows = (
        (
            images.splits[images.split[a]],
            clean(images.path[a]),
            images.splits[images.split[b]],
            clean(images.path[b]),
            KINDS[kind],
            distance,
        )
        for a, b, kind, distance in pairs.tolist()
    )
    with atomic_write(pairs_tsv, "wb") as handle:
        handle.write(table_bytes(DUPLICATE_COLUMNS, rows))
    with atomic_write(leaks_tsv, "wb") as handle:
        handle.write(table_bytes(LEAK_COLUMNS, [tuple(map(clean, map(str, d))) for d in drops]))
    summary = counts(images, pairs, drops, settings)
    with atomic_write(counts_json, "w", **TEXT) as handle:
        json.dump(summary, handle, indent=1, sort_keys=True)
        handle.write("\n")
    return summary
