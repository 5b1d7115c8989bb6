"""What every source's scan shares: the placement hash, the name filters, the split plans.

A scan yields ``Placed`` rows (split, slot, order, typed ``IndexRow``); the index sorts
them into shard lists (shard = slot % shards: the source's, or a dataset's own count).
Only the standard library: the scan runs at workflow parse time.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
from collections.abc import Iterator
from pathlib import Path
from stat import S_ISDIR, S_ISLNK, S_ISREG
from typing import NamedTuple

from imgprep.boxes import RawBoxes, encode_boxes
from imgprep.errors import ConfigError
from imgprep.files.tables import IndexRow
from imgprep.sourcefile import (
    HIDDEN,
    NOT_AN_IMAGE_EXTENSION,
    NOT_UTF8,
    SYMLINK_NOT_FOLLOWED,
    TAB_OR_NEWLINE,
    is_utf8,
    not_regular_reason,
    open_source,
    shown,
)

# (split, cumulative fraction) per split: where a placement hash may send a key
Plan = tuple[tuple[str, float], ...]


# An index row and where it goes: split, slot (a 64-bit number; its shard in a split of n
# shards is slot % n), and its sort key inside the shard. A
# plain tuple, not a NamedTuple: a scan makes one per image (1.28M), and a class-folder
# walk pickles them back from its worker processes.
Placed = tuple[str, int, bytes, IndexRow]


class Found(NamedTuple):
    """What a source's scan found: placed rows, (path, reason) of what it ignored, the
    classes its images carry, and ``where`` (the source, as the "no images" error names it)."""

    rows: list[Placed]
    ignored: list[tuple[str, str]]
    classes: set[str]
    where: object


def placer(seed: int):
    """Place an image by a 24-byte keyed hash of its key (its path relative to the split
    folder, or as the manifest writes it): bytes 0-8 are the slot (the shard is the slot
    modulo the shard count, so every dataset with its own count places from the same
    digest), 8-16 the order inside it, 16-24 the split when splits are fractions. Keyed by
    the seed and independent of every other image, so one change moves nothing else."""
    keyed = hashlib.blake2b(digest_size=24, key=str(seed).encode())
    from_bytes = int.from_bytes

    def place(key: str, plan: Plan) -> tuple[str, int, bytes]:
        state = keyed.copy()
        state.update(key.encode("utf-8", "surrogateescape"))
        digest = state.digest()
        split = plan[0][0]
        if len(plan) > 1:
            u = from_bytes(digest[16:24], "little") / 2.0**64
            split = next((p for p in plan if u < p[1]), plan[-1])[0]
        return split, from_bytes(digest[:8], "little"), digest[8:16]

    return place


def fraction_plan(splits: dict) -> Plan:
    """(split, cumulative fraction) in name order, for hash-drawn splits; the
    fractions must add up to 1 (every image lands in one split)."""
    plan, bound = [], 0.0
    for name in sorted(splits):
        bound += splits[name]["fraction"]
        plan.append((name, bound))
    if not math.isclose(bound, 1.0, abs_tol=1e-9):
        raise ConfigError(f"config key 'splits.*.fraction': the fractions add up to {bound}, not 1")
    return tuple(plan)


def single_plan(split: str) -> Plan:
    """Every key of this split goes to it; the hash picks only slot and order."""
    return ((split, 1.0),)


def only(split: dict, name: str, allowed: tuple, why: str) -> None:
    """Split keys other than ``shards`` and ``allowed`` are an error naming the key."""
    for key in ("dir", "fraction", "tar", "labels", "boxes"):
        if key in split and key not in allowed:
            raise ConfigError(f"config key 'splits.{name}.{key}' does not apply here: {why}")


def check_boxes(split: dict, name: str) -> None:
    if "boxes" in split and not Path(split["boxes"]).exists():
        raise ConfigError(f"config key 'splits.{name}.boxes': not found: {split['boxes']}")


def check_root_folder(source: dict) -> None:
    if "root" not in source or not Path(source["root"]).is_dir():
        raise ConfigError(f"config key 'source.root': folder not found: {source.get('root')}")


def extensions(config: dict) -> frozenset:
    return frozenset(ext.lower() for ext in config["source"]["extensions"])


def is_image_name(name: str, image_extensions: frozenset) -> bool:
    return "." in name and name.rpartition(".")[2].lower() in image_extensions


def is_hidden(name: str) -> bool:
    return name.rpartition("/")[2].startswith(".")


def has_tab_or_newline(name: str) -> bool:
    return "\t" in name or "\n" in name or "\r" in name


def name_problem(name: str) -> str | None:
    """Why a name cannot be an index path (not UTF-8, or would split the TSV row)."""
    if not is_utf8(name):
        return NOT_UTF8
    if has_tab_or_newline(name):
        return TAB_OR_NEWLINE
    return None


def entries(top: str, prefix: str, ignored: list, names=None) -> Iterator[tuple]:
    """(relpath, path, lstat) of the folders and regular files in folder ``top``.

    Nothing else is ever opened: hidden entries, names that are not UTF-8 or hold a tab or
    line break, symlinks (never followed: a link to ``.`` would multiply the images, one
    to another split's folder leak them into this one), FIFOs, sockets and devices go to
    ``ignored`` with the reason, relpath being ``prefix + name``. An unreadable folder is
    listed there too. lstat costs what stat did: one syscall per entry.
    """
    if names is None:
        try:
            names = os.listdir(top)
        except OSError as error:
            ignored.append((prefix.rstrip("/") or ".", f"unreadable folder: {error.strerror}"))
            return
    for name in names:
        relpath = prefix + name
        # name_problem, inlined: this loop runs once per file of the source (1.28M)
        if name.startswith("."):
            ignored.append((relpath, HIDDEN))
            continue
        if not is_utf8(name):
            ignored.append((relpath, NOT_UTF8))
            continue
        if "\t" in name or "\n" in name or "\r" in name:
            ignored.append((relpath, TAB_OR_NEWLINE))
            continue
        path = f"{top}/{name}"
        try:
            stat = os.lstat(path)
        except OSError as error:
            ignored.append((relpath, f"unreadable: {error.strerror}"))
            continue
        if S_ISLNK(stat.st_mode):
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            ignored.append((relpath, f"{SYMLINK_NOT_FOLLOWED} (to {target})"))
        elif S_ISDIR(stat.st_mode) or S_ISREG(stat.st_mode):
            yield relpath, path, stat
        else:
            ignored.append((relpath, not_regular_reason(stat.st_mode)))


def walk(
    top: str, rel: str, image_extensions: frozenset, found: list, ignored: list, folders=None
) -> None:
    """Collect (relpath, size, mtime_ns) of the image files below one class folder;
    ``folders`` (a dict) gets the lstat of each subfolder by its relpath."""
    for relpath, path, stat in entries(top, f"{rel}/", ignored):
        if S_ISDIR(stat.st_mode):
            if folders is not None:
                folders[relpath] = stat
            walk(path, relpath, image_extensions, found, ignored, folders)
        elif not is_image_name(relpath.rpartition("/")[2], image_extensions):
            ignored.append((relpath, NOT_AN_IMAGE_EXTENSION))
        else:
            found.append((relpath, stat.st_size, stat.st_mtime_ns))


@contextlib.contextmanager
def listing(key: str):
    """A split folder the config names that cannot be listed fails naming the key (its
    subfolders that cannot be listed are only listed in ignored.tsv)."""
    try:
        yield
    except OSError as error:
        if error.filename is None or error.strerror is None:
            raise
        raise ConfigError(
            f"config key '{key}': cannot read {shown(str(error.filename))}: {error.strerror}"
        ) from None


def read_lines(path, key: str) -> list[str]:
    """The non-empty lines of a list the config names under ``key``."""
    try:
        with open_source(path, encoding="utf-8") as handle:
            return [line.strip() for line in handle if line.strip()]
    except UnicodeDecodeError as error:
        raise ConfigError(f"config key '{key}': {path} is not UTF-8 text: {error}") from None
    except OSError as error:
        raise ConfigError(f"config key '{key}': cannot read {path}: {error}") from None


def box_text(boxes: dict[str, RawBoxes], name: str) -> str:
    """The raw boxes of an image, found by its file name without extension."""
    if not boxes:
        return ""
    entry = boxes.get(name.rpartition("/")[2].rpartition(".")[0])
    if entry is None:
        return ""
    return encode_boxes(entry.ref_width, entry.ref_height, entry.boxes)


def with_boxes(rows: list[Placed], boxes: dict[str, RawBoxes]) -> list[Placed]:
    """Each row with its image's raw boxes (rows are scanned with none)."""
    if not boxes:
        return rows
    return [
        (split, slot, order, row._replace(boxes=box_text(boxes, row.path)))
        for split, slot, order, row in rows
    ]
