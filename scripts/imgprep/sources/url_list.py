"""source.type 'urls': a URL list (fall11_urls.txt, or one URL a line); the download
stage fetches the images (``imgprep.stages.download``).

Placement hashes the entry's key (``n01440764_10026``, or the URL itself), so the same
URL stays in the same shard when the list grows. Labels come from the key's synset;
plain URLs are unlabelled. Only the standard library: the scan runs at parse time.
"""

from __future__ import annotations

import contextlib
import gc
import re
from pathlib import Path
from typing import NamedTuple

from imgprep.errors import ConfigError
from imgprep.files.tables import IndexRow
from imgprep.http import url_from_bytes
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
    entries: list[UrlEntry] = []
    problems: list[tuple[int, str]] = []
    seen: set[str] = set()
    wnids: dict[str, str] = {}  # one string object per wnid, not one per line
    fast_line = _PLAIN_ASCII_LINE.fullmatch
    with open_source(path, "rb") as handle, _no_gc():
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
            entries.append(UrlEntry(key, url, wnid))
    return entries, problems


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
