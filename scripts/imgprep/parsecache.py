"""A parse result kept on disk between workflow invocations: byte sections plus a little
metadata, valid for one exact key (the parsed file's path, size and mtime, and every
setting that changes the result).

Snakemake re-parses the workflow, and so re-scans the source, at every invocation; for a
14M-line URL list that is a 30 s, multi-GB parse whose product (the shard lists) rarely
changes. The file is the sections back to back, then a JSON trailer (format, key,
metadata, and each section's offset, size and sha256) on a line of its own, then one
line with the trailer's length and sha256. Loading reads the trailer only; a section is
read, and checked against its digest, when it is needed (``ShardList.data``), so a warm
run touches a few KB of a 1.4 GB file. A file whose trailer does not check out, or whose
key or format differs, is ignored (the caller parses again and rewrites it); written
atomically (``atomic_write``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

from imgprep.atomic import atomic_write

_MAGIC = b"imgprep-parsecache 1\n"
_LAST_LINE_MAX = 128  # "<trailer length> <sha256 hex>\n"


class CorruptCache(Exception):
    """A section of a cache file no longer matches its digest (the file changed)."""


class ShardList:
    """One index shard list known by its digest; its bytes are made only when needed.

    What a source can hand the index instead of the shard's lines: the index compares
    ``sha256`` with what it last wrote (``imgprep.index``) and calls ``data()`` only for
    a list it has to write. ``len()`` is the number of images in it.
    """

    __slots__ = ("lines", "size", "sha256", "_load")

    def __init__(self, lines: int, size: int, sha256: str, load: Callable[[], bytes]):
        self.lines, self.size, self.sha256, self._load = lines, size, sha256, load

    def __len__(self) -> int:
        return self.lines

    def __iter__(self):
        """The member lines (``IndexRow.line()``), as a scan's own lists hold them."""
        text = self.data().decode("utf-8", "surrogateescape")
        return iter(text.splitlines()[1:])

    def __eq__(self, other) -> bool:
        """Equal lists have one digest; a list of lines equals the list holding them."""
        if isinstance(other, ShardList):
            return (self.lines, self.size, self.sha256) == (other.lines, other.size, other.sha256)
        return isinstance(other, list) and list(self) == other

    __hash__ = None

    @classmethod
    def in_memory(cls, lines: int, data: bytes) -> ShardList:
        return cls(lines, len(data), hashlib.sha256(data).hexdigest(), lambda: data)

    def data(self) -> bytes:
        data = self._load()
        if len(data) != self.size or hashlib.sha256(data).hexdigest() != self.sha256:
            raise CorruptCache(f"a cached shard list changed on disk (sha256 {self.sha256})")
        return data


class ShardLists(NamedTuple):
    """What a source's ``shard_lists`` found: per split its ``ShardList``s, in shard
    order, and as ``sources.common.Found`` the ignored entries, the classes, the source."""

    shards: dict[str, list[ShardList]]
    ignored: list[tuple[str, str]]
    classes: set[str]
    where: object


def write(path, key: dict, meta: dict, sections: Iterable[bytes]) -> list[tuple[int, int, str]]:
    """Write the cache file; return (offset, size, sha256) of each section, in order."""
    table = []
    with atomic_write(path, "wb") as handle:
        handle.write(_MAGIC)
        offset = len(_MAGIC)
        for data in sections:
            handle.write(data)
            table.append((offset, len(data), hashlib.sha256(data).hexdigest()))
            offset += len(data)
        trailer = json.dumps(
            {"key": key, "meta": meta, "sections": table}, sort_keys=True, separators=(",", ":")
        ).encode()
        handle.write(trailer + b"\n")
        handle.write(f"{len(trailer)} {hashlib.sha256(trailer).hexdigest()}\n".encode())
    return table


def load(path, key: dict) -> tuple[dict, list[tuple[int, int, str]]] | None:
    """(metadata, section table) of the cache file, or None when it is missing, damaged,
    of another format or made for another key."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if handle.read(len(_MAGIC)) != _MAGIC:
                return None
            tail_at = max(len(_MAGIC), size - _LAST_LINE_MAX)
            handle.seek(tail_at)
            tail = handle.read()
            if not tail.endswith(b"\n"):
                return None
            newline = tail.rfind(b"\n", 0, len(tail) - 1)
            if newline < 0:
                return None
            last = tail[newline + 1 : -1]
            length_text, _, digest = last.decode("ascii").partition(" ")
            length = int(length_text)
            trailer_at = size - len(last) - 2 - length
            if trailer_at < len(_MAGIC):
                return None
            handle.seek(trailer_at)
            trailer = handle.read(length)
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if hashlib.sha256(trailer).hexdigest() != digest:
        return None
    try:
        parsed = json.loads(trailer)
        table = [(int(o), int(n), str(d)) for o, n, d in parsed["sections"]]
    except (ValueError, KeyError, TypeError):
        return None
    if parsed.get("key") != key:
        return None
    end = len(_MAGIC)
    for offset, length, _ in table:  # back to back, right up to the trailer
        if offset != end:
            return None
        end += length
    if end != trailer_at:
        return None
    return parsed.get("meta", {}), table


def read_section(path, offset: int, size: int) -> bytes:
    """A section's bytes (``ShardList.data`` checks them against the digest)."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read(size)


def cache_path(cache_dir, source, kind: str) -> Path:
    """One cache file per parsed file and kind (``fall11_urls.txt.<digest>.urls``): a new
    key rewrites it, so stale ones do not pile up."""
    source = os.path.abspath(source)
    digest = hashlib.sha256(source.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return Path(cache_dir) / f"{os.path.basename(source)}.{digest}.{kind}"
