"""source.type 'urls': a URL list (fall11_urls.txt, or one URL a line); the download
stage fetches the images (``imgprep.stages.download``).

Placement hashes the entry's key (``n01440764_10026``, or the URL itself), so the same
URL stays in the same shard when the list grows. Labels come from the key's synset;
plain URLs are unlabelled. Only the standard library: the scan runs at parse time.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from imgprep import parsecache
from imgprep.errors import ConfigError
from imgprep.files.tables import INDEX_COLUMNS, IndexRow
from imgprep.http import url_from_bytes
from imgprep.parsecache import ShardList, ShardLists
from imgprep.sourcefile import open_source
from imgprep.sources.common import Found, fraction_plan, only, placer


def check(config: dict) -> None:
    """A URL list has no splits of its own: each split takes a share of it."""
    source, splits = config["source"], config["splits"]
    if "urls" not in source:
        raise ConfigError("config key 'source.urls' is required with source.type 'urls'")
    if not Path(source["urls"]).is_file():
        raise ConfigError(f"config key 'source.urls': file not found: {source['urls']}")
    for name, split in splits.items():
        only(split, name, ("fraction",), "a URL list is divided by splits.*.fraction")
        if "fraction" not in split:
            raise ConfigError(
                f"config key 'splits.{name}.fraction' is required with source.type 'urls'"
            )
    fraction_plan(splits)


def scan(config: dict, cache: Path) -> Found:
    path = Path(config["source"]["urls"])
    entries, problems = parse_url_list(path)
    ignored = [(f"{path.name}:{line}", reason) for line, reason in problems]
    place, plan = placer(config["seed"]), fraction_plan(config["splits"])
    rows, classes = [], set()
    for entry in entries:
        split, slot, order = place(entry.key, plan)
        rows.append((split, slot, order, IndexRow(entry.url, entry.wnid)))
        if entry.wnid:
            classes.add(entry.wnid)
    return Found(rows, ignored, classes, path)


def shard_lists(config: dict, cache: Path) -> ShardLists:
    """The source's shard lists, straight from the list: what ``scan`` gives, placed and
    sorted, without an ``IndexRow`` per line, and cached in ``cache``.

    The cache is keyed by the list (path, inode, size, mtime) and every setting the lists
    depend on (seed, each split's fraction and shards); on a hit nothing of the list is
    read and a list is loaded only if the index has to write it. Used when no dataset
    plans lists of its own (those place from every row: ``index.scan``).
    """
    path = Path(config["source"]["urls"])
    before = os.stat(path)
    key = _cache_key(config, path, before)
    where = parsecache.cache_path(cache, path, "urls")
    loaded = parsecache.load(where, key)
    rebuild = functools.cache(lambda: _rebuild(config, cache, where))
    if loaded is not None:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            return _from_cache(where, key, *loaded, rebuild)
    rows, ignored, classes = _place_lines(config, path)
    after = os.stat(path)
    names = list(config["splits"])
    lines = [[len(members) for members in rows[name]] for name in names]
    tables = _tables(rows, names)
    if _stat_key(after) != _stat_key(before):  # changed while read: not under the old key
        lists = {
            name: [ShardList.in_memory(count, next(tables)) for count in counts]
            for name, counts in zip(names, lines, strict=True)
        }
        return ShardLists(lists, ignored, classes, path)
    meta = {"splits": names, "lines": lines, "ignored": ignored, "classes": sorted(classes)}
    parsecache.write(where, key, meta, tables)
    loaded = parsecache.load(where, key)
    if loaded is None:
        raise OSError(f"{where}: the parse cache just written does not read back")
    return _from_cache(where, key, *loaded, rebuild)


# what makes one cached result another: bump with the layout of the lists or the cache
_CACHE_FORMAT = f"urls 1 {' '.join(INDEX_COLUMNS)}"


def _stat_key(stat: os.stat_result) -> list[int]:
    return [stat.st_ino, stat.st_size, stat.st_mtime_ns]


def _cache_key(config: dict, path: Path, stat: os.stat_result) -> dict:
    splits = {
        name: {"fraction": split["fraction"], "shards": split["shards"]}
        for name, split in config["splits"].items()
    }
    return {
        "format": _CACHE_FORMAT,
        "path": os.path.abspath(path),
        "stat": _stat_key(stat),
        "seed": config["seed"],
        "splits": splits,
    }


def _rebuild(config: dict, cache: Path, where: Path) -> ShardLists:
    """A parse from the list again, for a cache file whose sections no longer match."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(where)
    return shard_lists(config, cache)


def _section(where: Path, offset: int, size: int, digest: str, rebuild, split: str, shard: int):
    """A cached shard list's bytes; if the cache file changed since its trailer was read
    (damaged, or rewritten by another invocation), the list's bytes as parsed again."""
    data = parsecache.read_section(where, offset, size)
    if hashlib.sha256(data).hexdigest() == digest:
        return data
    return rebuild().shards[split][shard].data()


def _from_cache(where: Path, key: dict, meta: dict, table: list, rebuild) -> ShardLists:
    names, lines = meta["splits"], meta["lines"]
    if names != list(key["splits"]) or sum(map(len, lines)) != len(table):
        raise ValueError("cache layout")
    sections = iter(table)
    lists = {}
    for name, counts in zip(names, lines, strict=True):
        lists[name] = []
        for shard, count in enumerate(counts):
            offset, size, digest = next(sections)
            load = functools.partial(_section, where, offset, size, digest, rebuild, name, shard)
            lists[name].append(ShardList(int(count), size, digest, load))
    ignored = [(str(at), str(reason)) for at, reason in meta["ignored"]]
    return ShardLists(lists, ignored, set(meta["classes"]), Path(key["path"]))


def _place_lines(config: dict, path: Path):
    """Per split and shard, the images' sort keys + index lines; the ignored lines; the
    classes.

    The same lists as ``scan`` + ``index.scan`` make (a test compares them), in a third
    of the memory: one bytes object per image, its 8-byte order digest then its index
    line, so that sorting the bytes sorts by (order, line) as the index does (UTF-8 keeps
    code-point order; URLs are ASCII and keys strict UTF-8).
    """
    splits = config["splits"]
    place, plan = placer(config["seed"]), fraction_plan(splits)
    counts = {name: split["shards"] for name, split in splits.items()}
    rows: dict[str, list[list[bytes]]] = {
        name: [[] for _ in range(n)] for name, n in counts.items()
    }
    problems: list[tuple[int, str]] = []
    classes: set[str] = set()
    rest = _LINE_REST
    with _no_gc():
        for key, url, wnid in iter_url_list(path, problems):
            split, slot, order = place(key, plan)
            line = f"{url}\t{wnid}\t{rest}".encode("utf-8", "surrogateescape")
            rows[split][slot % counts[split]].append(order + line)
            if wnid:
                classes.add(wnid)
    ignored = [(f"{path.name}:{line}", reason) for line, reason in problems]
    return rows, ignored, classes


def _tables(rows: dict, names: list) -> Iterator[bytes]:
    """Each shard's index file (``table_lines``' bytes), in split and shard order; a
    shard's rows are dropped once its file is made (1.4 GB for fall11 need not stay)."""
    header = "\t".join(INDEX_COLUMNS).encode()
    for name in names:
        lists = rows[name]
        for index, members in enumerate(lists):
            lists[index] = []
            members.sort()
            yield b"\n".join([header, *[member[8:] for member in members]]) + b"\n"
            del members


# an index line of a URL is "<url>\t<wnid>\t" then this (no size, mtime, offset, boxes)
_LINE_REST = IndexRow("", "").line().split("\t", 2)[2]


class UrlEntry(NamedTuple):
    """One usable line of a URL list (a tuple: 14M of them must stay cheap)."""

    key: str
    url: str
    wnid: str


def parse_url_list(path) -> tuple[list[UrlEntry], list[tuple[int, str]]]:
    """Read a URL list; return (entries in file order, [(line number, problem)]).

    Takes ``<key>\\t<url>`` lines (fall11 style; the wnid is the key up to its last
    ``_``) and bare-URL lines (the URL is the key), mixed freely. Works on bytes because
    fall11_urls.txt is not valid UTF-8 throughout: URLs with non-ASCII bytes are
    percent-encoded byte for byte, which is what the server originally published.
    """
    problems: list[tuple[int, str]] = []
    with _no_gc():
        entries = [UrlEntry(*entry) for entry in iter_url_list(path, problems)]
    return entries, problems


def iter_url_list(path, problems: list[tuple[int, str]]) -> Iterator[tuple[str, str, str]]:
    """(key, url, wnid) of each usable line in file order, as ``parse_url_list`` reads
    them; (line number, problem) of the others go to ``problems``. A stream, so that the
    index can place 14M lines without holding all of them."""
    seen: set[str] = set()
    wnids: dict[str, str] = {}  # one string object per wnid, not one per line
    fast_line = _PLAIN_ASCII_LINE.fullmatch
    with open_source(path, "rb") as handle:
        for lineno, raw in enumerate(handle, 1):
            match = fast_line(raw)
            if match is not None:  # almost every line: one regex, no other parsing
                key_bytes, url_bytes = match.groups()
                url = url_bytes.decode("ascii")
                if key_bytes is None:
                    key, wnid = url, ""
                else:
                    key = key_bytes.decode("ascii")
                    wnid = key.rpartition("_")[0]
                    wnid = wnids.setdefault(wnid, wnid)
            else:
                parsed = _parse_line(raw)
                if parsed is None:
                    continue
                if isinstance(parsed, str):
                    problems.append((lineno, parsed))
                    continue
                key, url, wnid = parsed
                wnid = wnids.setdefault(wnid, wnid)
            size = len(seen)
            seen.add(key)
            if len(seen) == size:
                problems.append((lineno, f"duplicate key {key!r}"))
                continue
            yield key, url, wnid


@contextlib.contextmanager
def _no_gc():
    """Pause the cycle collector: millions of new tuples make it rescan the growing list
    over and over (it doubled the time of a 2M-line parse); strings and tuples of
    strings form no cycles to collect."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# a line needing no decoding decisions: optional key (not starting with '#'), a tab, and an
# http(s) URL of printable ASCII whose host part is not empty
_PLAIN_ASCII_LINE = re.compile(
    rb"(?:([\x21\x22\x24-\x7e][\x21-\x7e]*)\t)?"
    rb"((?i:https?)://[\x21\x22\x24-\x2e\x30-\x3e\x40-\x7e][\x21-\x7e]*)[ \t]*\r?\n?"
)


def _parse_line(raw: bytes) -> tuple[str, str, str] | str | None:
    """(key, url, wnid), a problem, or None for blank and comment lines."""
    line = raw.strip(b" \r\n\x0b\x0c")  # not tabs: a leading one means an empty key
    if not line or line[0] == 0x23:  # '#'
        return None
    key_bytes, tab, url_bytes = line.partition(b"\t")
    if not tab:
        url_bytes = line
    url_bytes = url_bytes.strip()
    url = url_from_bytes(url_bytes)
    if url is None:
        return f"not an http(s) URL: {_preview(url_bytes)}"
    if not tab:
        return url, url, ""
    key_bytes = key_bytes.strip()
    try:
        key = key_bytes.decode()
    except UnicodeDecodeError:
        return f"key is not UTF-8: {_preview(key_bytes)}"
    if not key:
        return "empty key"
    return key, url, key.rpartition("_")[0]


def _preview(data: bytes, limit: int = 60) -> str:
    text = data.decode("utf-8", "backslashreplace")
    return repr(text if len(text) <= limit else text[:limit] + "...")
