"""Bounding boxes: read the annotations, carry them in the index, follow the image's resize.

Records store boxes normalized to [0, 1] in the stored (resized) image, as the TF
models ImageNet records do. Getting there takes three steps at three times:

1. Indexing reads the raw annotations (PASCAL-VOC XMLs or Kaggle's CSVs) and writes
   each image's boxes, in pixels, into one column of the index (``encode_boxes``).
2. Once the image is decoded its real size is known: ``normalize_boxes`` turns the
   pixels into fractions of the stored pixel array (Kaggle's boxes need that size).
3. The resize stage records, per image, how the output was cut from the source;
   ``transform_boxes`` sends the boxes through the same orientation, crop, scale and
   padding.

Coordinates are positions on a continuous plane, pixel i spanning [i, i + 1): a box
(x1, y1, x2, y2) is normalized as x1 / width etc., without the +-1 some VOC tools add
(ImageNet's coordinates are divided by the size as they are in the TF models scripts).

Only the standard library and defusedxml (pure Python) are imported: the index imports
this module at parse time.
"""

from __future__ import annotations

import bz2
import contextlib
import csv
import gzip
import hashlib
import lzma
import math
import numbers
import os
import re
import stat as stat_module
import tarfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from xml.etree.ElementTree import ParseError

import defusedxml.ElementTree as SafeElementTree
from defusedxml import DefusedXmlException

from imgprep.atomic import atomic_write
from imgprep.sourcefile import (
    DEFAULT_MAX_FILE_BYTES,
    SYMLINK_NOT_FOLLOWED,
    check_size,
    not_regular_reason,
    open_regular,
    open_source,
    read_file,
)

__all__ = [
    "BoxGeometry",
    "RawBoxes",
    "decode_boxes",
    "encode_boxes",
    "normalize_boxes",
    "parse_voc_xml",
    "read_kaggle_boxes",
    "read_voc_boxes",
    "transform_boxes",
]

Number = int | float
Box = tuple[float, float, float, float]

# extensions stripped from a VOC <filename>; anything else after a dot is part of the name
_IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".jpe", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_INT = re.compile(r"[+-]?\d+")
# bump when the cache's content or layout changes: old caches are then rebuilt
_CACHE_VERSION = "imgprep-voc-boxes-2"
_PROBLEM = "!"  # first field of a cache line that records a problem, never a stem


@dataclass(frozen=True)
class RawBoxes:
    """Boxes of one image in pixels of a reference size, as the annotation gives them.

    ``ref_width`` x ``ref_height`` is the size the pixels refer to; 0 x 0 means the
    image's real size, known only once it is decoded (Kaggle's CSVs).
    """

    ref_width: Number
    ref_height: Number
    boxes: tuple[tuple[Number, Number, Number, Number], ...]


# -- the index column ---------------------------------------------------------------------


def encode_boxes(ref_width: Number, ref_height: Number, boxes: Iterable) -> str:
    """One index field: ``"ref_w ref_h x1 y1 x2 y2 ..."``, or ``""`` without boxes.

    Numbers keep what they were (ints as ints, floats as their shortest exact repr),
    so decode_boxes gives back exactly the input and the index text is deterministic.
    """
    boxes = [tuple(box) for box in boxes]
    if not boxes:
        return ""
    for box in boxes:
        if len(box) != 4:
            raise ValueError(f"a box has 4 coordinates (x1, y1, x2, y2), got {box!r}")
    for name, value in (("ref_width", ref_width), ("ref_height", ref_height)):
        if _number(value) < 0:
            raise ValueError(f"{name} must not be negative, got {value!r}")
    if (_number(ref_width) == 0) != (_number(ref_height) == 0):
        raise ValueError(f"reference size {ref_width!r} x {ref_height!r}: both or neither 0")
    values = (ref_width, ref_height, *(value for box in boxes for value in box))
    return " ".join(_number_text(value) for value in values)


def decode_boxes(text: str) -> RawBoxes:
    """Inverse of encode_boxes; ``""`` gives RawBoxes(0, 0, ())."""
    tokens = text.split()
    if not tokens:
        return RawBoxes(0, 0, ())
    if len(tokens) < 6 or (len(tokens) - 2) % 4:
        raise ValueError(f"boxes {text!r}: expected 'ref_w ref_h' and groups of 4 numbers")
    values = [_parse_number(token) for token in tokens]
    boxes = tuple(tuple(values[i : i + 4]) for i in range(2, len(values), 4))
    return RawBoxes(values[0], values[1], boxes)


