"""One image, bytes in, JPEG bytes out: decode, orient, convert, resize, encode.

This runs once per image of a dataset, so it is built for speed without giving up
quality or reproducibility (benchmarks/bench_resize.py measures it):

- JPEGs decode through libjpeg-turbo (simplejpeg), at a DCT-reduced scale (1/2,
  1/4, 1/8, or M/8) when the crop still has at least the output's pixels at that scale.
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

import os
import warnings
from dataclasses import dataclass

# One BLAS thread per process (only effective before numpy is first imported):
# parallelism comes from resize_shard's process pool, not from inside one image.
# Assigned, not defaulted: Snakemake sets it to the job's threads, which would give
# every pool worker that many BLAS threads.
os.environ["OPENBLAS_NUM_THREADS"] = "1"

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from imgprep.kernels.colour import (  # noqa: E402
    COLORSPACES,
    GRAY_MATRICES,
    ICC_MODES,
    YCBCR,
    fill_luma,
    luma_u8,
    pixels_to_srgb,
    srgb_transform,
)
from imgprep.kernels.decode import (  # noqa: E402
    RejectedImage,
    Source,
    decode_jpeg_eighths,
    decode_pillow,
    decoded_as,
    image_orientation,
    is_int,
    jpeg_decodes,
    jpeg_end,
    open_image,
    orient,
    probe_jpeg,
)
from imgprep.kernels.encode import JPEG_MAX_SIDE, SUBSAMPLINGS, encode_pixels, encode_planes  # noqa: E402
from imgprep.kernels.geometry import MODES, Geometry, dct_eighths, is_identity, round_half_up  # noqa: E402
from imgprep.kernels.phash import pixels_sha256  # noqa: E402
from imgprep.kernels.resample import FILTERS, resample, subsample  # noqa: E402
from imgprep.sections import require_keys

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
    """How every image of a dataset is resized: the config's ``resize:`` mapping.

    No defaults here: they are the schema's (``from_config`` of the validated config, or
    of ``imgprep.config.section_config("resize", ...)`` where there is no whole config).
    """

    mode: str
    width: int
    height: int
    upscale: bool
    filter: str
    colorspace: str
    gray_matrix: str
    quality: int
    subsampling: str
    fill: tuple[int, int, int]
    fast_decode: bool | str  # true, false or "eighths" (geometry.DCT_EIGHTHS)
    icc: str

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
            if not is_int(value) or not 1 <= value <= JPEG_MAX_SIDE:
                raise ValueError(
                    f"resize.size: {key} must be an integer 1..{JPEG_MAX_SIDE}, got {value!r}"
                )
            object.__setattr__(self, key, int(value))
        if not is_int(self.quality) or not 1 <= self.quality <= 100:
            raise ValueError(f"resize.quality: must be an integer 1..100, got {self.quality!r}")
        if not isinstance(self.upscale, bool):
            raise ValueError(f"resize.upscale: must be true or false, got {self.upscale!r}")
        if type(fast := self.fast_decode) not in (bool, str) or fast not in (0, 1, "eighths"):
            raise ValueError(f"resize.fast_decode: must be true, false or eighths, got {fast!r}")
        fill = self.fill
        if is_int(fill):
            fill = (fill, fill, fill)
        if (
            not isinstance(fill, list | tuple)
            or len(fill) != 3
            or not all(is_int(v) and 0 <= v <= 255 for v in fill)
        ):
            raise ValueError(f"resize.fill: must be [r, g, b] with values 0..255, got {fill!r}")
        object.__setattr__(self, "fill", tuple(int(v) for v in fill))

    @classmethod
    def from_config(cls, cfg: dict) -> ResizeParams:
        """Build from the validated config's ``resize:`` mapping (every key present)."""
        require_keys("resize", cfg, _CONFIG_KEYS)
        kwargs = {key: cfg[key] for key in _CONFIG_KEYS if key != "size"}
        size = cfg["size"]
        if is_int(size):
            kwargs["width"] = kwargs["height"] = size
        elif isinstance(size, list | tuple) and len(size) == 2 and all(map(is_int, size)):
            kwargs["width"], kwargs["height"] = size
        else:
            raise ValueError(f"resize.size: must be an integer or [width, height], got {size!r}")
        if isinstance(kwargs["fill"], list):
            kwargs["fill"] = tuple(kwargs["fill"])
        return cls(**kwargs)


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
    # resize_image(..., pixels_digest=True): imgprep.kernels.phash.pixels_sha256 of the
    # source decoded in full, oriented (the duplicate audit's exact-pixels key)
    pixels_sha256: str = ""


