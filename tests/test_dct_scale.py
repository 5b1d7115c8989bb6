"""JPEG DCT scaling: the M/8 scale resize decodes at, and what fast_decode: eighths changes."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import itertools

import numpy as np
import pytest
import simplejpeg
from imgprep.config import section_config
from imgprep.kernels.decode import decode_jpeg_eighths
from imgprep.kernels.geometry import DCT_EIGHTHS, MODES, Geometry, dct_eighths
from imgprep.kernels.phash import pixels_sha256
from imgprep.kernels.resize import ResizeParams, resize_image
from PIL import Image

DEFAULTS = ResizeParams.from_config(section_config("resize"))


def params(**overrides) -> ResizeParams:
    return dataclasses.replace(DEFAULTS, **overrides)


def photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Smooth detail at a few scales plus grain (deterministic), uint8 RGB."""
    rng = np.random.default_rng(seed)
    acc = np.zeros((height, width, 3), np.float32)
    for cells, amplitude in ((4, 80), (24, 40)):
        coarse = rng.normal(0, 1, (max(2, cells * height // width), cells, 3))
        layer = Image.fromarray(np.clip(coarse * 40 + 128, 0, 255).astype(np.uint8))
        layer = layer.resize((width, height), Image.Resampling.BICUBIC)
        acc += (np.asarray(layer, np.float32) - 128) * amplitude / 40
    acc += rng.normal(0, 6, acc.shape)
    return np.clip(acc + 128, 0, 255).astype(np.uint8)


def jpeg(pixels: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=options.pop("quality", 90), **options)
    return buffer.getvalue()


def pixels_of(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data))).astype(np.int16)


def old_dct_reduction(geometry: Geometry, stored_w: int, stored_h: int) -> int:
    """The scale choice before M/8 (geometry.dct_reduction until issue 15), verbatim."""
    x0, y0, x1, y1 = geometry.box
    cw, ch = geometry.content
    for reduce in (8, 4, 2):
        fits = (x1 - x0) / reduce >= cw and (y1 - y0) / reduce >= ch
        if fits and stored_w >= 8 * reduce and stored_h >= 8 * reduce:
            return reduce
    return 1


# -- the scale --------------------------------------------------------------------------

SOURCES = [(w, h) for w in (7, 8, 40, 333, 375, 500, 640, 1000, 1600, 4000) for h in (9, 375, 999)]
TARGETS = [(256, 256), (300, 200), (64, 200), (1, 1), (299, 299)]


def geometries():
    for (w, h), (tw, th), mode, up, rotated in itertools.product(
        SOURCES, TARGETS, [m for m in MODES if m != "keep"], (False, True), (False, True)
    ):
        p = params(mode=mode, width=tw, height=th, upscale=up)
        # EXIF 5..8: the plan is made for the oriented (swapped) size, the decode is of
        # the stored one
        geometry = Geometry.plan(h, w, p) if rotated else Geometry.plan(w, h, p)
        yield geometry, w, h


def test_the_scale_is_the_smallest_eighth_that_keeps_the_output_pixels():
    checked = reduced = 0
    for geometry, w, h in geometries():
        x0, y0, x1, y1 = geometry.box
        cw, ch = geometry.content

        side = min(w, h)

        def keeps(m, across=x1 - x0, down=y1 - y0, cw=cw, ch=ch, side=side):
            crop_fits = across * m / 8 >= cw and down * m / 8 >= ch
            return m == 8 or (crop_fits and side * m / 8 >= 8)

        for fast_decode, scales in DCT_EIGHTHS.items():
            chosen = dct_eighths(geometry, w, h, fast_decode)
            assert keeps(chosen)
            assert not any(keeps(m) for m in scales if m < chosen), (geometry, w, h, chosen)
            reduced += chosen < 8
        # fast_decode: true is the choice made before M/8 existed (same bytes as before)
        assert dct_eighths(geometry, w, h) == 8 // old_dct_reduction(geometry, w, h)
        checked += 1
    assert checked == 2400 and reduced > 500


@pytest.mark.parametrize(
    ("size", "target", "eighths", "powers_of_two"),
    [
        ((500, 375), 256, 6, 8),  # crop 375: 6/8 gives 281 >= 256, 4/8 only 188
        ((500, 333), 256, 7, 8),
        ((1000, 800), 256, 3, 4),  # crop 800: 3/8 gives 300
        ((2048, 1536), 256, 2, 2),
        ((4000, 3000), 256, 1, 1),
        ((500, 375), 128, 3, 4),
        ((260, 260), 256, 8, 8),
    ],
)
def test_scale_examples(size, target, eighths, powers_of_two):
    geometry = Geometry.plan(*size, params(width=target, height=target))
    assert dct_eighths(geometry, *size, "eighths") == eighths
    assert dct_eighths(geometry, *size, True) == powers_of_two


# -- decoding at a scale ------------------------------------------------------------------


@pytest.mark.parametrize("size", [(8, 8), (13, 9), (101, 67), (1000, 800)])
def test_decode_at_every_eighth(size):
    """simplejpeg takes exactly the M/8 asked for, the same pixels every time, and they
    are the picture at that scale."""
    width, height = size
    data = jpeg(photo(width, height, seed=3))
    full = decode_jpeg_eighths(data, 3, 8, width, height).astype(np.float32)
    assert full.shape == (height, width, 3)
    for m in range(1, 8):
        pixels = decode_jpeg_eighths(data, 3, m, width, height)
        shape = (-(-height * m // 8), -(-width * m // 8), 3)
        assert pixels.shape == shape
        assert np.array_equal(pixels, decode_jpeg_eighths(data, 3, m, width, height))
        if width * m % 8 == 0 and height * m % 8 == 0 and min(shape[:2]) >= 8:
            planes = [
                Image.fromarray(full[:, :, c]).resize(shape[1::-1], Image.Resampling.BOX)
                for c in range(3)
            ]
            area = np.stack([np.asarray(p) for p in planes], axis=2)
            inner = (slice(1, -1), slice(1, -1))  # the last pixel covers the padded edge
            assert np.abs(pixels[inner] - area[inner]).mean() < 6


def test_decode_at_an_eighth_is_pinned():
    """The decoded pixels at 3/8, 5/8, 6/8, 7/8 of a file made by simplejpeg's own encoder:
    libjpeg-turbo's scaled IDCTs are integer C, the same on every CPU; this fails if a
    dependency update changes them (and with them the bytes fast_decode: eighths stores)."""
    data = simplejpeg.encode_jpeg(photo(120, 88, seed=5), quality=90, colorsubsampling="420")
    digests = {
        m: hashlib.sha256(decode_jpeg_eighths(data, 3, m, 120, 88).tobytes()).hexdigest()[:16]
        for m in (3, 5, 6, 7)
    }
    assert digests == PINNED_DIGESTS


PINNED_DIGESTS = {
    3: "0da8242de6174adc",
    5: "0a3d759b73996eab",
    6: "57a3dcc57b718e7a",
    7: "4633a977a9146ffa",
}  # simplejpeg 1.9.0 (libjpeg-turbo 3.1), numpy 2.4.6, Pillow 12.0.0


# -- resize with fast_decode: eighths -----------------------------------------------------


def test_eighths_decodes_at_six_eighths_for_500x375(decoded_shapes):
    data = jpeg(photo(500, 375, seed=1))
    today = resize_image(data, params())
    assert decoded_shapes[-1] == (375, 500)
    eighths = resize_image(data, params(fast_decode="eighths"))
    assert decoded_shapes[-1] == (282, 375)  # 6/8: crop 281.25 >= 256
    assert eighths.data == resize_image(data, params(fast_decode="eighths")).data
    assert eighths.data != today.data
    assert (eighths.width, eighths.height, eighths.crop) == (256, 256, today.crop)
    assert np.abs(pixels_of(eighths.data) - pixels_of(today.data)).mean() < 3


def test_the_scale_uses_the_oriented_crop(decoded_shapes):
    """Stored 1000x400, EXIF 6 (upright 400x1000), stretched to 300x100: 6/8 is needed
    across (400 * 6/8 = 300); the stored size alone would have allowed 3/8."""
    stored = photo(1000, 400, seed=2)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = jpeg(stored, exif=exif.tobytes())
    p = params(mode="stretch", width=300, height=100, fast_decode="eighths")
    result = resize_image(data, p)
    assert decoded_shapes[-1] == (300, 750)
    assert (result.width, result.height, result.orientation) == (300, 100, 6)
    full = resize_image(data, dataclasses.replace(p, fast_decode=False))
    assert np.abs(pixels_of(result.data) - pixels_of(full.data)).mean() < 3


@pytest.mark.parametrize("kind", ["gray source", "gray output", "progressive"])
def test_gray_and_progressive_jpegs(decoded_shapes, kind):
    pixels = photo(1000, 800, seed=4)
    if kind == "gray source":
        data = jpeg(np.asarray(Image.fromarray(pixels).convert("L")))
    else:
        data = jpeg(pixels, progressive=kind == "progressive")
    p = params(fast_decode="eighths", colorspace="gray" if kind == "gray output" else "rgb")
    result = resize_image(data, p)
    assert decoded_shapes[-1] == (300, 375)  # 3/8 of 1000x800: crop 300 >= 256
    assert (result.width, result.height) == (256, 256)
    full = resize_image(data, dataclasses.replace(p, fast_decode=False))
    assert result.channels == full.channels == (1 if kind == "gray output" else 3)
    assert np.abs(pixels_of(result.data) - pixels_of(full.data)).mean() < 3


def cmyk_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(photo(1000, 800, seed=6)).convert("CMYK").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(photo(1000, 800, seed=7)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("make", [cmyk_jpeg, png])
def test_what_pillow_decodes_is_unchanged(make):
    """CMYK JPEGs (Pillow's draft: powers of two) and other formats give fast_decode: true's
    bytes."""
    data = make()
    today = resize_image(data, params())
    assert resize_image(data, params(fast_decode="eighths")).data == today.data


@pytest.mark.parametrize("size", [(1000, 800), (500, 375)])  # 3/8 -> Pillow at 1/2; 6/8 -> 1/1
def test_fallback_to_pillow_is_fast_decode_trues(monkeypatch, size):
    """A file simplejpeg refuses (a libjpeg warning) goes to Pillow at the power of two
    fast_decode: true would use, with its bytes."""
    data = jpeg(photo(*size, seed=8))
    reference = resize_image(data, params())

    def refuse(*args, **kwargs):
        raise ValueError("Corrupt JPEG data: 1 extraneous bytes before marker 0xd9")

    monkeypatch.setattr(simplejpeg, "decode_jpeg", refuse)
    fallback = resize_image(data, params(fast_decode="eighths"))
    assert fallback.data == resize_image(data, params()).data
    assert np.abs(pixels_of(fallback.data) - pixels_of(reference.data)).mean() < 2


def test_pixels_digest_names_the_scale():
    data = jpeg(photo(500, 375, seed=9))
    result = resize_image(data, params(fast_decode="eighths"), pixels_digest=True)
    at_six = decode_jpeg_eighths(data, 3, 6, 500, 375)
    assert result.pixels_sha256 == pixels_sha256(at_six, "6/8 3")
    data = jpeg(photo(1200, 600, seed=9))  # 4/8 either way: the digest of before
    digests = {
        resize_image(data, params(fast_decode=fast), pixels_digest=True).pixels_sha256
        for fast in (True, "eighths")
    }
    assert digests == {pixels_sha256(decode_jpeg_eighths(data, 3, 4, 1200, 600), "1/2 3")}


@pytest.mark.parametrize("value", ["yes", "eighth", 1, None])
def test_fast_decode_takes_true_false_or_eighths(value):
    assert ResizeParams.from_config(section_config("resize", {"fast_decode": "eighths"}))
    with pytest.raises(ValueError, match=r"resize\.fast_decode"):
        ResizeParams.from_config(section_config("resize", {"fast_decode": value}))
    with pytest.raises(ValueError, match=r"resize\.fast_decode"):
        params(fast_decode=value)
