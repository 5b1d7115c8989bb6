"""Geometry: which region of the oriented source becomes which pixels of the output.

Pure arithmetic on sizes (no pixels): the crop box, the content size, the pad canvas
and offset for each resize mode, and the largest JPEG DCT scale-down that still leaves
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


def dct_reduction(geometry: Geometry, stored_w: int, stored_h: int) -> int:
    """Largest JPEG DCT scale-down that still leaves the crop >= the output pixels."""
    x0, y0, x1, y1 = geometry.box
    cw, ch = geometry.content
    for reduce in (8, 4, 2):
        fits = (x1 - x0) / reduce >= cw and (y1 - y0) / reduce >= ch
        if fits and stored_w >= 8 * reduce and stored_h >= 8 * reduce:
            return reduce
    return 1