# -- entry point ------------------------------------------------------------------------


def resize_image(data: bytes, params: ResizeParams, pixels_digest: bool = False) -> ResizedImage:
    """Resize one encoded image; raise RejectedImage (and nothing else) for bad input.

    ``pixels_digest``: also the digest of the decoded source (``pixels_sha256``) from the
    resize's own JPEG decode (tagged with its DCT scale and channels where that was not a
    full one); "" where Pillow decoded or the file was kept (see phash.duplicate_keys).

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
            return _resize(data, params, pixels_digest)
    except RejectedImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise RejectedImage(f"decompression bomb: {error}") from None
    except Exception as error:  # one bad image must never stop a shard
        raise RejectedImage(f"decode error: {type(error).__name__}: {error}") from None


def _resize(data: bytes, params: ResizeParams, pixels_digest: bool = False) -> ResizedImage:
    if not data:
        raise RejectedImage("empty file")
    image = None
    source = probe_jpeg(data)
    if source is None:  # not a plain JPEG: Pillow identifies it
        image = open_image(data)
        source = Source(
            image.format or "unknown",
            image.mode,
            *image.size,
            image_orientation(image),
            image.format == "JPEG" and not image.info.get("progressive"),
            image.info.get("icc_profile"),
        )
    if source.width <= 0 or source.height <= 0:
        raise RejectedImage(f"zero-size image: {source.width}x{source.height}")
    if source.orientation >= 5:
        geometry = Geometry.plan(source.height, source.width, params)
    else:
        geometry = Geometry.plan(source.width, source.height, params)
    if max(geometry.canvas) > JPEG_MAX_SIDE:
        width, height = geometry.canvas
        raise RejectedImage(f"output {width}x{height} exceeds JPEG's {JPEG_MAX_SIDE} px limit")
    gray = params.colorspace == "gray"
    icc, to_srgb = "none", None
    if source.icc is not None:
        icc, to_srgb = ("ignored", None) if params.icc == "ignore" else srgb_transform(source.icc)

    def result(jpeg: bytes, kept: bool = False, digest: str = "") -> ResizedImage:
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
            pixels_sha256=digest,
        )

    if (
        params.mode == "keep"
        and source.format == "JPEG"
        and source.baseline
        and source.mode == ("L" if gray else "RGB")
        and source.orientation == 1
        and to_srgb is None
        and jpeg_end(data) == len(data)
        and jpeg_decodes(data)
    ):
        return result(data, kept=True)

    is_jpeg = source.format in ("JPEG", "MPO")
    eighths = 8
    if params.fast_decode and is_jpeg and not geometry.identity:
        eighths = dct_eighths(geometry, source.width, source.height, params.fast_decode)
    pixels, digest = None, ""
    if is_jpeg and source.mode in ("RGB", "L"):
        luma_only = gray and params.gray_matrix == "rec601" and to_srgb is None
        channels = 1 if source.mode == "L" or luma_only else 3
        pixels = decode_jpeg_eighths(data, channels, eighths, source.width, source.height)
        if pixels_digest and pixels is not None:
            # the pixels as decoded (a second, full decode would cost ~40 % of the resize);
            # a DCT-scaled or luma-only decode says so in the digest
            partial = decoded_as(eighths, channels, source.mode)
            digest = pixels_sha256(orient(pixels, source.orientation), partial)
    if pixels is None:
        if image is None:
            image = open_image(data)
        # Pillow's draft has powers of two only: 8 // M is fast_decode: true's (3/8 -> 1/2)
        reduce = 8 // eighths
        pixels, scale = decode_pillow(image, params, geometry, source.orientation, reduce, to_srgb)
    else:
        if to_srgb is not None and pixels.shape[2] == 3:
            pixels = pixels_to_srgb(pixels, to_srgb)
        pixels = orient(pixels, source.orientation)
        scale = (eighths / 8, eighths / 8)
    return result(_render(pixels, scale, geometry, params), digest=digest)


# -- rendering: resample, convert, encode -------------------------------------------


def _render(pixels: np.ndarray, scale, geometry: Geometry, params: ResizeParams) -> bytes:
    """Turn decoded pixels (h, w, 1|3, any strides) into the stored JPEG."""
    x0, y0, x1, y1 = geometry.box
    box = (x0 * scale[0], y0 * scale[1], x1 * scale[0], y1 * scale[1])
    if is_identity(box, geometry.content, (1.0, 1.0)):
        region = pixels[int(box[1]) : int(box[3]), int(box[0]) : int(box[2])]
        if geometry.canvas != geometry.content:
            region = _paste_pixels(region, geometry, params)
        return encode_pixels(region, params)
    return encode_planes(_resample_planes(pixels, box, geometry, params), params)


def _paste_pixels(region: np.ndarray, geometry: Geometry, params: ResizeParams) -> np.ndarray:
    """Centre unscaled pixels on the pad canvas."""
    gray = params.colorspace == "gray"
    if gray and region.shape[2] == 3:
        region = luma_u8(region, params.gray_matrix)
    elif not gray and region.shape[2] == 1:
        region = np.repeat(region, 3, axis=2)
    fill = (fill_luma(params.fill, params.gray_matrix),) if gray else params.fill
    tw, th = geometry.canvas
    canvas = np.empty((th, tw, len(fill)), np.uint8)
    canvas[:] = np.array([round_half_up(v) for v in fill], np.uint8)
    left, top = geometry.offset
    h, w = region.shape[:2]
    canvas[top : top + h, left : left + w] = region
    return canvas


def _resample_planes(pixels: np.ndarray, box, geometry: Geometry, params: ResizeParams):
    """Resample ``box`` of pixels to the content size as float Y[, Cb, Cr] planes.

    Returns a list of 2-D planes ready for encode_planes: for pad, composited on the
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
        groups = [(YCBCR, 1, 1)]
    else:
        groups = [((YCBCR[0],), 1, 1), (YCBCR[1:], fx, fy)]
    planes = []
    for plane_stack in resample(pixels, box, geometry.content, params.filter, groups):
        planes.extend(plane_stack)
    if geometry.canvas == geometry.content:
        return planes
    return _composite_planes(planes, geometry, params, fx, fy)


def _composite_planes(planes, geometry: Geometry, params: ResizeParams, fx: int, fy: int):
    """Pad mode: put full-resolution Y/Cb/Cr content on the canvas, then subsample."""
    tw, th = geometry.canvas
    left, top = geometry.offset
    if params.colorspace == "gray":
        fill_ycc = [fill_luma(params.fill, params.gray_matrix)]
    else:
        fill_ycc = [float(np.dot(row, np.array(params.fill, np.float64))) for row in YCBCR]
    if len(planes) == 1 and len(fill_ycc) == 3:  # gray content on a colour canvas
        h, w = planes[0].shape
        planes = [planes[0], np.zeros((h, w), np.float32), np.zeros((h, w), np.float32)]
    out = []
    for index, (plane, value) in enumerate(zip(planes, fill_ycc, strict=True)):
        canvas = np.full((th, tw), value, np.float32)
        h, w = plane.shape
        canvas[top : top + h, left : left + w] = plane
        if index:
            canvas = subsample(canvas, fx, fy)
        out.append(canvas)
    return out
