"""One image, bytes in, JPEG bytes out: decode, orient, convert, resize, encode.

This runs once per image of a dataset, so it is built for speed without giving up
quality or reproducibility (benchmarks/bench_resize.py measures it):

- JPEGs decode through libjpeg-turbo (simplejpeg), at a DCT-reduced scale (1/2,
  1/4, 1/8) when the crop still has at least the output's pixels at that scale.
  Other formats, and JPEGs simplejpeg refuses (CMYK, oddities), go through Pillow.
- An embedded RGB ICC profile other than sRGB (Adobe RGB, Display P3, ProPhoto…) is
  applied with littleCMS, so the stored numbers mean the same colours in sRGB, the
  space every consumer assumes; images without one (or with sRGB) are untouched.
- Resampling uses Pillow's filters (same kernels, same pixel-centre convention)
  but runs as banded matrix products in BLAS instead of Pillow's scalar loops.
- The encoder's RGB->YCbCr conversion and chroma subsampling are folded into the
  second matrix product, so libjpeg-turbo receives finished Y/Cb/Cr planes.
- Weights are multiples of 2**-bits, small enough that every float32 product and
  sum is exact: results do not depend on the BLAS kernel, CPU or summation order,
  so the same input gives the same bytes on every machine.
"""

from __future__ import annotations

import functools
import io
import math
import os
import re
import threading
import warnings
from dataclasses import dataclass

# One BLAS thread per process (only effective before numpy is first imported):
# parallelism comes from resize_shard's process pool, not from inside one image.
# Assigned, not defaulted: Snakemake sets it to the job's threads, which would give
# every pool worker that many BLAS threads.
os.environ["OPENBLAS_NUM_THREADS"] = "1"

import numpy as np  # noqa: E402
import simplejpeg  # noqa: E402
from PIL import Image, ImageCms, ImageFile, UnidentifiedImageError  # noqa: E402

__all__ = [
    "FILTERS",
    "GRAY_MATRICES",
    "ICC_MODES",
    "MODES",
    "SUBSAMPLINGS",
    "RejectedImage",
    "ResizeParams",
    "ResizedImage",
    "resize_image",
]

MODES = ("stretch", "center-crop", "shorter-side", "pad", "keep")
FILTERS = ("nearest", "box", "bilinear", "hamming", "bicubic", "lanczos")
COLORSPACES = ("rgb", "gray")
# convert: apply an embedded non-sRGB RGB profile (to sRGB); ignore: use the numbers as
# stored, dropping the profile (what imgprep did before, and most converters do)
ICC_MODES = ("convert", "ignore")
# luma weights in 1/65536: they sum to 65536 so white stays exactly white; rec601 is
# what Pillow's convert("L") and JPEG's own Y use
GRAY_MATRICES = {"rec601": (19595, 38470, 7471), "rec709": (13933, 46871, 4732)}
# chroma plane size divisors (horizontal, vertical) of the stored JPEG
SUBSAMPLINGS = {"4:4:4": (1, 1), "4:2:2": (2, 1), "4:2:0": (2, 2)}
_SIMPLEJPEG_SUBSAMPLING = {"4:4:4": "444", "4:2:2": "422", "4:2:0": "420"}
# JFIF RGB -> YCbCr (Cb and Cr get +128 afterwards)
_YCBCR = (
    (0.299, 0.587, 0.114),
    (-0.168736, -0.331264, 0.5),
    (0.5, -0.418688, -0.081312),
)
_JPEG_MAX_SIDE = 65500  # libjpeg's limit on either side
# Non-JPEG sources: box-reduce by whole factors first while the remaining factor is
# still >= this (Pillow's reducing_gap; 3 is indistinguishable from full resampling)
REDUCING_GAP = 3.0
_CONFIG_KEYS = (
    "mode",
    "size",
    "upscale",
    "filter",
    "colorspace",
    "gray_matrix",
    "quality",
    "subsampling",
    "fill",
    "fast_decode",
    "icc",
)


# -- parameters and results -----------------------------------------------------------


@dataclass(frozen=True)
class ResizeParams:
    """How every image of a dataset is resized: the config's ``resize:`` mapping."""

    mode: str = "center-crop"
    width: int = 256
    height: int = 256
    upscale: bool = False
    filter: str = "bicubic"
    colorspace: str = "rgb"
    gray_matrix: str = "rec601"
    quality: int = 90
    subsampling: str = "4:2:0"
    fill: tuple[int, int, int] = (0, 0, 0)
    fast_decode: bool = True
    icc: str = "convert"

    def __post_init__(self):
        for key, choices in (
            ("mode", MODES),
            ("icc", ICC_MODES),
            ("filter", FILTERS),
            ("colorspace", COLORSPACES),
            ("gray_matrix", GRAY_MATRICES),
            ("subsampling", SUBSAMPLINGS),
        ):
            value = getattr(self, key)
            if not isinstance(value, str) or value not in choices:
                raise ValueError(f"resize.{key}: {value!r} is not one of {', '.join(choices)}")
        for key in ("width", "height"):
            value = getattr(self, key)
            if not _is_int(value) or not 1 <= value <= _JPEG_MAX_SIDE:
                raise ValueError(
                    f"resize.size: {key} must be an integer 1..{_JPEG_MAX_SIDE}, got {value!r}"
                )
            object.__setattr__(self, key, int(value))
        if not _is_int(self.quality) or not 1 <= self.quality <= 100:
            raise ValueError(f"resize.quality: must be an integer 1..100, got {self.quality!r}")
        for key in ("upscale", "fast_decode"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"resize.{key}: must be true or false, got {getattr(self, key)!r}")
        fill = self.fill
        if _is_int(fill):
            fill = (fill, fill, fill)
        if (
            not isinstance(fill, list | tuple)
            or len(fill) != 3
            or not all(_is_int(v) and 0 <= v <= 255 for v in fill)
        ):
            raise ValueError(f"resize.fill: must be [r, g, b] with values 0..255, got {fill!r}")
        object.__setattr__(self, "fill", tuple(int(v) for v in fill))

    @classmethod
    def from_config(cls, cfg: dict | None) -> ResizeParams:
        """Build from the config's ``resize:`` mapping (missing keys take the defaults)."""
        cfg = dict(cfg or {})
        for key in cfg:
            if key not in _CONFIG_KEYS:
                raise ValueError(f"resize.{key}: unknown key (known: {', '.join(_CONFIG_KEYS)})")
        kwargs = {key: cfg[key] for key in _CONFIG_KEYS if key in cfg and key != "size"}
        if "size" in cfg:
            size = cfg["size"]
            if _is_int(size):
                kwargs["width"] = kwargs["height"] = size
            elif isinstance(size, list | tuple) and len(size) == 2 and all(map(_is_int, size)):
                kwargs["width"], kwargs["height"] = size
            else:
                raise ValueError(
                    f"resize.size: must be an integer or [width, height], got {size!r}"
                )
        if "fill" in kwargs and isinstance(kwargs["fill"], list):
            kwargs["fill"] = tuple(kwargs["fill"])
        return cls(**kwargs)