def _number(value) -> Number:
    """An int or a finite float from any real number (numpy's included); bools refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"not a number: {value!r}")
    if isinstance(value, numbers.Integral):
        return int(value)
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {value!r}")
    return value


def _number_text(value) -> str:
    value = _number(value)
    return str(value) if isinstance(value, int) else repr(value)


def _parse_number(token: str) -> Number:
    """An int when the text is one, else a finite float."""
    if token.isdigit() and token.isascii():  # the common case, at 544k lines per load
        return int(token)
    token = token.strip()
    if _INT.fullmatch(token):
        return int(token)
    try:
        value = float(token)
    except ValueError:
        raise ValueError(f"not a number: {token!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {token!r}")
    return value


# -- PASCAL-VOC XMLs ----------------------------------------------------------------------


def parse_voc_xml(data: bytes, fallback_stem: str | None = None) -> tuple[str, RawBoxes]:
    """(image stem, boxes) of one VOC annotation; ValueError when it is unusable.

    The stem is ``<filename>`` without an image extension; ``fallback_stem`` (the
    XML's own name) stands in when ``<filename>`` is missing or a printf placeholder
    (``%s``, left in some ImageNet train XMLs). A missing or zero ``<size>`` gives a
    0 x 0 reference: the boxes then refer to the image's real size.
    """
    try:
        # defusedxml, whatever the encoding (a hand check for "<!ENTITY" misses UTF-16):
        # no DTD, so no entity expansion (billion laughs) and no external references
        root = SafeElementTree.fromstring(data, forbid_dtd=True)
    except DefusedXmlException as error:
        raise ValueError(
            f"DTDs and entity declarations are not accepted ({type(error).__name__})"
        ) from None
    except ParseError as error:
        raise ValueError(f"not well-formed XML: {error}") from None
    if root.tag != "annotation":
        raise ValueError(f"root element is <{root.tag}>, not <annotation>")
    stem = _filename_stem(root.findtext("filename"))
    if stem is None:
        if not fallback_stem:
            raise ValueError("no usable <filename> and no fallback name")
        stem = fallback_stem
    ref_width = ref_height = 0
    size = root.find("size")
    if size is not None:
        width, height = _xml_number(size, "width"), _xml_number(size, "height")
        if width is not None and height is not None and width > 0 and height > 0:
            ref_width, ref_height = width, height
    boxes = []
    for index, obj in enumerate(root.iter("object")):
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise ValueError(f"object {index} has no <bndbox>")
        box = tuple(_xml_number(bndbox, key) for key in ("xmin", "ymin", "xmax", "ymax"))
        if None in box:
            raise ValueError(f"object {index}: <bndbox> lacks a coordinate")
        boxes.append(box)
    return stem, RawBoxes(ref_width, ref_height, tuple(boxes))


def _filename_stem(filename: str | None) -> str | None:
    """The image stem a ``<filename>`` names; None when it names nothing usable."""
    name = (filename or "").strip().replace("\\", "/").rpartition("/")[2]
    if not name or "%" in name or "\t" in name or "\n" in name:
        return None
    base, dot, extension = name.rpartition(".")
    if dot and base and f".{extension.lower()}" in _IMAGE_EXTENSIONS:
        return base
    return name


def _xml_number(parent, tag: str) -> Number | None:
    text = parent.findtext(tag)
    if text is None or not text.strip():
        return None
    try:
        return _parse_number(text)
    except ValueError as error:
        raise ValueError(f"<{tag}>: {error}") from None


def read_voc_boxes(
    source, cache_dir, max_bytes: int = DEFAULT_MAX_FILE_BYTES
) -> tuple[dict[str, RawBoxes], list[tuple[str, str]]]:
    """All boxes of a folder of VOC XMLs or an archive of them, keyed by image stem.

    Returns (boxes, problems): problems are (member, reason) for XMLs that were
    skipped (broken, or a second annotation of the same stem); images whose XML has
    no object get no entry. The key is the XML's own name (``n01440764_10026.xml`` ->
    ``n01440764_10026``): that is how the annotation sets pair XMLs with images, and
    it is always there, unlike a usable ``<filename>``.

    Parsing the 544k ImageNet train XMLs takes most of a minute, the index runs at every
    snakemake invocation, so the result is cached in ``cache_dir``, keyed by the
    source's path and a fingerprint of its content (an archive's size and mtime; a
    folder's XML names, count, total size and newest mtime).

    Only regular files are read, each at most ``max_bytes``: a FIFO, a device, a symlink
    (not followed, as in the image scan) or an unreadable subfolder is a problem, never
    opened, so a FIFO named ``.xml`` cannot hang the scan (which even ``snakemake -n`` runs).
    """
    source = Path(source).absolute()
    skipped: list[tuple[str, str]] = []
    if source.is_dir():
        xml_files = _xml_files(source, skipped)
        fingerprint = _folder_fingerprint(xml_files)
        members = (
            (name, lambda name=name: read_file(source / name, max_bytes, follow_symlinks=False))
            for name, _ in xml_files
        )
    elif source.is_file():
        stat = source.stat()
        fingerprint = f"archive {stat.st_size} {stat.st_mtime_ns}"
        members = _archive_members(source, max_bytes)
    elif source.exists():
        raise ValueError(
            f"box annotations: {source} is {not_regular_reason(source.stat().st_mode)}"
        )
    else:
        raise FileNotFoundError(f"box annotations: no such file or folder: {source}")
    digest = hashlib.sha256(str(source).encode("utf-8", "surrogateescape")).hexdigest()[:24]
    cache_path = Path(cache_dir) / f"voc-boxes-{digest}.tsv"
    header = f"{_CACHE_VERSION}\t{source}\t{fingerprint}\tmax_bytes={max_bytes}"
    cached = _load_cache(cache_path, header)
    if cached is None:
        cached = _parse_members(members)
        _write_cache(cache_path, header, *cached)
    boxes, problems = cached
    return boxes, sorted(skipped) + problems


def _xml_files(folder: Path, skipped: list) -> list[tuple[str, os.stat_result]]:
    """(relative path, lstat) of the regular ``*.xml`` files below ``folder``, sorted.

    Symlinked folders are not descended; XML names that are symlinks or not regular
    files, and folders that cannot be listed, go to ``skipped`` as (path, reason).
    """
    found = []

    def unreadable(error: OSError) -> None:
        rel = os.path.relpath(error.filename, folder)
        skipped.append((rel, f"unreadable folder: {error.strerror}"))

    for top, dirs, files in os.walk(folder, onerror=unreadable):
        rel = os.path.relpath(top, folder)
        prefix = "" if rel == "." else f"{rel}/"
        for name in dirs:
            if os.path.islink(os.path.join(top, name)):
                skipped.append((prefix + name, f"{SYMLINK_NOT_FOLLOWED} (a folder)"))
        dirs.sort()
        for name in files:
            if not name.lower().endswith(".xml"):
                continue
            try:
                stat = os.lstat(os.path.join(top, name))
            except OSError as error:
                skipped.append((prefix + name, f"unreadable: {error.strerror}"))
                continue
            if stat_module.S_ISLNK(stat.st_mode):
                skipped.append((prefix + name, SYMLINK_NOT_FOLLOWED))
            elif not stat_module.S_ISREG(stat.st_mode):
                skipped.append((prefix + name, not_regular_reason(stat.st_mode)))
            else:
                found.append((prefix + name, stat))
    found.sort()
    return found


def _folder_fingerprint(files: list[tuple[str, os.stat_result]]) -> str:
    """Changes whenever an XML is added, removed, renamed, resized or rewritten."""
    total = sum(stat.st_size for _, stat in files)
    newest = max((stat.st_mtime_ns for _, stat in files), default=0)
    names = [name for name, _ in files]
    listing = hashlib.sha256("\n".join(names).encode("utf-8", "surrogateescape")).hexdigest()
    return f"folder {len(names)} {total} {newest} {listing[:24]}"


def _archive_members(path: Path, max_bytes: int) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """(member name, reader) of the archive's XML files, streamed in archive order.

    tarfile alone takes an archive cut at a member boundary for a complete one, and
    its gzip reader skips the trailer's check: a truncated download would lose boxes
    without a word. So the decompressor is chosen here (these raise on a cut stream),
    the stream is read to its end, and the end-of-archive block must be there. A link
    member or one over ``max_bytes`` is a problem (its reader raises), never read.
    """
    try:
        with os.fdopen(open_regular(path)[0], "rb") as raw, contextlib.ExitStack() as stack:
            magic = raw.read(6)
            raw.seek(0)
            opener = next((o for m, o in _DECOMPRESSORS if magic.startswith(m)), None)
            stream = _CountingReader(stack.enter_context(opener(raw)) if opener else raw)
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    if not member.name.lower().endswith(".xml"):
                        continue
                    if member.issym() or member.islnk():
                        kind = "symlink" if member.issym() else "hard link"
                        yield member.name, _refuse(f"{kind} member, not read")
                    elif not member.isfile():
                        continue
                    elif member.size > max_bytes:
                        try:
                            check_size(member.size, max_bytes)
                        except OSError as error:
                            yield member.name, _refuse(str(error))
                    else:
                        data = tar.extractfile(member).read()
                        yield member.name, lambda data=data: data
                end = tar.offset
            while stream.read(1 << 20):
                pass
            if stream.count < end + tarfile.BLOCKSIZE:
                raise EOFError("no end-of-archive block: the file is truncated")
    except (tarfile.TarError, OSError, EOFError, lzma.LZMAError) as error:
        raise ValueError(f"box annotations: cannot read archive {path}: {error}") from None


def _refuse(reason: str) -> Callable[[], bytes]:
    def read() -> bytes:
        raise ValueError(reason)

    return read


_DECOMPRESSORS = ((b"\x1f\x8b", gzip.open), (b"BZh", bz2.open), (b"\xfd7zXZ\x00", lzma.open))


class _CountingReader:
    """A read-only stream that counts the bytes it delivered."""

    def __init__(self, stream):
        self.stream = stream
        self.count = 0

    def read(self, size=-1) -> bytes:
        data = self.stream.read(size)
        self.count += len(data)
        return data


def _parse_members(members) -> tuple[dict[str, RawBoxes], list[tuple[str, str]]]:
    boxes: dict[str, RawBoxes] = {}
    source_of: dict[str, str] = {}
    problems: list[tuple[str, str]] = []
    for member, read in members:
        own_stem = member.replace("\\", "/").rpartition("/")[2][: -len(".xml")]
        try:
            if not own_stem or _clean(own_stem) != own_stem:
                raise ValueError("unusable file name")
            raw = parse_voc_xml(read(), own_stem)[1]
            if own_stem in source_of:
                first = source_of[own_stem]
                raise ValueError(f"second annotation of {own_stem!r} (first: {first})")
        except (ValueError, OSError) as error:
            problems.append((_clean(member), _clean(str(error))))
            continue
        source_of[own_stem] = member
        if raw.boxes:
            boxes[own_stem] = raw
    return boxes, problems


def _clean(text: str) -> str:
    return text.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def _load_cache(path: Path, header: str):
    """The cached (boxes, problems) when ``path`` was written for ``header``, else None."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape", newline="\n") as handle:
            if handle.readline().rstrip("\n") != header:
                return None
            boxes: dict[str, RawBoxes] = {}
            problems: list[tuple[str, str]] = []
            for line in handle:
                first, _, rest = line.rstrip("\n").partition("\t")
                if first == _PROBLEM:
                    member, _, reason = rest.partition("\t")
                    problems.append((member, reason))
                else:
                    boxes[first] = decode_boxes(rest)
    except (OSError, ValueError):  # missing or damaged: parse again
        return None
    return boxes, problems


