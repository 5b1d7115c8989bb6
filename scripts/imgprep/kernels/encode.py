"""Encoding: finished 8-bit pixels or Y/Cb/Cr planes to baseline JPEG bytes (libjpeg-turbo).

The encoder's RGB->YCbCr conversion and chroma subsampling are done before this (folded
into the resampling's second matrix product), so libjpeg-turbo receives finished planes.
"""

from __future__ import annotations

import numpy as np
import simplejpeg

from imgprep.kernels.colour import luma_u8

# chroma plane size divisors (horizontal, vertical) of the stored JPEG
SUBSAMPLINGS = {"4:4:4": (1, 1), "4:2:2": (2, 1), "4:2:0": (2, 2)}
_SIMPLEJPEG_SUBSAMPLING = {"4:4:4": "444", "4:2:2": "422", "4:2:0": "420"}
JPEG_MAX_SIDE = 65500  # libjpeg's limit on either side


def encode_pixels(pixels: np.ndarray, params) -> bytes:
    """Encode (h, w, 1|3) uint8 pixels in the target colorspace.

    ``params`` here and below: a ResizeParams (colorspace, gray_matrix, quality,
    subsampling), passed whole rather than imported, so encoding knows no pipeline."""
    if params.colorspace == "gray":
        if pixels.shape[2] == 3:
            pixels = luma_u8(pixels, params.gray_matrix)
        return _encode_yuv([pixels[:, :, 0]], params)
    if pixels.shape[2] == 1:
        return _encode_yuv([pixels[:, :, 0]], params)
    return simplejpeg.encode_jpeg(
        np.ascontiguousarray(pixels),
        quality=params.quality,
        colorspace="RGB",
        colorsubsampling=_SIMPLEJPEG_SUBSAMPLING[params.subsampling],
    )


def encode_planes(planes, params) -> bytes:
    """Encode float Y[, Cb, Cr] planes (Cb/Cr already subsampled, without +128)."""
    luma = _plane_u8(planes[0], 0.0)
    if len(planes) == 1:
        return _encode_yuv([luma], params)
    return _encode_yuv([luma, _plane_u8(planes[1], 128.0), _plane_u8(planes[2], 128.0)], params)


def _encode_yuv(planes: list[np.ndarray], params) -> bytes:
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
