"""Colour: embedded ICC profiles to sRGB, luma matrices, JFIF's RGB -> YCbCr.

An embedded RGB ICC profile other than sRGB (Adobe RGB, Display P3, ProPhoto…) is
applied with littleCMS, so the stored numbers mean the same colours in sRGB, the space
every consumer assumes; images without one (or with sRGB) are untouched.
"""

from __future__ import annotations

import functools
import io

import numpy as np
from PIL import Image, ImageCms

COLORSPACES = ("rgb", "gray")
# convert: apply an embedded non-sRGB RGB profile (to sRGB); ignore: use the numbers as
# stored, dropping the profile (what imgprep did before, and most converters do)
ICC_MODES = ("convert", "ignore")
# luma weights in 1/65536: they sum to 65536 so white stays exactly white; rec601 is
# what Pillow's convert("L") and JPEG's own Y use
GRAY_MATRICES = {"rec601": (19595, 38470, 7471), "rec709": (13933, 46871, 4732)}
# JFIF RGB -> YCbCr (Cb and Cr get +128 afterwards)
YCBCR = (
    (0.299, 0.587, 0.114),
    (-0.168736, -0.331264, 0.5),
    (0.5, -0.418688, -0.081312),
)

_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
# 17 levels per channel: a profile that moves none of these by more than 1 is sRGB
_PROBE = np.stack(
    np.meshgrid(*[np.linspace(0, 255, 17).round().astype(np.uint8)] * 3, indexing="ij"), -1
).reshape(1, -1, 3)


@functools.lru_cache(maxsize=32)
def srgb_transform(icc: bytes):
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


def pixels_to_srgb(pixels: np.ndarray, transform) -> np.ndarray:
    """(h, w, 3) uint8 in the profile's space -> the same in sRGB."""
    image = Image.fromarray(np.ascontiguousarray(pixels), "RGB")
    return np.asarray(ImageCms.applyTransform(image, transform))


def image_to_srgb(image: Image.Image, transform) -> Image.Image:
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


def fill_luma(fill: tuple[int, int, int], matrix: str) -> float:
    """The luma of an RGB fill colour, unrounded (a gray canvas's value)."""
    weights = GRAY_MATRICES[matrix]
    return sum(w * c for w, c in zip(weights, fill, strict=True)) / 65536


def luma_u8(rgb: np.ndarray, matrix: str) -> np.ndarray:
    """8-bit luma of (h, w, 3) uint8 with integer arithmetic (same as Pillow's for rec601)."""
    wr, wg, wb = (np.uint32(w) for w in GRAY_MATRICES[matrix])
    acc = rgb[:, :, 0] * wr + rgb[:, :, 1] * wg + rgb[:, :, 2] * wb + np.uint32(32768)
    return (acc >> np.uint32(16)).astype(np.uint8)[:, :, None]
