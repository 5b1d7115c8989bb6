"""Image hashes for the duplicate audit: exact digests and a 64-bit perceptual hash.

- ``pixels_sha256``: sha256 of decoded pixels (uint8, h x w x c) and their shape, so two
  files that decode to the same picture (a re-saved PNG of a JPEG's pixels, a copy with
  other metadata) match although their bytes differ; a DCT-scaled or luma-only decode
  (resize's fast path) is tagged as such in the digest and matches only its like.
- ``phash``: the standard DCT hash (as ImageHash's ``phash`` computes it, Zauner /
  hackerfactor): grayscale, resized to 32 x 32 with Lanczos, 2-D DCT-II, the 8 x 8 lowest
  frequencies (DC included), bit = coefficient > their median, row-major, the first
  coefficient the highest bit. Re-encoded, slightly resized or brightened copies stay
  within a few bits; unrelated photos are ~32 bits apart.

Exact and the same on every machine: Pillow resizes 8-bit images in fixed point, and the
DCT runs in int64 with cosines rounded to multiples of 2**-20 (every product and sum is
exact, so no BLAS or summation order enters); the median is compared as twice the
coefficient against the sum of the two middle values. A flat image therefore hashes to
0x8000000000000000 (only DC above the median), not to float noise.
"""

from __future__ import annotations

import hashlib

import numpy as np
import simplejpeg
from PIL import Image

from imgprep.kernels import decode
from imgprep.kernels.decode import decode_jpeg, image_orientation, open_image, orient, probe_jpeg

__all__ = [
    "duplicate_keys",
    "hamming",
    "phash",
    "phash_hex",
    "phash_pixels",
    "pixels_sha256",
    "source_pixels_sha256",
]

HASH_SIDE = 8  # 8 x 8 coefficients: 64 bits
DCT_SIDE = 32  # the image is resized to 32 x 32 first (ImageHash's highfreq_factor 4)
# the stored JPEG is decoded at the smallest DCT scale that still has this many pixels a
# side (libjpeg-turbo's scaled IDCT: 256 px -> 64 px costs ~1/4 of a full decode), then
# Lanczos-resized to 32 x 32: the hash differs from one of the full decode in ~1 bit of 64
# (tests/test_duplicates.py: agreement with ImageHash)
DECODE_MIN_SIDE = 64
_SCALE_BITS = 20


def _dct_rows() -> np.ndarray:
    """The first 8 rows of the (unnormalized) 32-point DCT-II as int64 multiples of 2**-20."""
    k = np.arange(HASH_SIDE)[:, None]
    n = np.arange(DCT_SIDE)[None, :]
    cosines = np.cos(np.pi * k * (2 * n + 1) / (2 * DCT_SIDE))
    return np.rint(cosines * (1 << _SCALE_BITS)).astype(np.int64)


_DCT = _dct_rows()
_BIT_WEIGHTS = [1 << (63 - i) for i in range(64)]


def phash_pixels(gray: np.ndarray) -> int:
    """The 64-bit hash of a 2-D uint8 grayscale image of any size."""
    image = Image.fromarray(np.ascontiguousarray(gray, dtype=np.uint8), "L")
    if image.size != (DCT_SIDE, DCT_SIDE):
        image = image.resize((DCT_SIDE, DCT_SIDE), Image.Resampling.LANCZOS)
    pixels = np.asarray(image, dtype=np.int64)
    # |C x| <= 32 * 255 * 2**20 < 2**33, then * 32 * 2**20 < 2**58: exact in int64
    low = (_DCT @ pixels @ _DCT.T).ravel()
    middle = np.partition(low, (31, 32))
    twice_median = int(middle[31]) + int(middle[32])
    bits = (2 * low > twice_median).tolist()
    return sum(w for w, bit in zip(_BIT_WEIGHTS, bits, strict=True) if bit)


def phash(jpeg: bytes) -> int:
    """The hash of a stored JPEG (what the records hold), decoded as gray."""
    height, width = simplejpeg.decode_jpeg_header(jpeg)[:2]
    small = min(DECODE_MIN_SIDE, width, height)
    gray = simplejpeg.decode_jpeg(jpeg, colorspace="GRAY", min_width=small, min_height=small)
    return phash_pixels(gray.reshape(gray.shape[0], gray.shape[1]))


def phash_hex(value: int) -> str:
    """16 hex digits (ImageHash's ``str()`` of the same bits)."""
    return f"{value:016x}"


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def pixels_sha256(pixels: np.ndarray, decoded_as: str = "") -> str:
    """sha256 of "h w c\\n" (with ``decoded_as``, "h w c <decoded_as>\\n": a DCT-scaled
    decode never matches a full one) and the uint8 pixels in C order."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    h, w, c = pixels.shape
    header = f"{h} {w} {c} {decoded_as}" if decoded_as else f"{h} {w} {c}"
    digest = hashlib.sha256(f"{header}\n".encode())
    digest.update(memoryview(np.ascontiguousarray(pixels, dtype=np.uint8)).cast("B"))
    return digest.hexdigest()


def source_pixels_sha256(data: bytes) -> str:
    """``pixels_sha256`` of a source image decoded in full: a plain JPEG as libjpeg-turbo
    gives it (RGB or gray, as stored), anything else as Pillow's RGB or L (alpha over
    black); EXIF orientation applied, colour profiles not. What resize_image reports
    without a decode of its own where it decoded the file in full anyway."""
    source = probe_jpeg(data)
    if source is not None:
        channels = 1 if source.mode == "L" else 3
        pixels = decode_jpeg(data, channels, 1, source.width, source.height)
        if pixels is not None:
            return pixels_sha256(orient(pixels, source.orientation))
    image = open_image(data)
    orientation = image_orientation(image)
    decode._load(image)  # rejects a truncated file, as resize does
    pixels = np.asarray(decode._to_rgb_or_l(image, (0, 0, 0)))
    return pixels_sha256(orient(pixels if pixels.ndim == 3 else pixels[:, :, None], orientation))


def duplicate_keys(source: bytes, image) -> tuple[str, str, str]:
    """The duplicate audit's keys of one resized image (a kernels.resize.ResizedImage):
    sha256 of the source bytes, of its decoded pixels (resize's own, else a full decode)
    and the phash of the stored JPEG. Never raises: an image resize could store is not
    rejected for its hash (an empty one leaves it out of those pairs)."""
    pixels = image.pixels_sha256
    if not pixels:
        try:
            pixels = source_pixels_sha256(source)
        except Exception:
            pixels = ""
    try:
        perceptual = phash_hex(phash(image.data))
    except ValueError:
        perceptual = ""
    return hashlib.sha256(source).hexdigest(), pixels, perceptual
