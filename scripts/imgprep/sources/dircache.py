"""The scan cache of local folder sources: a folder whose own stat is unchanged is not
re-listed, and its files are not stat-ed again.

A folder's mtime (and ctime) changes when an entry in it is created, removed or renamed,
so a class folder whose signature (dev, ino, mtime_ns, ctime_ns), and that of every folder
below it, is what the last scan saw holds the same names: its placed rows are taken from
the cache. One lstat per folder (2,000 for ImageNet) instead of one per file (1.33M).

What this misses: a file rewritten in place (same name) keeps its folder's mtime, so its
new size and mtime are not seen until ``source.rescan: true`` (or the cache is deleted);
the resize stage compares the file it opens with the index row and fails the job on a
mismatch (``imgprep.sourcefile.SourceChangedError``).

Racy folders: a folder changed within ``RACY_SECONDS`` of the scan may change again within
the same mtime tick (a coarse-mtime filesystem, a writer still at work), so it is not
trusted: stored without signatures, the next scan lists it again (git's "racy clean"
problem); its rows are kept, as what the index's shard lists were made from
(``sources.folder_lists`` compares them with the new listing).

One file per scanned root and settings, ``<cache>/folders/<digest>.scan``: a version line,
the sha256 of the payload, then the payload (pickle of columns per folder: a few objects
per folder, not per file, so 1.33M rows load in well under a second). A file that does not
check out (version, checksum, root, settings) is ignored and rewritten, never trusted.
"""

from __future__ import annotations

import array
import hashlib
import os
import pickle
import time
from pathlib import Path

from imgprep.atomic import atomic_write
from imgprep.files.tables import IndexRow

FORMAT = b"imgprep-dircache 2\n"
RACY_SECONDS = 2.0
SUFFIX = ".scan"

# (dev, ino, mtime_ns, ctime_ns) of a folder
Signature = tuple[int, int, int, int]


def signature(stat: os.stat_result) -> Signature:
    return (stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns)


def cache_path(cache_dir, key: tuple) -> Path:
    digest = hashlib.sha256(repr(key).encode("utf-8", "surrogateescape")).hexdigest()[:24]
    return Path(cache_dir) / "folders" / f"{digest}{SUFFIX}"


def load(path: Path, key: tuple) -> tuple[dict, str | None]:
    """({folder name: (signatures, columns, ignored)}, the payload's sha256) of the cache
    at ``path``; ({}, None) when it is missing, of another version, damaged, or made for
    another root or settings. Signatures None: a racy folder, to be listed again."""
    try:
        raw = path.read_bytes()
    except OSError:
        return {}, None
    head = len(FORMAT) + 65
    if not raw.startswith(FORMAT) or len(raw) < head:
        return {}, None
    payload = memoryview(raw)[head:]
    digest = hashlib.sha256(payload).hexdigest()
    if digest.encode() != raw[len(FORMAT) : head - 1]:
        return {}, None
    try:
        stored_key, folders = pickle.loads(payload)
    except Exception:  # a checksummed payload that does not unpickle: another program's
        return {}, None
    if stored_key != key or not isinstance(folders, dict):
        return {}, None
    return folders, digest


def save(path: Path, key: tuple, folders: dict) -> str | None:
    """Write the cache; its payload's sha256, or None when it cannot be written (the next
    scan is cold)."""
    payload = pickle.dumps((key, folders), protocol=pickle.HIGHEST_PROTOCOL)
    digest = hashlib.sha256(payload).hexdigest()
    try:
        with atomic_write(path, "wb") as handle:
            handle.write(FORMAT + digest.encode() + b"\n")
            handle.write(payload)
    except OSError:
        return None
    return digest


def trusted(signatures: dict[str, Signature], scan_started_ns: int) -> bool:
    """Whether no folder changed within RACY_SECONDS of the scan (else: list it again)."""
    bound = scan_started_ns - int(RACY_SECONDS * 1e9)
    return all(sig[2] < bound for sig in signatures.values())


