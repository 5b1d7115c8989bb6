"""Geometry: which region of the oriented source becomes which pixels of the output.

Pure arithmetic on sizes (no pixels): the crop box, the content size, the pad canvas
and offset for each resize mode, and the smallest JPEG DCT scale (M/8) that still leaves
the crop at least the output's pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MODES = ("stretch", "center-crop", "shorter-side", "pad", "keep")


def round_half_up(value: float) -> int:
    return int(math.floor(value + 0.5))


@dataclass(frozen=True)
class Geometry:
    """Where the output's pixels come from, in oriented source pixels."""

    box: tuple[float, float, float, float]  # source region that is resampled
    content: tuple[int, int]  # its size in the output
    canvas: tuple[int, int]  # output size (pad: the full canvas)
    offset: tuple[int, int]  # content's top-left corner on the canvas

    @property
    def identity(self) -> bool:
        """The content is the box's pixels as they are: no resampling at all."""
        return is_identity(self.box, self.content, (1.0, 1.0))

    @classmethod
    def plan(cls, width: int, height: int, params) -> Geometry:
        """For an oriented width x height source and a ResizeParams (mode, size, upscale)."""
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
                cw = min(width, max(1, round_half_up(crop_w)))
                ch = min(height, max(1, round_half_up(crop_h)))
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
                size = (short, max(1, round_half_up(height * factor)))
            else:
                size = (max(1, round_half_up(width * factor)), short)
            return cls(full, size, size, (0, 0))
        # pad
        factor = min(tw / width, th / height)
        if factor >= 1 and not up:
            size = (width, height)
        elif tw / width <= th / height:
            size = (tw, min(th, max(1, round_half_up(height * factor))))
        else:
            size = (min(tw, max(1, round_half_up(width * factor))), th)
        offset = ((tw - size[0]) // 2, (th - size[1]) // 2)
        return cls(full, size, (tw, th), offset)


def is_identity(box, size, scale) -> bool:
    x0, y0, x1, y1 = box[0] * scale[0], box[1] * scale[1], box[2] * scale[0], box[3] * scale[1]
    return x0 == int(x0) and y0 == int(y0) and x1 - x0 == size[0] and y1 - y0 == size[1]


# DCT scales M/8 (M < 8) libjpeg-turbo decodes at, by resize.fast_decode: true uses the
# powers of two only, whose IDCTs are SIMD (and Pillow's draft offers the same ones);
# "eighths" every M/8, where 3, 5, 6 and 7 run libjpeg-turbo's scalar IDCTs (plus
# 6x6..14x14 ones for 4:2:0 chroma): slower than a full decode at 6/8 and 7/8 on ImageNet's
# 500 px photos, and 1-2 dB further from an area-averaged full decode (README,
# benchmarks/bench_resize.py)
DCT_EIGHTHS = {True: (1, 2, 4), "eighths": (1, 2, 3, 4, 5, 6, 7)}


def dct_eighths(geometry: Geometry, stored_w: int, stored_h: int, fast_decode=True) -> int:
    """Smallest M of ``DCT_EIGHTHS[fast_decode]`` for which M/8 of the crop still has at
    least the output's pixels on both axes and the decoded image at least 8 px a side; 8
    (a full decode) when none does. ``stored_w x stored_h``: the file's size (decoded
    before it is oriented); ``geometry``'s box is in oriented pixels, as planned."""
    x0, y0, x1, y1 = geometry.box
    cw, ch = geometry.content
    for eighths in DCT_EIGHTHS[fast_decode]:
        fits = (x1 - x0) * eighths >= 8 * cw and (y1 - y0) * eighths >= 8 * ch
        # >= 8 px a side: also makes ceil(side * M / 8) grow with M, so the decoded shape
        # tells which scale libjpeg-turbo chose
        if fits and stored_w * eighths >= 64 and stored_h * eighths >= 64:
            return eighths
    return 8
