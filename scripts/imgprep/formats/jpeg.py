"""A sample's JPEG opened (not decoded) and checked against its metadata row."""

from __future__ import annotations

import io

from PIL import Image

from imgprep.formats.base import Sample

__all__ = ["jpeg_header"]

# Pillow mode of a decoded JPEG -> channel count TensorFlow decodes it to
_MODE_CHANNELS = {"L": 1, "RGB": 3, "CMYK": 4}


def jpeg_header(sample: Sample) -> Image.Image:
    """Open (not decode) the sample's JPEG and check it against its metadata row."""
    try:
        image = Image.open(io.BytesIO(sample.data))
    except Exception as exc:
        raise ValueError(f"{sample.where()}: not a readable image: {exc}") from exc
    channels = _MODE_CHANNELS.get(image.mode)
    if (
        image.format != "JPEG"
        or image.size != (sample.width, sample.height)
        or (channels != sample.channels)
    ):
        raise ValueError(
            f"{sample.where()}: metadata says {sample.width}x{sample.height}x"
            f"{sample.channels} JPEG, bytes are {image.size[0]}x{image.size[1]} "
            f"{image.format} mode {image.mode}"
        )
    return image
