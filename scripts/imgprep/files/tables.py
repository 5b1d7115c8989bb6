"""The workflow's TSV tables: every table's columns, the index row, and reading them back.

Each table's columns are named here once; writers and readers import them. Only the
standard library at import time (the scan imports this at workflow parse time); pandas is
imported by ``read_tsv`` alone.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import pandas as pd

# index/<split>/<shard>.tsv: one source image per line, in shard order.
INDEX_COLUMNS = ("path", "class", "size", "mtime_ns", "offset", "boxes")
INDEX_INTS = ("size", "mtime_ns", "offset")
# index/labels.tsv: row index (0-based), the label written into records, class, text.
LABEL_COLUMNS = ("index", "label", "synset", "text")
# index/ignored.tsv: what the scan saw and did not index, and why.
IGNORED_COLUMNS = ("path", "reason")
# resized/<split>/<shard>.meta.tsv: what the resize stage made of each kept image.
META_COLUMNS = (
    "position",
    "width",
    "height",
    "channels",
    "colorspace",
    "source_format",
    "source_mode",
    "source_width",
    "source_height",
    "orientation",
    "crop_x0",
    "crop_y0",
    "crop_x1",
    "crop_y1",
    "pad_left",
    "pad_top",
    "content_width",
    "content_height",
    "kept",
    "nbytes",
    "icc",
    # the duplicate audit's keys (imgprep.kernels.phash): sha256 of the source file, of
    # its decoded pixels, and the 64-bit DCT hash of the stored JPEG (16 hex digits)
    "source_sha256",
    "pixels_sha256",
    "phash",
)
# rejects tables: one rejected image per line, with the reason.
REJECT_COLUMNS = ("position", "path", "reason")
# <dataset>/duplicates.tsv: one duplicate pair per line (imgprep.duplicates).
DUPLICATE_COLUMNS = ("split_a", "path_a", "split_b", "path_b", "kind", "distance")
# <dataset>/duplicates.leaks.tsv: train images duplicating a held-out split's, and why;
# the summary's rejects.tsv columns, which they join with `duplicates.leaks: drop`.
LEAK_COLUMNS = ("split", "shard", "position", "path", "reason")
# downloads/<split>/<shard>.status.tsv: one URL per line, fetched or failed.
STATUS_COLUMNS = ("position", "url", "status", "reason", "bytes", "sha256")

# How every table is opened as text: undecodable name bytes survive as surrogate escapes.
TEXT = {"encoding": "utf-8", "errors": "surrogateescape", "newline": "\n"}


class IndexRow(NamedTuple):
    """One line of a shard's member list (``INDEX_COLUMNS``, in that order).

    ``size``/``mtime_ns`` are what the scan saw (-1 / 0 when unknown, as for a URL);
    ``offset`` is a member's data offset inside a tar read in place, else -1; ``boxes``
    is ``imgprep.boxes.encode_boxes`` text or empty.
    """

    path: str
    cls: str
    size: int = -1
    mtime_ns: int = 0
    offset: int = -1
    boxes: str = ""

    def line(self) -> str:
        return f"{self.path}\t{self.cls}\t{self.size}\t{self.mtime_ns}\t{self.offset}\t{self.boxes}"

    @classmethod
    def parse(cls, line: str) -> IndexRow:
        path, klass, size, mtime_ns, offset, boxes = line.rstrip("\n").split("\t")
        return cls(path, klass, int(size), int(mtime_ns), int(offset), boxes)


def row_path(line: str) -> str:
    """The path of an index line, without parsing the rest (the scan holds millions)."""
    return line.split("\t", 1)[0]


def clean(text: str) -> str:
    """One TSV field: tabs and line breaks would split the row."""
    return text.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def member_name(position: int) -> str:
    """A resized image's member in its shard's tar (position in the shard's list)."""
    return f"{position:06d}.jpg"


def download_member_name(position: int) -> str:
    """A downloaded image's member in its shard's download tar."""
    return f"{position:06d}"


def table_lines(columns: Sequence[str], lines: Iterable[str]) -> bytes:
    """A headed table from already-joined lines, as the index files are stored."""
    return ("\n".join(["\t".join(columns), *lines]) + "\n").encode("utf-8", "surrogateescape")


def table_bytes(columns: Sequence[str], rows: Iterable[Sequence]) -> bytes:
    """A headed table from rows of values (``str()`` of each, no quoting)."""
    return table_lines(columns, ("\t".join(str(value) for value in row) for row in rows))


def read_tsv(path, required: Sequence[str] = (), ints: Sequence[str] = ()) -> pd.DataFrame:
    """Read one of the workflow's headed TSVs, exactly as written.

    Everything is a string (a class named "NA" and empty text survive), nothing is
    quoted (the writers join fields with tabs), and undecodable path bytes come
    back as surrogate escapes so they round-trip into the records.
    """
    import pandas as pd

    frame = pd.read_csv(
        path,
        sep="\t",
        dtype=str,
        keep_default_na=False,
        na_filter=False,
        quoting=csv.QUOTE_NONE,
        encoding="utf-8",
        encoding_errors="surrogateescape",
    )
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
    for column in (c for c in ints if c in frame.columns):  # absent optional: skip
        try:
            frame[column] = frame[column].astype("int64")
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: column {column!r} is not all integers: {exc}") from exc
    return frame
