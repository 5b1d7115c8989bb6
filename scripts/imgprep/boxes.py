"""Bounding boxes: carry them in the index, follow the image's resize.

Records store boxes normalized to [0, 1] in the stored (resized) image, as the TF
models ImageNet records do. Getting there takes three steps at three times:

1. Indexing reads the raw annotations (``imgprep.sources.voc_boxes`` for PASCAL-VOC
   XMLs, ``imgprep.sources.kaggle`` for Kaggle's CSVs) and writes each image's boxes, in
   pixels, into one column of the index (``encode_boxes``).
2. Once the image is decoded its real size is known: ``normalize_boxes`` turns the
   pixels into fractions of the stored pixel array (Kaggle's boxes need that size).
3. The resize stage records, per image, how the output was cut from the source;
   ``transform_boxes`` sends the boxes through the same orientation, crop, scale and
   padding.

Coordinates are positions on a continuous plane, pixel i spanning [i, i + 1): a box
(x1, y1, x2, y2) is normalized as x1 / width etc., without the +-1 some VOC tools add
(ImageNet's coordinates are divided by the size as they are in the TF models scripts).

Only the standard library: the index imports this module at parse time.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields

__all__ = [
    "BoxGeometry",
    "RawBoxes",
    "decode_boxes",
    "encode_boxes",
    "normalize_boxes",
    "parse_number",
    "transform_boxes",
]

Number = int | float
Box = tuple[float, float, float, float]

_INT = re.compile(r"[+-]?\d+")


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
    values = [parse_number(token) for token in tokens]
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


def parse_number(token: str) -> Number:
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
                values[field.name] = parse_number(value) if isinstance(value, str) else value
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