def _is_int(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


class RejectedImage(Exception):
    """Input that is not a usable image; ``reason`` says why in a few words."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ResizedImage:
    """The stored JPEG and what a dataset's metadata says about it."""

    data: bytes
    width: int
    height: int
    channels: int
    colorspace: str  # "RGB" or "Grayscale"
    source_format: str  # by content: "JPEG", "PNG", "GIF", ...
    source_mode: str  # Pillow mode as decoded: "RGB", "CMYK", "L", "P", "I;16", ...
    source_width: int  # as stored, before EXIF orientation
    source_height: int
    orientation: int  # EXIF orientation applied (1 = none)
    crop: tuple[float, float, float, float]  # region of the oriented source used
    pad: tuple[int, int, int, int]  # (left, top, content width, content height) on the canvas
    kept: bool  # the original bytes were stored unchanged
    # embedded ICC profile: none, srgb (sRGB or equivalent: used as is), converted (to
    # sRGB), ignored (resize.icc: ignore), not-applied (not an RGB profile: CMYK, gray),
    # unusable (a profile littleCMS cannot read)
    icc: str = "none"


# -- entry point ------------------------------------------------------------------------


def resize_image(data: bytes, params: ResizeParams) -> ResizedImage:
    """Resize one encoded image; raise RejectedImage (and nothing else) for bad input.

    Output size by mode, for a target of width x height (oriented source W x H):

    - stretch: width x height; without upscale each side is at most the source's.
    - center-crop: the largest centred crop with the target's aspect, scaled to
      width x height; without upscale a smaller crop is stored unscaled.
    - shorter-side: the shorter side becomes min(width, height), aspect kept;
      without upscale a smaller image is stored at its own size.
    - pad: fitted inside width x height, aspect kept, centred on a width x height
      canvas of ``fill``; without upscale a smaller image is centred unscaled.
    - keep: the original bytes when they already are a clean baseline JPEG in the
      target colorspace without rotation (no data after its end marker, no colour
      profile to apply), otherwise a re-encode at W x H.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return _resize(data, params)
    except RejectedImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise RejectedImage(f"decompression bomb: {error}") from None
    except Exception as error:  # one bad image must never stop a shard
        raise RejectedImage(f"decode error: {type(error).__name__}: {error}") from None


@dataclass(frozen=True)
class _Source:
    """What the file says about itself before any pixel is decoded."""

    format: str
    mode: str
    width: int  # as stored
    height: int
    orientation: int
    baseline: bool  # a sequential (non-progressive) 8-bit JPEG
    icc: bytes | None = None  # the embedded ICC profile (b"": one that is incomplete)


def _resize(data: bytes, params: ResizeParams) -> ResizedImage:
    if not data:
        raise RejectedImage("empty file")
    image = None
    source = _probe_jpeg(data)
    if source is None:  # not a plain JPEG: Pillow identifies it
        image = _open(data)
        source = _Source(
            image.format or "unknown",
            image.mode,
            *image.size,
            _orientation(image),
            image.format == "JPEG" and not image.info.get("progressive"),
            image.info.get("icc_profile"),
        )
    if source.width <= 0 or source.height <= 0:
        raise RejectedImage(f"zero-size image: {source.width}x{source.height}")
    if source.orientation >= 5:
        geometry = _Geometry.plan(source.height, source.width, params)
    else:
        geometry = _Geometry.plan(source.width, source.height, params)
    if max(geometry.canvas) > _JPEG_MAX_SIDE:
        width, height = geometry.canvas
        raise RejectedImage(f"output {width}x{height} exceeds JPEG's {_JPEG_MAX_SIDE} px limit")
    gray = params.colorspace == "gray"
    icc, to_srgb = "none", None
    if source.icc is not None:
        icc, to_srgb = ("ignored", None) if params.icc == "ignore" else _srgb_transform(source.icc)

    def result(jpeg: bytes, kept: bool = False) -> ResizedImage:
        return ResizedImage(
            data=jpeg,
            width=geometry.canvas[0],
            height=geometry.canvas[1],
            channels=1 if gray else 3,
            colorspace="Grayscale" if gray else "RGB",
            source_format=source.format,
            source_mode=source.mode,
            source_width=source.width,
            source_height=source.height,
            orientation=source.orientation,
            crop=geometry.box,
            pad=(*geometry.offset, *geometry.content),
            kept=kept,
            icc=icc,
        )

    if (
        params.mode == "keep"
        and source.format == "JPEG"
        and source.baseline
        and source.mode == ("L" if gray else "RGB")
        and source.orientation == 1
        and to_srgb is None
        and _jpeg_end(data) == len(data)
        and _jpeg_decodes(data)
    ):
        return result(data, kept=True)

    is_jpeg = source.format in ("JPEG", "MPO")
    reduce = 1
    if params.fast_decode and is_jpeg and not geometry.identity:
        reduce = _dct_reduction(geometry, source.width, source.height)
    pixels = None
    if is_jpeg and source.mode in ("RGB", "L"):
        luma_only = gray and params.gray_matrix == "rec601" and to_srgb is None
        channels = 1 if source.mode == "L" or luma_only else 3
        pixels = _decode_jpeg(data, channels, reduce, source.width, source.height)
    if pixels is None:
        if image is None:
            image = _open(data)
        pixels, scale = _decode_pillow(image, params, geometry, source.orientation, reduce, to_srgb)
    else:
        if to_srgb is not None and pixels.shape[2] == 3:
            pixels = _pixels_to_srgb(pixels, to_srgb)
        pixels = _orient(pixels, source.orientation)
        scale = (1.0 / reduce, 1.0 / reduce)
    return result(_render(pixels, scale, geometry, params))


def _open(data: bytes) -> Image.Image:
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


def _probe_jpeg(data: bytes) -> _Source | None:
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
    return _Source("JPEG", mode, width, height, orientation, baseline, icc)


# a marker inside entropy-coded data: 0xFF not followed by a stuffed 0x00, a restart
# marker or another fill byte
_MARKER_AFTER_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def _jpeg_end(data: bytes) -> int | None:
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


# -- colour profiles ----------------------------------------------------------------------

_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
# 17 levels per channel: a profile that moves none of these by more than 1 is sRGB
_PROBE = np.stack(
    np.meshgrid(*[np.linspace(0, 255, 17).round().astype(np.uint8)] * 3, indexing="ij"), -1
).reshape(1, -1, 3)


@functools.lru_cache(maxsize=32)
def _srgb_transform(icc: bytes):
    """(state, transform to sRGB or None) for an embedded profile; see ResizedImage.icc.

    Cached: a dataset's profiles are a handful (Adobe RGB, a camera's), shared by many
    images.
    """
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        space = profile.profile.xcolor_space.strip()
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return "unusable", None
    if space != "RGB":
        return "not-applied", None
    try:
        transform = ImageCms.buildTransform(
            profile, _SRGB, "RGB", "RGB", ImageCms.Intent.RELATIVE_COLORIMETRIC
        )
        probe = np.asarray(ImageCms.applyTransform(Image.fromarray(_PROBE, "RGB"), transform))
    except (ImageCms.PyCMSError, OSError, ValueError):
        return "unusable", None
    if np.abs(probe.astype(np.int16) - _PROBE).max() <= 1:
        return "srgb", None  # sRGB by another name: the numbers stay exactly as stored
    return "converted", transform


def _pixels_to_srgb(pixels: np.ndarray, transform) -> np.ndarray:
    """(h, w, 3) uint8 in the profile's space -> the same in sRGB."""
    image = Image.fromarray(np.ascontiguousarray(pixels), "RGB")
    return np.asarray(ImageCms.applyTransform(image, transform))