def _write_cache(path: Path, header: str, boxes: dict, problems: list) -> None:
    text = {"encoding": "utf-8", "errors": "surrogateescape", "newline": "\n"}
    with atomic_write(path, "w", **text) as handle:
        handle.write(header + "\n")
        for stem, raw in boxes.items():
            handle.write(f"{stem}\t{encode_boxes(raw.ref_width, raw.ref_height, raw.boxes)}\n")
        for member, reason in problems:
            handle.write(f"{_PROBLEM}\t{member}\t{reason}\n")


# -- Kaggle's CSVs ------------------------------------------------------------------------


def read_kaggle_boxes(csv_path) -> dict[str, RawBoxes]:
    """``LOC_{train,val}_solution.csv`` -> {image id: boxes in the image's real pixels}."""
    return read_kaggle_solution(csv_path)[1]


def read_kaggle_solution(csv_path) -> tuple[dict[str, str], dict[str, RawBoxes]]:
    """``LOC_{train,val}_solution.csv`` -> ({image id: first synset}, {image id: boxes}).

    PredictionString is ``wnid x1 y1 x2 y2`` repeated; the first synset labels the image
    (Kaggle's validation labels) and the boxes' reference is 0 x 0, the real size. Rows
    without boxes give no entry; anything malformed is a ValueError naming file and line.
    """
    synsets: dict[str, str] = {}
    boxes: dict[str, RawBoxes] = {}
    with open_source(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or [cell.strip() for cell in header] != ["ImageId", "PredictionString"]:
            raise ValueError(f"{csv_path}:1: header must be ImageId,PredictionString")
        for row in reader:
            line = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != 2:
                raise ValueError(f"{csv_path}:{line}: expected 2 fields, got {len(row)}")
            image_id, tokens = row[0].strip(), row[1].split()
            if not image_id or _clean(image_id) != image_id or " " in image_id:
                raise ValueError(f"{csv_path}:{line}: bad ImageId {row[0]!r}")
            if not tokens:
                continue
            if len(tokens) % 5:
                raise ValueError(
                    f"{csv_path}:{line}: PredictionString is not groups of 'wnid x1 y1 x2 y2'"
                )
            if image_id in boxes:
                raise ValueError(f"{csv_path}:{line}: ImageId {image_id} appears twice")
            try:
                values = [_parse_number(t) for i, t in enumerate(tokens) if i % 5]
            except ValueError as error:
                raise ValueError(f"{csv_path}:{line}: {error}") from None
            box_list = tuple(tuple(values[i : i + 4]) for i in range(0, len(values), 4))
            boxes[image_id] = RawBoxes(0, 0, box_list)
            synsets[image_id] = tokens[0]
    return synsets, boxes


# -- normalizing ----------------------------------------------------------------------


def normalize_boxes(raw: RawBoxes, real_width: int, real_height: int) -> list[Box]:
    """Raw pixels -> (xmin, ymin, xmax, ymax) in [0, 1] of the stored pixel array.

    A reference of 0 x 0 means the real size. Inverted corners are swapped, the box
    is clamped to the image, and one with no area left is dropped.
    """
    ref_width, ref_height = raw.ref_width, raw.ref_height
    if not (ref_width > 0 and ref_height > 0):
        ref_width, ref_height = real_width, real_height
    if not (ref_width > 0 and ref_height > 0):
        raise ValueError(f"cannot normalize boxes: image size {real_width} x {real_height}")
    out = []
    for x1, y1, x2, y2 in raw.boxes:
        box = _clamped(x1 / ref_width, y1 / ref_height, x2 / ref_width, y2 / ref_height)
        if box is not None:
            out.append(box)
    return out


def _clamped(x1, y1, x2, y2, lo_x=0.0, lo_y=0.0, hi_x=1.0, hi_y=1.0) -> Box | None:
    """Corners sorted and clamped to the window; None when no area is left."""
    xmin, xmax = sorted((float(x1), float(x2)))
    ymin, ymax = sorted((float(y1), float(y2)))
    xmin, xmax = min(max(xmin, lo_x), hi_x), min(max(xmax, lo_x), hi_x)
    ymin, ymax = min(max(ymin, lo_y), hi_y), min(max(ymax, lo_y), hi_y)
    if xmax <= xmin or ymax <= ymin:
        return None
    return xmin, ymin, xmax, ymax


# -- following the resize -------------------------------------------------------------


@dataclass(frozen=True)
class BoxGeometry:
    """How the resize stage cut one output image from its source.

    The fields are the meta TSV's columns of the same names (imgprep.files.tables.META_COLUMNS):
    the stored source size (before EXIF orientation), the orientation applied, the
    region of the *oriented* source used (float pixels), where the content sits on the
    canvas, and the canvas (output) size. Build one with keywords, ``from_meta`` (a TSV
    row as a mapping; extra columns ignored) or ``from_resized`` (a ResizedImage).
    """

    source_width: int
    source_height: int
    orientation: int
    crop_x0: float
    crop_y0: float
    crop_x1: float
    crop_y1: float
    pad_left: int
    pad_top: int
    content_width: int
    content_height: int
    width: int
    height: int

    def __post_init__(self):
        for field in fields(self):
            value = getattr(self, field.name)
            convert = float if field.name.startswith("crop_") else int
            try:
                number = convert(value)
            except (TypeError, ValueError):
                raise ValueError(f"geometry {field.name}: not a number: {value!r}") from None
            if convert is float and not math.isfinite(number):
                raise ValueError(f"geometry {field.name}: not finite: {value!r}")
            if convert is int and number != float(value):
                raise ValueError(f"geometry {field.name}: not an integer: {value!r}")
            object.__setattr__(self, field.name, number)
        if not 1 <= self.orientation <= 8:
            raise ValueError(f"geometry orientation: {self.orientation} is not 1..8")
        sizes = ("source_width", "source_height", "content_width", "content_height")
        for name in (*sizes, "width", "height"):
            if getattr(self, name) <= 0:
                raise ValueError(f"geometry {name}: must be positive, got {getattr(self, name)}")
        if self.crop_x1 <= self.crop_x0 or self.crop_y1 <= self.crop_y0:
            raise ValueError("geometry crop: an empty region")

    @classmethod
    def from_meta(cls, row: Mapping) -> BoxGeometry:
        """From a meta TSV row (strings or numbers); other columns are ignored."""
        missing = [field.name for field in fields(cls) if field.name not in row]
        if missing:
            raise ValueError(f"geometry: the row lacks {', '.join(missing)}")
        values = {}
        for field in fields(cls):
            value = row[field.name]
            try:
                values[field.name] = _parse_number(value) if isinstance(value, str) else value
            except ValueError as error:
                raise ValueError(f"geometry {field.name}: {error}") from None
        return cls(**values)

    @classmethod
    def from_resized(cls, image) -> BoxGeometry:
        """From resize_image's result (an imgprep.kernels.resize.ResizedImage)."""
        left, top, content_width, content_height = image.pad
        return cls(
            image.source_width,
            image.source_height,
            image.orientation,
            *image.crop,
            left,
            top,
            content_width,
            content_height,
            image.width,
            image.height,
        )


def transform_boxes(boxes: Iterable, geometry: BoxGeometry | Mapping) -> list[Box]:
    """Boxes normalized to the stored source -> normalized to the output canvas.

    ``boxes`` are (xmin, ymin, xmax, ymax) in [0, 1] of the source's stored pixel
    array (normalize_boxes' output), which ignores EXIF orientation as ImageNet's
    annotation tools did. ``geometry`` is a BoxGeometry or a meta TSV row. Each box
    is oriented like the pixels, cut by the crop, scaled to the content, moved by
    the padding and clipped to the content; boxes left without area are dropped.
    """
    if not isinstance(geometry, BoxGeometry):
        geometry = BoxGeometry.from_meta(geometry)
    g = geometry
    sx = g.content_width / (g.crop_x1 - g.crop_x0)
    sy = g.content_height / (g.crop_y1 - g.crop_y0)
    out = []
    for box in boxes:
        x1, y1, x2, y2 = (float(v) for v in box)
        x1, y1, x2, y2 = _orient_box(
            x1 * g.source_width,
            y1 * g.source_height,
            x2 * g.source_width,
            y2 * g.source_height,
            g.source_width,
            g.source_height,
            g.orientation,
        )
        clipped = _clamped(
            g.pad_left + (x1 - g.crop_x0) * sx,
            g.pad_top + (y1 - g.crop_y0) * sy,
            g.pad_left + (x2 - g.crop_x0) * sx,
            g.pad_top + (y2 - g.crop_y0) * sy,
            g.pad_left,
            g.pad_top,
            g.pad_left + g.content_width,
            g.pad_top + g.content_height,
        )
        if clipped is None:
            continue
        normalized = _clamped(
            clipped[0] / g.width,
            clipped[1] / g.height,
            clipped[2] / g.width,
            clipped[3] / g.height,
        )
        if normalized is not None:
            out.append(normalized)
    return out


def _orient_box(x1, y1, x2, y2, width, height, orientation):
    """A box in stored pixels -> in oriented pixels, as imgprep.kernels.decode.orient moves pixels.

    Same steps in the same order: transpose (5..8), then mirror the columns (2, 3, 6,
    7), then the rows (3, 4, 7, 8), each on the already transposed plane.
    """
    if orientation >= 5:
        x1, y1, x2, y2 = y1, x1, y2, x2
        width, height = height, width
    if orientation in (2, 3, 6, 7):
        x1, x2 = width - x2, width - x1
    if orientation in (3, 4, 7, 8):
        y1, y2 = height - y2, height - y1
    return x1, y1, x2, y2
