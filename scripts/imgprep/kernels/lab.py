"""sRGB to CIELAB (D65), and the Lab training targets of Deep Koalarization.

Numpy only: the conversion is the textbook one (IEC 61966-2-1 transfer curve, the
sRGB D65 matrix, CIE 1976 L*a*b* with the D65 white), vectorized over any leading
shape.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

__all__ = ["lab_targets", "lab_to_srgb", "srgb_to_lab"]

# linear sRGB -> XYZ (D65)
_RGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ],
    dtype=np.float64,
)
_XYZ_TO_RGB = np.linalg.inv(_RGB_TO_XYZ)
_WHITE = np.array([0.95047, 1.0, 1.08883], dtype=np.float64)
_DELTA = 6.0 / 29.0


def _linear_lut() -> np.ndarray:
    """The sRGB transfer curve inverted, for each of the 256 code values."""
    c = np.arange(256, dtype=np.float64) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


_LINEAR = _linear_lut()


def _f(t: np.ndarray) -> np.ndarray:
    return np.where(t > _DELTA**3, np.cbrt(t), t / (3.0 * _DELTA**2) + 4.0 / 29.0)


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 sRGB ``[..., 3]`` -> float32 CIELAB ``[..., 3]`` (L in [0, 100])."""
    rgb = np.asarray(rgb)
    if rgb.shape[-1:] != (3,):
        raise ValueError(f"expected [..., 3] RGB, got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB, got {rgb.dtype}")
    linear = _LINEAR[rgb]  # float64 [..., 3]
    xyz = linear @ _RGB_TO_XYZ.T
    fx, fy, fz = np.moveaxis(_f(xyz / _WHITE), -1, 0)
    lab = np.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)
    return lab.astype(np.float32)


def lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """CIELAB ``[..., 3]`` (L in [0, 100]) -> uint8 sRGB ``[..., 3]``: srgb_to_lab
    inverted, colours outside the sRGB gamut clipped to it (for looking at Lab data)."""
    lab = np.asarray(lab, dtype=np.float64)
    if lab.shape[-1:] != (3,):
        raise ValueError(f"expected [..., 3] Lab, got shape {lab.shape}")
    fy = (lab[..., 0] + 16.0) / 116.0
    f = np.stack([fy + lab[..., 1] / 500.0, fy, fy - lab[..., 2] / 200.0], axis=-1)
    xyz = np.where(f > _DELTA, f**3, 3.0 * _DELTA**2 * (f - 4.0 / 29.0)) * _WHITE
    linear = np.clip(xyz @ _XYZ_TO_RGB.T, 0.0, 1.0)
    srgb = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    return np.rint(srgb * 255.0).astype(np.uint8)


def lab_targets(jpeg: bytes, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``jpeg`` to ``size`` x ``size`` RGB; return Koalarization's (L, ab) targets.

    L is scaled to ``2 L / 100 - 1`` (float32 ``[size, size]``, in [-1, 1]) and ab to
    ``ab / 127`` (float32 ``[size, size, 2]``, channels last). Gray JPEGs become three
    equal channels, so their ab is zero.
    """
    with Image.open(io.BytesIO(jpeg)) as image:
        image = image.convert("RGB")
        if image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.BICUBIC)
        rgb = np.asarray(image, dtype=np.uint8)
    lab = srgb_to_lab(rgb)
    lum = lab[..., 0] * np.float32(2.0 / 100.0) - np.float32(1.0)
    ab = lab[..., 1:] / np.float32(127.0)
    return lum.astype(np.float32), ab.astype(np.float32)