def _image_to_srgb(image: Image.Image, transform) -> Image.Image:
    """Apply an RGB profile to a Pillow image; alpha stays as it is."""
    mode = image.mode
    if mode == "RGB":
        return ImageCms.applyTransform(image, transform)
    if mode in ("P", "PA", "RGBA", "RGBa"):
        rgba = image.convert("RGBA")
        converted = ImageCms.applyTransform(rgba.convert("RGB"), transform)
        converted.putalpha(rgba.getchannel("A"))
        return converted
    return image  # not RGB data (gray, 16-bit): an RGB profile does not describe it


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


# -- geometry ---------------------------------------------------------------------------


def _round(value: float) -> int:
    return int(math.floor(value + 0.5))


@dataclass(frozen=True)
class _Geometry:
    """Where the output's pixels come from, in oriented source pixels."""

    box: tuple[float, float, float, float]  # source region that is resampled
    content: tuple[int, int]  # its size in the output
    canvas: tuple[int, int]  # output size (pad: the full canvas)
    offset: tuple[int, int]  # content's top-left corner on the canvas

    @property
    def identity(self) -> bool:
        """The content is the box's pixels as they are: no resampling at all."""
        return _is_identity(self.box, self.content, (1.0, 1.0))

    @classmethod
    def plan(cls, width: int, height: int, params: ResizeParams) -> _Geometry:
        tw, th, up = params.width, params.height, params.upscale
        full = (0.0, 0.0, float(width), float(height))
        mode = params.mode
        if mode == "keep":
            return cls(full, (width, height), (width, height), (0, 0))
        if mode == "stretch":
            size = (tw, th) if up else (min(tw, width), min(th, height))
            return cls(full, size, size, (0, 0))
        if mode == "center-crop":
            if width * th > height * tw:  # wider than the target: crop the sides
                crop_w, crop_h = height * tw / th, float(height)
            else:
                crop_w, crop_h = float(width), width * th / tw
            if crop_w < tw and not up:  # too small: keep the crop's own pixels
                cw = min(width, max(1, _round(crop_w)))
                ch = min(height, max(1, _round(crop_h)))
                x0, y0 = (width - cw) // 2, (height - ch) // 2
                box = (float(x0), float(y0), float(x0 + cw), float(y0 + ch))
                return cls(box, (cw, ch), (cw, ch), (0, 0))
            x0, y0 = (width - crop_w) / 2, (height - crop_h) / 2
            return cls((x0, y0, x0 + crop_w, y0 + crop_h), (tw, th), (tw, th), (0, 0))
        if mode == "shorter-side":
            short = min(tw, th)
            factor = short / min(width, height)
            if factor >= 1 and not up:
                return cls(full, (width, height), (width, height), (0, 0))
            if width <= height:
                size = (short, max(1, _round(height * factor)))
            else:
                size = (max(1, _round(width * factor)), short)
            return cls(full, size, size, (0, 0))
        # pad
        factor = min(tw / width, th / height)
        if factor >= 1 and not up:
            size = (width, height)
        elif tw / width <= th / height:
            size = (tw, min(th, max(1, _round(height * factor))))
        else:
            size = (min(tw, max(1, _round(width * factor))), th)
        offset = ((tw - size[0]) // 2, (th - size[1]) // 2)
        return cls(full, size, (tw, th), offset)


def _is_identity(box, size, scale) -> bool:
    x0, y0, x1, y1 = box[0] * scale[0], box[1] * scale[1], box[2] * scale[0], box[3] * scale[1]
    return x0 == int(x0) and y0 == int(y0) and x1 - x0 == size[0] and y1 - y0 == size[1]


def _dct_reduction(geometry: _Geometry, stored_w: int, stored_h: int) -> int:
    """Largest JPEG DCT scale-down that still leaves the crop >= the output pixels."""
    x0, y0, x1, y1 = geometry.box
    cw, ch = geometry.content
    for reduce in (8, 4, 2):
        fits = (x1 - x0) / reduce >= cw and (y1 - y0) / reduce >= ch
        if fits and stored_w >= 8 * reduce and stored_h >= 8 * reduce:
            return reduce
    return 1


# -- decoding ---------------------------------------------------------------------------


def _orientation(image: Image.Image) -> int:
    """EXIF orientation 1..8 (anything unreadable or out of range counts as 1)."""
    if image.format in ("JPEG", "MPO") and "exif" not in image.info:
        return 1
    try:
        value = image.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block is no reason to lose the picture
        return 1
    return value if _is_int(value) and 1 <= value <= 8 else 1


def _orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation as a numpy view (no copy)."""
    if orientation >= 5:
        pixels = pixels.transpose(1, 0, 2)
    if orientation in (2, 3, 6, 7):
        pixels = pixels[:, ::-1]
    if orientation in (3, 4, 7, 8):
        pixels = pixels[::-1]
    return pixels


def _jpeg_decodes(data: bytes) -> bool:
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


def _decode_jpeg(data: bytes, channels: int, reduce: int, stored_w: int, stored_h: int):
    """Decode with libjpeg-turbo at 1/reduce scale; None when Pillow should try instead."""
    want_w, want_h = -(-stored_w // reduce), -(-stored_h // reduce)
    try:
        pixels = simplejpeg.decode_jpeg(
            data,
            colorspace="GRAY" if channels == 1 else "RGB",
            min_width=want_w if reduce > 1 else 0,
            min_height=want_h if reduce > 1 else 0,
            strict=True,
        )
    except ValueError as error:
        if "Premature end" in str(error):
            raise RejectedImage(f"truncated JPEG: {error}") from None
        return None  # e.g. a libjpeg warning Pillow tolerates: let it judge
    if pixels.shape[:2] != (want_h, want_w):
        return None
    return pixels.reshape(want_h, want_w, channels)


def _decode_pillow(
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
        image = _image_to_srgb(image, to_srgb)
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


# -- rendering: resample, convert, encode -------------------------------------------


def _render(pixels: np.ndarray, scale, geometry: _Geometry, params: ResizeParams) -> bytes:
    """Turn decoded pixels (h, w, 1|3, any strides) into the stored JPEG."""
    x0, y0, x1, y1 = geometry.box
    box = (x0 * scale[0], y0 * scale[1], x1 * scale[0], y1 * scale[1])
    if _is_identity(box, geometry.content, (1.0, 1.0)):
        region = pixels[int(box[1]) : int(box[3]), int(box[0]) : int(box[2])]
        if geometry.canvas != geometry.content:
            region = _paste_pixels(region, geometry, params)
        return _encode_pixels(region, params)
    return _encode_planes(_resample_planes(pixels, box, geometry, params), params)


def _paste_pixels(region: np.ndarray, geometry: _Geometry, params: ResizeParams) -> np.ndarray:
    """Centre unscaled pixels on the pad canvas."""
    gray = params.colorspace == "gray"
    if gray and region.shape[2] == 3:
        region = _luma_u8(region, params.gray_matrix)
    elif not gray and region.shape[2] == 1:
        region = np.repeat(region, 3, axis=2)
    fill = (_fill_luma(params),) if gray else params.fill
    tw, th = geometry.canvas
    canvas = np.empty((th, tw, len(fill)), np.uint8)
    canvas[:] = np.array([_round(v) for v in fill], np.uint8)
    left, top = geometry.offset
    h, w = region.shape[:2]
    canvas[top : top + h, left : left + w] = region
    return canvas


def _fill_luma(params: ResizeParams) -> float:
    weights = GRAY_MATRICES[params.gray_matrix]
    return sum(w * c for w, c in zip(weights, params.fill, strict=True)) / 65536


def _luma_u8(rgb: np.ndarray, matrix: str) -> np.ndarray:
    """8-bit luma of (h, w, 3) uint8 with integer arithmetic (same as Pillow's for rec601)."""
    wr, wg, wb = (np.uint32(w) for w in GRAY_MATRICES[matrix])
    acc = rgb[:, :, 0] * wr + rgb[:, :, 1] * wg + rgb[:, :, 2] * wb + np.uint32(32768)
    return (acc >> np.uint32(16)).astype(np.uint8)[:, :, None]


def _encode_pixels(pixels: np.ndarray, params: ResizeParams) -> bytes:
    """Encode (h, w, 1|3) uint8 pixels in the target colorspace."""
    if params.colorspace == "gray":
        if pixels.shape[2] == 3:
            pixels = _luma_u8(pixels, params.gray_matrix)
        return _encode_yuv([pixels[:, :, 0]], params)
    if pixels.shape[2] == 1:
        return _encode_yuv([pixels[:, :, 0]], params)
    return simplejpeg.encode_jpeg(
        np.ascontiguousarray(pixels),
        quality=params.quality,
        colorspace="RGB",
        colorsubsampling=_SIMPLEJPEG_SUBSAMPLING[params.subsampling],
    )


def _encode_planes(planes, params: ResizeParams) -> bytes:
    """Encode float Y[, Cb, Cr] planes (Cb/Cr already subsampled, without +128)."""
    luma = _plane_u8(planes[0], 0.0)
    if len(planes) == 1:
        return _encode_yuv([luma], params)
    return _encode_yuv([luma, _plane_u8(planes[1], 128.0), _plane_u8(planes[2], 128.0)], params)


def _encode_yuv(planes: list[np.ndarray], params: ResizeParams) -> bytes:
    """Encode uint8 Y[, Cb, Cr] planes; Y alone is gray, or flat chroma for an rgb target.

    libjpeg-turbo reads planes in whole MCUs (16 luma, 8 chroma samples), beyond
    the picture's edge: without padding the bytes would depend on whatever lies in
    memory there. Edge replication is also what libjpeg itself pads with.
    """
    luma = _pad_planes(planes[0], 16)
    if params.colorspace == "gray":
        return simplejpeg.encode_jpeg_yuv_planes(luma, None, None, quality=params.quality)
    if len(planes) == 1:  # gray picture, 3-channel JPEG: Cb = Cr = 128 gives R = G = B
        fx, fy = SUBSAMPLINGS[params.subsampling]
        h, w = planes[0].shape
        flat = np.full((-(-h // fy) + 8, -(-w // fx) + 8), 128, np.uint8)
        chroma = flat[: -(-h // fy), : -(-w // fx)]
        return simplejpeg.encode_jpeg_yuv_planes(luma, chroma, chroma, quality=params.quality)
    cb, cr = (_pad_planes(plane, 8) for plane in planes[1:])
    return simplejpeg.encode_jpeg_yuv_planes(luma, cb, cr, quality=params.quality)


def _pad_planes(plane: np.ndarray, multiple: int) -> np.ndarray:
    """The plane, with rows and columns repeated to a multiple of ``multiple`` in memory."""
    h, w = plane.shape
    ph, pw = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    if (ph, pw) == (h, w):
        return np.ascontiguousarray(plane)
    padded = np.empty((ph, pw), np.uint8)
    padded[:h, :w] = plane
    padded[:h, w:] = plane[:, -1:]
    padded[h:] = padded[h - 1]
    return padded[:h, :w]


def _plane_u8(plane: np.ndarray, offset: float) -> np.ndarray:
    """Round a float plane (ours to modify) to uint8."""
    if offset:
        np.add(plane, np.float32(offset), out=plane)
    np.rint(plane, out=plane)
    np.clip(plane, 0, 255, out=plane)
    return plane.astype(np.uint8)


def _resample_planes(pixels: np.ndarray, box, geometry: _Geometry, params: ResizeParams):
    """Resample ``box`` of pixels to the content size as float Y[, Cb, Cr] planes.

    Returns a list of 2-D planes ready for _encode_planes: for pad, composited on the
    canvas; chroma already subsampled.
    """
    channels = pixels.shape[2]
    gray = params.colorspace == "gray"
    fx, fy = SUBSAMPLINGS[params.subsampling]
    if gray:
        if channels == 3:
            luma = tuple(w / 65536 for w in GRAY_MATRICES[params.gray_matrix])
        else:
            luma = (1.0,)
        groups = [((luma,), 1, 1)]
    elif channels == 1:
        groups = [(((1.0,),), 1, 1)]
    elif geometry.canvas != geometry.content:  # pad: subsample after compositing
        groups = [(_YCBCR, 1, 1)]
    else:
        groups = [((_YCBCR[0],), 1, 1), (_YCBCR[1:], fx, fy)]
    planes = []
    for plane_stack in _resample(pixels, box, geometry.content, params.filter, groups):
        planes.extend(plane_stack)
    if geometry.canvas == geometry.content:
        return planes
    return _composite_planes(planes, geometry, params, fx, fy)


def _composite_planes(planes, geometry: _Geometry, params: ResizeParams, fx: int, fy: int):
    """Pad mode: put full-resolution Y/Cb/Cr content on the canvas, then subsample."""
    tw, th = geometry.canvas
    left, top = geometry.offset
    if params.colorspace == "gray":
        fill_ycc = [_fill_luma(params)]
    else:
        fill_ycc = [float(np.dot(row, np.array(params.fill, np.float64))) for row in _YCBCR]
    if len(planes) == 1 and len(fill_ycc) == 3:  # gray content on a colour canvas
        h, w = planes[0].shape
        planes = [planes[0], np.zeros((h, w), np.float32), np.zeros((h, w), np.float32)]
    out = []
    for index, (plane, value) in enumerate(zip(planes, fill_ycc, strict=True)):
        canvas = np.full((th, tw), value, np.float32)
        h, w = plane.shape
        canvas[top : top + h, left : left + w] = plane
        if index:
            canvas = _subsample(canvas, fx, fy)
        out.append(canvas)
    return out


def _subsample(plane: np.ndarray, fx: int, fy: int) -> np.ndarray:
    """Average fx x fy blocks (edges replicated, as libjpeg does)."""
    if fy == 2:
        if plane.shape[0] % 2:
            plane = np.concatenate([plane, plane[-1:]], axis=0)
        plane = (plane[0::2] + plane[1::2]) * np.float32(0.5)
    if fx == 2:
        if plane.shape[1] % 2:
            plane = np.concatenate([plane, plane[:, -1:]], axis=1)
        plane = (plane[:, 0::2] + plane[:, 1::2]) * np.float32(0.5)
    return plane


# -- separable resampling as exact banded matrix products ---------------------------
#
# Pass 1 (rows) multiplies a banded (out_h x in_h) matrix into the interleaved
# pixels (in_h x in_w*C). Pass 2 (columns) multiplies the result by a banded
# (in_w*C x out_w*k) matrix whose entries are horizontal weight x colour mix, so it
# also converts C input channels into k output planes (RGB -> Y, RGB -> CbCr, ...),
# and for subsampled chroma averages output pixel pairs. Each band is cut into
# blocks of outputs that need only a short run of inputs; every block is one small
# GEMM.

_KERNEL_SUPPORT = {"box": 0.5, "bilinear": 1.0, "hamming": 1.0, "bicubic": 2.0, "lanczos": 3.0}
_EXACT = 2.0**24  # float32 holds every integer below this exactly
# work per BLAS call kept below where OpenBLAS would go multi-threaded, for processes
# that imported numpy before OPENBLAS_NUM_THREADS was set above
_MNK_LIMIT = 2**18
_CALL_SECONDS = 3e-6  # measured cost of one small numpy matmul call ...
_MAC_SECONDS = 1 / 3.5e10  # ... and of one multiply-add inside it


def _kernel(name: str, x: np.ndarray) -> np.ndarray:
    """Pillow's filter kernels (support in _KERNEL_SUPPORT)."""
    ax = np.abs(x)
    if name == "box":
        return ((x > -0.5) & (x <= 0.5)).astype(np.float64)
    if name == "bilinear":
        return np.maximum(0.0, 1.0 - ax)
    if name == "hamming":
        return np.where(ax < 1.0, np.sinc(x) * (0.54 + 0.46 * np.cos(np.pi * x)), 0.0)
    if name == "bicubic":  # Keys, a = -0.5
        a = -0.5
        near = ((a + 2) * ax - (a + 3)) * ax * ax + 1
        far = (((ax - 5) * ax + 8) * ax - 4) * a
        return np.where(ax < 1, near, np.where(ax < 2, far, 0.0))
    return np.where(ax < 3.0, np.sinc(x) * np.sinc(x / 3.0), 0.0)  # lanczos


@functools.lru_cache(maxsize=1024)
def _axis_weights(in_size: int, lo: float, hi: float, out_size: int, name: str):
    """Normalized real weights: output i = sum_t weights[i, t] * input[first[i] + t]."""
    step = (hi - lo) / out_size
    centers = lo + (np.arange(out_size) + 0.5) * step
    if name == "nearest":
        first = np.clip(np.floor(centers).astype(np.int64), 0, in_size - 1)
        return first, np.ones((out_size, 1))
    stretch = max(step, 1.0)  # widen the kernel when shrinking: that is the antialiasing
    reach = _KERNEL_SUPPORT[name] * stretch
    first = np.clip(np.floor(centers - reach).astype(np.int64), 0, in_size - 1)
    taps = int(math.ceil(2 * reach)) + 2
    index = first[:, None] + np.arange(taps)
    weights = _kernel(name, (index + 0.5 - centers[:, None]) / stretch)
    weights[index >= in_size] = 0.0
    total = weights.sum(axis=1, keepdims=True)
    if np.any(total == 0):  # cannot happen for these kernels; fall back to nearest
        return _axis_weights(in_size, lo, hi, out_size, "nearest")
    return first, weights / total


def _quantize(real: np.ndarray, target: np.ndarray, bits: int, axis: int) -> np.ndarray:
    """Round weights to multiples of 2**-bits; sums along ``axis`` become ``target``.

    Fixing the sums (on each sum's largest weight) keeps flat areas exact: white
    stays 255 and gray stays neutral.
    """
    unit = float(2**bits)
    q = np.rint(real * unit)
    missing = np.rint(target * unit) - q.sum(axis=axis)
    biggest = np.expand_dims(np.argmax(np.abs(q), axis=axis), axis)
    shape = [1] * q.ndim
    shape[axis] = q.shape[axis]
    q += (np.arange(q.shape[axis]).reshape(shape) == biggest) * np.expand_dims(missing, axis)
    return q / unit


def _exact_weights(real: np.ndarray, target, axis: int, per_output, input_bound: float):
    """Quantize weights as finely as exact float32 sums allow.

    With integer inputs |x| <= input_bound and weights that are multiples of
    2**-bits, every partial sum of one output is a multiple of 2**-bits no larger
    than input_bound * sum|w|; float32 holds it exactly while that times 2**bits
    stays below 2**24. ``target(bits)`` is what the weights sum to along ``axis``;
    ``per_output(|w|)`` sums |w| for each output. Returns (weights, max sum|w|).
    """
    bound = max(input_bound * per_output(real) * 1.01, 1.0)  # rounding adds a little
    for bits in range(min(16, int(math.log2(_EXACT / bound))), 4, -1):
        weights = _quantize(real, target(bits), bits, axis)
        abs_sum = per_output(weights)
        if input_bound * abs_sum * 2.0**bits < _EXACT:
            return weights, abs_sum
    raise ValueError("resampling weights too large for exact float32 arithmetic")


def _pick_block(first: list[int], last: list[int], work_per_tap: float) -> int:
    """Outputs per GEMM block: few calls vs. little wasted work on the band's edges."""
    n = len(first)
    best = None
    for size in (4, 6, 8, 12, 16, 24, 32, 64):
        span = sum(last[min(i + size, n) - 1] - first[i] for i in range(0, n, size))
        cost = -(-n // size) * _CALL_SECONDS + span * size * work_per_tap * _MAC_SECONDS
        if best is None or cost < best[0]:
            best = (cost, size)
        if size >= n:
            break
    return best[1]


@dataclass(frozen=True)
class _Band:
    """One axis's banded weight matrix cut into GEMM blocks.

    blocks: (out0, out1, in0, in1, matrix) with inputs relative to ``lo``; matrices
    are (out, in) for rows, (k, in*C, out) for columns.
    """

    lo: int
    hi: int
    blocks: tuple
    block_work: int  # largest matrix size: long passes are cut to stay under _MNK_LIMIT
    calls: tuple  # (output index, input index, matrix) per block, ready to use


@dataclass(frozen=True)
class _Layout:
    """Blocks of ``size`` consecutive outputs and the input run [in0, in1) each needs."""

    size: int
    edges: np.ndarray  # first output of each block
    in0: np.ndarray
    in1: np.ndarray
    n: int

    @classmethod
    def plan(cls, first: np.ndarray, real: np.ndarray, work_per_tap: float) -> _Layout:
        nonzero = real != 0
        start = first + nonzero.argmax(axis=1)
        stop = first + real.shape[1] - nonzero[:, ::-1].argmax(axis=1)
        size = _pick_block(start.tolist(), stop.tolist(), work_per_tap)
        edges = np.arange(0, len(first), size)
        return cls(
            size, edges, np.minimum.reduceat(start, edges), np.maximum.reduceat(stop, edges),
            len(first),
        )  # fmt: skip

    @property
    def width(self) -> int:
        return int((self.in1 - self.in0).max())

    def dense(self, first: np.ndarray, real: np.ndarray) -> np.ndarray:
        """Real weights scattered into (blocks, size, width): one small matrix per block."""
        o, t = np.nonzero(real)
        block = o // self.size
        dense = np.zeros((len(self.edges), self.size, self.width))
        dense[block, o % self.size, first[o] + t - self.in0[block]] = real[o, t]
        return dense

    def valid(self) -> np.ndarray:
        """(blocks, size): which slots hold a real output (the last block may be short)."""
        return (self.edges[:, None] + np.arange(self.size)) < self.n

    def band(self, matrices: np.ndarray, rows: bool, channels: int = 1) -> _Band:
        lo, hi = int(self.in0.min()), int(self.in1.max())
        blocks = []
        for index, out0 in enumerate(self.edges.tolist()):
            out1 = min(self.n, out0 + self.size)
            in0, in1 = int(self.in0[index]), int(self.in1[index])
            if rows:
                matrix = matrices[index, : out1 - out0, : in1 - in0]
            else:
                matrix = matrices[index, :, : (in1 - in0) * channels, : out1 - out0]
            blocks.append((out0, out1, in0 - lo, in1 - lo, matrix))
        if rows:
            calls = tuple((slice(b[0], b[1]), slice(b[2], b[3]), b[4]) for b in blocks)
        else:
            calls = tuple(
                ((slice(None), slice(None), slice(b[0], b[1])), _slice2(b[2], b[3], channels), b[4])
                for b in blocks
            )
        return _Band(lo, hi, tuple(blocks), max(b[4].size for b in blocks), calls)


def _slice2(start: int, stop: int, channels: int):
    return (slice(None), slice(start * channels, stop * channels))


def _rows_bound(in_size: int, lo: float, hi: float, out_size: int, name: str) -> float:
    """Largest |value| the first product can give (rounded): 255 * sum|w|, plus the
    little that quantizing the weights can add (checked in _rows_band)."""
    real = _axis_weights(in_size, lo, hi, out_size, name)[1]
    return 255.0 * (float(np.abs(real).sum(axis=1).max()) + 0.01) + 0.5


@functools.lru_cache(maxsize=128)
def _rows_band(in_size: int, lo: float, hi: float, out_size: int, name: str, row_len: int):
    """Vertical weights on uint8 rows: blocks of (outputs x input rows) matrices."""
    first, real = _axis_weights(in_size, lo, hi, out_size, name)
    layout = _Layout.plan(first, real, row_len)
    dense = layout.dense(first, real)
    weights, abs_sum = _exact_weights(
        dense,
        lambda bits: layout.valid().astype(np.float64),
        -1,
        lambda w: float(np.abs(w).sum(axis=2).max()),
        255.0,
    )
    if 255.0 * abs_sum + 0.5 > _rows_bound(in_size, lo, hi, out_size, name):
        raise ValueError("quantized weights exceed the planned bound")
    return layout.band(weights.astype(np.float32), rows=True)


@functools.lru_cache(maxsize=128)
def _cols_band(
    in_size: int,
    lo: float,
    hi: float,
    out_size: int,
    name: str,
    mixes: tuple,
    pair: int,
    rows_scale: float,
    input_bound: float,
    work_rows: int,
):
    """Horizontal weights x colour mixes; pair=2 averages output pixel pairs (chroma).

    Matrix entry [(x, c), (o, j)] = horizontal weight of input x for output o times
    the coefficient of channel c in plane j: one product resamples and converts.
    """
    first, real = _axis_weights(in_size, lo, hi, out_size, name)
    if pair == 2:
        first, real = _pair_average(first, real)
    mix = np.array(mixes, np.float64) * rows_scale  # (k, C)
    k, channels = mix.shape
    layout = _Layout.plan(first, real, work_rows * channels * k)
    # (blocks, k, C, size, width): the axis to quantize along (width) comes last
    combined = layout.dense(first, real)[:, None, None] * mix[None, :, :, None, None]
    valid = layout.valid()[:, None, None, :]

    def target(bits):
        """Every (output, plane, channel) sums to the quantized colour coefficient,
        whose rows sum exactly in turn: Y of white is 255, Cb and Cr of gray are 0."""
        mix_q = _quantize(mix, mix.sum(axis=1), bits, axis=1)
        return mix_q[None, :, :, None] * valid

    def per_output(w):
        return float(np.abs(w).sum(axis=(2, 4)).max())

    weights, _ = _exact_weights(combined, target, -1, per_output, input_bound)
    # GEMM layout (blocks, k, width * C, size): row x * C + c meets interleaved pixels
    matrices = weights.transpose(0, 1, 4, 2, 3).astype(np.float32, order="C")
    shape = (len(layout.edges), k, layout.width * channels, layout.size)
    return layout.band(matrices.reshape(shape), rows=False, channels=channels)


def _pair_average(first: np.ndarray, real: np.ndarray):
    """Weights of the mean of outputs 2q and 2q+1 (the last one repeated if odd)."""
    n, taps = real.shape
    a = np.arange(0, n, 2)
    b = np.minimum(a + 1, n - 1)
    shift = first[b] - first[a]
    out = np.zeros((len(a), taps + int(shift.max())))
    out[:, :taps] = 0.5 * real[a]
    out[np.arange(len(a))[:, None], shift[:, None] + np.arange(taps)] += 0.5 * real[b]
    return first[a], out


def _resample(pixels: np.ndarray, box, size, name: str, groups):
    """Resample ``box`` of (h, w, C) uint8 pixels to ``size`` (w, h).

    groups: (mixes, fx, fy) each; yields a float32 (k, h/fy, w/fx) stack per group
    holding exact values: plane j = sum_c mixes[j][c] * channel c, and with fx/fy = 2
    averaged over output pixel pairs (JPEG chroma subsampling).
    """
    height, width, channels = pixels.shape
    out_w, out_h = size
    x0, y0, x1, y1 = box
    # bound of the first product's (rounded) values: sets the second one's precision
    mid_bound = _rows_bound(height, y0, y1, out_h, name)
    cols = [
        _cols_band(
            width,
            x0,
            x1,
            out_w,
            name,
            mixes,
            fx,
            0.5 if fy == 2 else 1.0,
            mid_bound * fy,
            -(-out_h // fy),
        )
        for mixes, fx, fy in groups
    ]
    xs = min(band.lo for band in cols)
    xe = max(band.hi for band in cols)
    rows = _rows_band(height, y0, y1, out_h, name, (xe - xs) * channels)
    region = pixels[rows.lo : rows.hi, xs:xe]
    source = _scratch("source", region.shape)
    np.copyto(source, region, casting="unsafe")
    source = source.reshape(rows.hi - rows.lo, -1)
    mid = _rows_pass(source, rows, out_h)
    np.rint(mid, out=mid)  # integers again, so the second product is exact too
    paired = None
    for (_, _, fy), band in zip(groups, cols, strict=True):
        src = mid
        if fy == 2:
            if paired is None:
                paired = _pair_rows(mid)
            src = paired
        offset = (band.lo - xs) * channels
        yield _cols_pass(src[:, offset : offset + (band.hi - band.lo) * channels], band, channels)


_SCRATCH = threading.local()


def _scratch(name: str, shape) -> np.ndarray:
    """Reusable float32 work array (one set per thread): fresh large arrays cost page
    faults on every image."""
    need = math.prod(shape)
    buffer = getattr(_SCRATCH, name, None)
    if buffer is None or buffer.size < need:
        buffer = np.empty(max(need, 1 << 16), np.float32)
        setattr(_SCRATCH, name, buffer)
    return buffer[:need].reshape(shape)


def _pair_rows(mid: np.ndarray) -> np.ndarray:
    """Sums of row pairs (the last row doubled if odd): vertical chroma subsampling."""
    n = mid.shape[0]
    out = _scratch("paired", ((n + 1) // 2, mid.shape[1]))
    np.add(mid[0 : n - 1 : 2], mid[1::2], out=out[: n // 2])
    if n % 2:
        np.multiply(mid[-1], np.float32(2.0), out=out[-1])
    return out


def _rows_pass(source: np.ndarray, band: _Band, out_h: int) -> np.ndarray:
    n = source.shape[1]
    out = _scratch("mid", (out_h, n))
    strip = max(64, _MNK_LIMIT // band.block_work)
    if strip >= n:  # whole rows: np.dot (less call overhead) can write them in place
        for out_rows, in_rows, matrix in band.calls:
            np.dot(matrix, source[in_rows], out=out[out_rows])
        return out
    for c0 in range(0, n, strip):
        c1 = min(n, c0 + strip)
        for out0, out1, in0, in1, matrix in band.blocks:
            np.matmul(matrix, source[in0:in1, c0:c1], out=out[out0:out1, c0:c1])
    return out


def _cols_pass(source: np.ndarray, band: _Band, channels: int) -> np.ndarray:
    rows = source.shape[0]
    k = band.blocks[0][4].shape[0]
    n_out = band.blocks[-1][1]
    out = np.empty((k, rows, n_out), np.float32)
    strip = max(8, _MNK_LIMIT // band.block_work)
    if strip >= rows:
        for out_index, in_index, matrix in band.calls:
            np.matmul(source[in_index], matrix, out=out[out_index])
        return out
    for r0 in range(0, rows, strip):
        r1 = min(rows, r0 + strip)
        for out0, out1, in0, in1, matrix in band.blocks:
            np.matmul(
                source[r0:r1, in0 * channels : in1 * channels],
                matrix,
                out=out[:, r0:r1, out0:out1],
            )
    return out