def unchanged(signatures: dict[str, Signature] | None, top: str, top_signature: Signature) -> bool:
    """Whether the class folder (already lstat-ed by the caller) and each folder below it
    still have the signatures the cache holds: one lstat per subfolder, none per file."""
    if signatures is None or signatures.get("") != top_signature:
        return False
    for rel, sig in signatures.items():
        if rel:
            try:
                if signature(os.lstat(f"{top}/{rel}")) != sig:
                    return False
            except OSError:
                return False
    return True


def now_ns() -> int:
    return time.time_ns()


# -- placed rows <-> columns --------------------------------------------------------------


def to_columns(rows: list, splits: tuple[str, ...]) -> tuple:
    """A folder's placed rows (split, slot, order, IndexRow(path, cls, size, mtime_ns))
    as a few flat objects: paths joined by newlines (whole: an f-string per row was a tenth
    of the load), int arrays, order bytes."""
    index = {name: i for i, name in enumerate(splits)}
    return (
        "\n".join(row.path for *_, row in rows),
        rows[0][3].cls if rows else "",
        array.array("q", [row.size for *_, row in rows]).tobytes(),
        array.array("q", [row.mtime_ns for *_, row in rows]).tobytes(),
        array.array("Q", [slot for _, slot, _, _ in rows]).tobytes(),
        b"".join(order for _, _, order, _ in rows),
        bytes(index[split] for split, *_ in rows) if len(splits) > 1 else b"",
    )


def from_columns(columns: tuple, splits: tuple[str, ...]) -> list:
    """The placed rows ``to_columns`` flattened (no per-row Python beyond the tuples)."""
    text, cls, sizes, mtimes, slots, orders, split_index = columns
    if not text and not slots:
        return []
    names = text.split("\n")
    count = len(names)
    sizes_list = array.array("q", sizes).tolist()
    mtimes_list = array.array("q", mtimes).tolist()
    slots_list = array.array("Q", slots).tolist()
    order_list = [orders[i : i + 8] for i in range(0, 8 * count, 8)]
    split_list = [splits[i] for i in split_index] if split_index else [splits[0]] * count
    new = tuple.__new__
    return [
        (split, slot, order, new(IndexRow, (path, cls, size, mtime, -1, "")))
        for split, slot, order, path, size, mtime in zip(
            split_list, slots_list, order_list, names, sizes_list, mtimes_list, strict=True
        )
    ]


def has_rows(columns: tuple) -> bool:
    return bool(columns[4])


def row_keys(columns: tuple) -> set[tuple]:
    """(path, size, mtime_ns, split index, slot) of each row: what its index line and its
    shard are made of, to compare two listings of a folder."""
    text, _, sizes, mtimes, slots, _, split_index = columns
    if not slots:
        return set()
    count = len(slots) // 8
    split_list = list(split_index) if split_index else [0] * count
    return set(
        zip(
            text.split("\n"),
            array.array("q", sizes).tolist(),
            array.array("q", mtimes).tolist(),
            split_list,
            array.array("Q", slots).tolist(),
            strict=True,
        )
    )


# what follows size and mtime in the line of a scanned row (no offset, no boxes)
_LINE_TAIL = IndexRow("", "").line().split("\t", 4)[4]


def placed_lines(columns: tuple, indices=None) -> list[tuple[int, int, bytes, str]]:
    """(split index, slot, order, ``IndexRow.line()``) of the rows at ``indices`` (all
    when None), formatted straight from the columns."""
    text, cls, sizes, mtimes, slots, orders, split_index = columns
    if not slots:
        return []
    names = text.split("\n")
    sizes, mtimes = array.array("q", sizes), array.array("q", mtimes)
    slots = array.array("Q", slots)
    if indices is None:
        indices = range(len(slots))
    return [
        (
            split_index[i] if split_index else 0,
            slots[i],
            orders[8 * i : 8 * i + 8],
            f"{names[i]}\t{cls}\t{sizes[i]}\t{mtimes[i]}\t{_LINE_TAIL}",
        )
        for i in indices
    ]
