"""The report's rejects gallery: what was rejected and why, with a thumbnail of each
rejected file that still decodes (a truncated JPEG shows its top rows).

Source files are read as the resize stage reads them (imgprep.sourcefile: regular files
only, never blocking, at most ``source.max_file_bytes``; a tar member in place), and
decoded with Pillow at reduced scale; anything that fails is "no thumbnail", never an
error: these files were rejected for failing.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile

from imgprep.figures.plots import plt, save
from imgprep.s3 import is_s3_url
from imgprep.sourcefile import ReadLimits, read_file
from imgprep.tarindex import MEMBER_SEPARATOR, read_member

__all__ = ["MAX_THUMBNAILS", "Reject", "read_thumbnail", "rejects_gallery"]

MAX_THUMBNAILS = 48  # a gallery of a million rejects would be unreadable (and huge)
MAX_LISTED = 12  # rejects without a thumbnail named above the thumbnails
THUMBNAIL_SIDE = 160
# a thumbnail is never worth decoding a decompression bomb for
MAX_PIXELS = 64_000_000


@dataclass(frozen=True)
class Reject:
    """One rejected image: where it was, why, and its thumbnail (None: nothing decodes)."""

    split: str
    shard: str
    position: int
    path: str
    reason: str
    thumbnail: np.ndarray | None = None


def read_thumbnail(
    path: str, offset: int = -1, size: int = -1, limits: ReadLimits | None = None
) -> np.ndarray | None:
    """uint8 HxWx3 of what decodes of a source file (at most THUMBNAIL_SIDE a side), or
    None. S3 objects are not fetched for a thumbnail."""
    limits = limits or ReadLimits()
    if is_s3_url(path):
        return None
    try:
        if offset >= 0:
            data = read_member(path.partition(MEMBER_SEPARATOR)[0], offset, size, limits.max_bytes)
        else:
            data = read_file(path, limits.max_bytes, limits.follow_symlinks)
    except OSError:
        return None
    return decode_thumbnail(data)


@contextlib.contextmanager
def _truncated_allowed():
    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved


def decode_thumbnail(data: bytes) -> np.ndarray | None:
    """What Pillow decodes of ``data`` (a truncated file's decodable part), reduced."""
    if not data:
        return None
    try:
        with _truncated_allowed(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > MAX_PIXELS:
                return None
            image.draft("RGB", (THUMBNAIL_SIDE, THUMBNAIL_SIDE))  # JPEG: DCT-scaled decode
            image = image.convert("RGB")
            image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            return np.asarray(image, dtype=np.uint8)
    except Exception:  # noqa: BLE001 - any failure to decode is "no thumbnail"
        return None


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def rejects_gallery(
    rejects: Sequence[Reject],
    reason_counts: Mapping[str, int],
    out_png,
    title: str,
    columns: int = 6,
) -> None:
    """A table of reject reasons (kind -> count) above the thumbnails of the first
    MAX_THUMBNAILS rejects that decode, each captioned with its file name and reason; how
    many more decode and how many do not is said."""
    with_image = [r for r in rejects if r.thumbnail is not None]
    shown = with_image[:MAX_THUMBNAILS]
    rows = max(1, -(-len(shown) // columns))
    without = [r for r in rejects if r.thumbnail is None]
    listed = without[:MAX_LISTED]
    table_h = 0.9 + 0.2 * (max(1, len(reason_counts)) + len(listed))
    fig = plt.figure(figsize=(2 * columns, table_h + 2.3 * rows))
    grid = fig.add_gridspec(rows + 1, columns, height_ratios=[table_h] + [2.3] * rows)
    head = fig.add_subplot(grid[0, :])
    head.set_axis_off()
    lines = [f"{len(rejects)} rejected images"]
    lines += [f"{n:>8}  {kind}" for kind, n in reason_counts.items()]
    lines.append(
        f"thumbnails: {len(shown)} shown"
        + (f", {len(with_image) - len(shown)} more decode" if len(with_image) > len(shown) else "")
        + f", {len(rejects) - len(with_image)} do not decode"
    )
    for reject in listed:
        name = reject.path.rsplit("/", 1)[-1]
        lines.append(f"  no image: {reject.split}/{_short(name, 40)}: {_short(reject.reason, 60)}")
    if len(without) > len(listed):
        lines.append(f"  … and {len(without) - len(listed)} more without a thumbnail (rejects.tsv)")
    head.text(0, 1, "\n".join(lines), va="top", ha="left", family="monospace", fontsize=9)
    for i, reject in enumerate(shown):
        ax = fig.add_subplot(grid[1 + i // columns, i % columns])
        ax.imshow(reject.thumbnail)
        ax.set_axis_off()
        name = reject.path.rsplit("/", 1)[-1]
        ax.set_title(f"{_short(name, 28)}\n{reject.split}: {_short(reject.reason, 30)}", fontsize=7)
    if not shown:
        ax = fig.add_subplot(grid[1, :])
        ax.text(0.5, 0.5, "no rejected file decodes", ha="center", va="center")
        ax.set_axis_off()
    fig.suptitle(title)
    save(fig, out_png)


REJECT_TABLE_COLUMNS = ("split", "shard", "position", "path", "reason", "thumbnail")


def rejects_report(rejects_tsv, summary_json, tables, limits, out_png, out_tsv, title) -> list:
    """A dataset's rejects gallery and table from the summary's rejects.tsv (split, shard,
    position, path, reason) and reason counts; each file is found in its split's member
    table (``tables``: index/<split>.tsv, for a tar member's offset and size) and read
    bounded by ``limits``. Thumbnails are tried for the first MAX_THUMBNAILS * 4 rejects
    at most (a million truncated files must not take hours)."""
    import json
    from collections import Counter

    from imgprep.atomic import atomic_write
    from imgprep.files.tables import read_tsv, table_bytes

    rows = read_tsv(rejects_tsv, required=("split", "shard", "position", "path", "reason"))
    places = {}
    for table in tables:
        split = table.rsplit("/", 1)[-1].removesuffix(".tsv")
        members = read_tsv(table, required=("path", "shard", "position"), ints=("offset", "size"))
        for member in members.itertuples(index=False):
            places[(split, member.shard, int(member.position))] = (member.offset, member.size)
    rejects = []
    for i, row in enumerate(rows.itertuples(index=False)):
        thumbnail = None
        if i < MAX_THUMBNAILS * 4:
            offset, size = places.get((row.split, row.shard, int(row.position)), (-1, -1))
            thumbnail = read_thumbnail(row.path, offset, size, limits)
        rejects.append(
            Reject(row.split, row.shard, int(row.position), row.path, row.reason, thumbnail)
        )
    with open(summary_json) as handle:
        splits = json.load(handle)["splits"]
    counts = Counter()
    for facts in splits.values():
        counts.update(facts["reject_reasons"])
    with atomic_write(out_tsv, "wb") as handle:
        handle.write(
            table_bytes(
                REJECT_TABLE_COLUMNS,
                (
                    (r.split, r.shard, r.position, r.path, r.reason, int(r.thumbnail is not None))
                    for r in rejects
                ),
            )
        )
    rejects_gallery(rejects, dict(sorted(counts.items())), out_png, title)
    return rejects
