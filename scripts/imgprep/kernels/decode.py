"""Decoding: encoded bytes to oriented 8-bit pixels, and the file's own description.

- JPEGs decode through libjpeg-turbo (simplejpeg), at a DCT-reduced scale M/8
  (geometry.dct_eighths: 1/2, 1/4, 1/8, or any M/8 with ``resize.fast_decode:
  eighths``) when the crop still has at least the output's pixels at that scale.
  Other formats, and JPEGs simplejpeg refuses (CMYK, oddities), go through Pillow.
- The few JPEG header fields needed (size, components, EXIF orientation, ICC chunks)
  are read directly, ~5x cheaper than Pillow's open.
- A file that ends early is rejected, never padded with gray.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import numpy as np
import simplejpeg
from PIL import Image, ImageFile, UnidentifiedImageError

from imgprep.kernels.colour import image_to_srgb

# Non-JPEG sources: box-reduce by whole factors first while the remaining factor is
# still >= this (Pillow's reducing_gap; 3 is indistinguishable from full resampling)
REDUCING_GAP = 3.0


def is_int(value) -> bool:
    """An integer, numpy's included, but not a bool (``True`` is no size)."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


class RejectedImage(Exception):
    """Input that is not a usable image; ``reason`` says why in a few words."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Source:
    """What the file says about itself before any pixel is decoded."""

    format: str
    mode: str
    width: int  # as stored
    height: int
    orientation: int
    baseline: bool  # a sequential (non-progressive) 8-bit JPEG
    icc: bytes | None = None  # the embedded ICC profile (b"": one that is incomplete)


def open_image(data: bytes) -> Image.Image:
    """Open with Pillow (headers only, and for non-JPEGs the pixels too)."""
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise RejectedImage("not an image: cannot identify format") from None
    except OSError as error:
        raise RejectedImage(f"truncated or corrupt header: {error}") from None
    if image.format not in ("JPEG", "MPO"):
        _load(image)  # some formats only reveal their EXIF block once decoded
    return image


# -- JPEG headers -----------------------------------------------------------------------
#
# Reading the few header fields needed here directly is ~5x cheaper than Pillow's
# open, which matters at a thousand images per second. Anything unusual returns
# None and Pillow takes over.

_SOF_BASELINE, _SOF_EXTENDED, _SOF_PROGRESSIVE = 0xC0, 0xC1, 0xC2


def probe_jpeg(data: bytes) -> Source | None:
    """Header of a plain 8-bit Huffman JPEG with 1 or 3 components, else None."""
    if data[:3] != b"\xff\xd8\xff":
        return None
    size = len(data)
    pos = 2
    orientation = 1
    frame = None
    icc_chunks: dict[int, bytes] = {}
    icc_count = 0
    while True:
        if pos + 4 > size:
            raise RejectedImage("truncated JPEG: the file ends inside its header")
        if data[pos] != 0xFF:
            return None  # stray bytes between segments: libjpeg may cope, Pillow decides
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD9:  # markers without a length
            return None  # never seen before a scan in a sane file: Pillow decides
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if length < 2:
            return None
        if pos + 2 + length > size:
            raise RejectedImage("truncated JPEG: the file ends inside its header")
        if marker == 0xDA:  # start of scan: the header is over
            break
        body = data[pos + 4 : pos + 2 + length]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if marker not in (_SOF_BASELINE, _SOF_EXTENDED, _SOF_PROGRESSIVE) or len(body) < 6:
                return None  # lossless, arithmetic, hierarchical: let Pillow judge
            frame = (marker, body[0], int.from_bytes(body[3:5], "big"))
            frame += (int.from_bytes(body[1:3], "big"), body[5])
        elif marker == 0xE1 and body[:6] == b"Exif\x00\x00":
            orientation = _exif_orientation(body[6:])
        elif marker == 0xE2 and body[:4] == b"MPF\x00":
            return None  # multi-picture (MPO): Pillow knows the details
        elif marker == 0xE2 and body[:12] == b"ICC_PROFILE\x00" and len(body) >= 14:
            # the profile in numbered chunks (64 KB segments), 1..count
            icc_chunks[body[12]] = body[14:]
            icc_count = body[13]
        pos += 2 + length
    if frame is None:
        return None
    marker, precision, width, height, components = frame
    if precision != 8 or components not in (1, 3):
        return None
    limit = Image.MAX_IMAGE_PIXELS
    if limit and width * height > limit:
        raise RejectedImage(
            f"decompression bomb: {width}x{height} pixels is more than the limit {limit}"
        )
    mode = "L" if components == 1 else "RGB"
    icc = None
    if icc_chunks:
        complete = sorted(icc_chunks) == list(range(1, icc_count + 1))
        icc = b"".join(icc_chunks[i] for i in sorted(icc_chunks)) if complete else b""
    baseline = marker != _SOF_PROGRESSIVE
    return Source("JPEG", mode, width, height, orientation, baseline, icc)


# a marker inside entropy-coded data: 0xFF not followed by a stuffed 0x00, a restart
# marker or another fill byte
_MARKER_AFTER_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def jpeg_end(data: bytes) -> int | None:
    """Offset just past the end-of-image marker of the JPEG at the start of ``data``
    (less than len(data) when something is appended), or None if it has none."""
    if data[:2] != b"\xff\xd8":
        return None
    pos, size = 2, len(data)
    while pos + 2 <= size:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:
            return pos + 2
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # no length
            pos += 2
            continue
        if pos + 4 > size:
            return None
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if length < 2:
            return None
        pos += 2 + length
        if marker == 0xDA:  # the scan's entropy-coded data runs to the next marker
            found = _MARKER_AFTER_SCAN.search(data, pos)
            if found is None:
                return None
            pos = found.start()
    return None


def _exif_orientation(tiff: bytes) -> int:
    """Orientation tag (0x0112) of IFD0 in a TIFF-structured EXIF block; 1 if none."""
    order = {b"II": "little", b"MM": "big"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return 1
    ifd = int.from_bytes(tiff[4:8], order)
    if ifd + 2 > len(tiff):
        return 1
    for entry in range(ifd + 2, ifd + 2 + 12 * int.from_bytes(tiff[ifd : ifd + 2], order), 12):
        if entry + 12 > len(tiff):
            break
        if int.from_bytes(tiff[entry : entry + 2], order) == 0x0112:
            kind = int.from_bytes(tiff[entry + 2 : entry + 4], order)
            width = {3: 2, 4: 4}.get(kind)
            if width is None:
                return 1
            value = int.from_bytes(tiff[entry + 8 : entry + 8 + width], order)
            return value if 1 <= value <= 8 else 1
    return 1


def image_orientation(image: Image.Image) -> int:
    """EXIF orientation 1..8 (anything unreadable or out of range counts as 1)."""
    if image.format in ("JPEG", "MPO") and "exif" not in image.info:
        return 1
    try:
        value = image.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block is no reason to lose the picture
        return 1
    return value if is_int(value) and 1 <= value <= 8 else 1


def orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation as a numpy view (no copy)."""
    if orientation >= 5:
        pixels = pixels.transpose(1, 0, 2)
    if orientation in (2, 3, 6, 7):
        pixels = pixels[:, ::-1]
    if orientation in (3, 4, 7, 8):
        pixels = pixels[::-1]
    return pixels


def jpeg_decodes(data: bytes) -> bool:
    """Whether libjpeg-turbo decodes the whole file without a warning (truncation)."""
    try:
        header = simplejpeg.decode_jpeg_header(data)
        simplejpeg.decode_jpeg(
            data,
            colorspace="GRAY" if header[2] == "Gray" else "RGB",
            min_width=1,
            min_height=1,
            strict=True,
        )
    except ValueError as error:
        if "Premature end" in str(error):
            raise RejectedImage(f"truncated JPEG: {error}") from None
        return False
    return True


def decode_jpeg(data: bytes, channels: int, reduce: int, stored_w: int, stored_h: int):
    """Decode with libjpeg-turbo at 1/reduce scale (1, 2, 4 or 8); None when Pillow
    should try instead."""
    return decode_jpeg_eighths(data, channels, 8 // reduce, stored_w, stored_h)


def decode_jpeg_eighths(data: bytes, channels: int, eighths: int, stored_w: int, stored_h: int):
    """Decode with libjpeg-turbo at ``eighths``/8 scale (1..8, 8: in full); None when
    Pillow should try instead.

    simplejpeg takes the smallest of libjpeg-turbo's factors (tjGetScalingFactors: every
    M/8) whose ceil(side * M / 8) reaches min_width and min_height, so asking for exactly
    the M/8 size gets that M as long as the size grows with M (a side of >= 8 px, which
    geometry.dct_eighths ensures); the shape is checked all the same.
    """
    if eighths == 8:
        want_w, want_h = stored_w, stored_h
    else:
        want_w, want_h = -(-stored_w * eighths // 8), -(-stored_h * eighths // 8)
    try:
        pixels = simplejpeg.decode_jpeg(
            data,
            colorspace="GRAY" if channels == 1 else "RGB",
            min_width=want_w if eighths < 8 else 0,
            min_height=want_h if eighths < 8 else 0,
            strict=True,
        )
    except ValueError as error:
        if "Premature end" in str(error):
            raise RejectedImage(f"truncated JPEG: {error}") from None
        return None  # e.g. a libjpeg warning Pillow tolerates: let it judge
    if pixels.shape[:2] != (want_h, want_w):
        return None
    return pixels.reshape(want_h, want_w, channels)


def decoded_as(eighths: int, channels: int, mode: str) -> str:
    """pixels_sha256's tag of a DCT-scaled or luma-only decode ("" for a full one): "1/2 3"
    for the powers of two (as before M/8 scales existed), "3/8 3" for the others."""
    if (eighths, channels) == (8, len(mode)):
        return ""
    scale = f"1/{8 // eighths}" if 8 % eighths == 0 else f"{eighths}/8"
    return f"{scale} {channels}"


def decode_pillow(
    image: Image.Image, params, geometry, orientation: int, reduce: int, to_srgb=None
):
    """Decode anything Pillow reads; return oriented (h, w, 1|3) uint8 and its (x, y) scale.

    ``to_srgb``: the embedded profile's transform, applied before alpha meets ``fill``
    (which is an sRGB colour)."""
    stored_w, stored_h = image.size
    fmt = image.format
    scale = 1.0
    if reduce > 1:
        image.draft(image.mode, (stored_w // reduce, stored_h // reduce))
        if image.size == (-(-stored_w // reduce), -(-stored_h // reduce)):
            scale = 1.0 / reduce
        elif image.size != (stored_w, stored_h):
            raise RejectedImage(f"decode error: unexpected draft size {image.size}")
    _load(image)
    if to_srgb is not None:
        image = image_to_srgb(image, to_srgb)
    image = _to_rgb_or_l(image, params.fill)
    if orientation != 1:
        image = image.transpose(_TRANSPOSE[orientation])
    scale_xy = (scale, scale)
    if fmt not in ("JPEG", "MPO") and not geometry.identity:
        x0, y0, x1, y1 = geometry.box
        fx = int((x1 - x0) / geometry.content[0] / REDUCING_GAP) or 1
        fy = int((y1 - y0) / geometry.content[1] / REDUCING_GAP) or 1
        if fx > 1 or fy > 1:
            # reduce() averages whole fx x fy blocks: pixel i covers [i*fx, (i+1)*fx)
            image = image.reduce((fx, fy))
            scale_xy = (1.0 / fx, 1.0 / fy)
    pixels = np.asarray(image)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return pixels, scale_xy


def _load(image: Image.Image) -> None:
    """Decode the pixels; a file that ends early is rejected, never padded.

    Pillow's LOAD_TRUNCATED_IMAGES (a process-wide switch other code may have set)
    would fill a cut-off file with gray and call it fine: it is off while we load.
    """
    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        image.load()
    except OSError as error:
        kind = image.format or "image"
        if "truncated" in str(error).lower():
            raise RejectedImage(f"truncated {kind}: {error}") from None
        raise RejectedImage(f"decode error: {type(error).__name__}: {error}") from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved


_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _to_rgb_or_l(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    """Bring any Pillow mode to 8-bit RGB or L; alpha is composited over ``fill``."""
    mode = image.mode
    if mode == "RGB" or mode == "L":
        return image
    if mode == "1":
        return image.convert("L")
    if mode.startswith("I;16") or mode == "I":
        # 16-bit: keep the high byte (Pillow's convert("L") would clip at 255 instead)
        wide = np.asarray(image).astype(np.int64)
        return Image.fromarray((np.clip(wide, 0, 65535) >> 8).astype(np.uint8), "L")
    if mode == "F":
        return image.convert("L")
    if mode == "P":
        palette = image.palette
        has_alpha = "transparency" in image.info or (palette is not None and palette.mode == "RGBA")
        image = image.convert("RGBA" if has_alpha else "RGB")
        if not has_alpha:
            return image
    elif mode in ("LA", "La", "PA", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGBA", image.size, (*fill, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    try:
        return image.convert("RGB")
    except ValueError as error:
        raise RejectedImage(f"unsupported mode {mode}: {error}") from None
