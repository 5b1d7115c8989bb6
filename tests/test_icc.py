"""Embedded ICC profiles: Adobe RGB pixels become sRGB pixels (resize.icc: convert), or
stay as stored (ignore); keep mode stores only JPEGs that need nothing done to them."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from helpers import SAMPLE
from imgprep.config import ConfigError, section_config, validate_config
from imgprep.kernels.resize import ResizeParams, resize_image
from PIL import Image, ImageCms

# Adobe RGB (1998): primaries adapted to the D50 connection space (as Adobe's own profile
# stores them) and a pure gamma of 563/256
ADOBE_D50 = np.array(
    [
        [0.6097559, 0.2052401, 0.1492029],
        [0.3111145, 0.6256714, 0.0632141],
        [0.0194702, 0.0608902, 0.7445679],
    ]
)
ADOBE_GAMMA = 563 / 256
SRGB_D50 = np.array(
    [
        [0.4360747, 0.3850649, 0.1430804],
        [0.2225045, 0.7168786, 0.0606169],
        [0.0139322, 0.0971045, 0.7141733],
    ]
)
D50 = (0.9642, 1.0, 0.8249)
PATCHES = [(60, 160, 60), (200, 60, 60), (40, 70, 200), (128, 128, 128)]


def _s15f16(*values: float) -> bytes:
    return b"".join(struct.pack(">i", round(v * 65536)) for v in values)


def rgb_profile(colorants: np.ndarray, gamma: float, name: str, padding: int = 0) -> bytes:
    """An ICC v2 matrix/TRC display profile, byte by byte (ImageCms can only create sRGB)."""
    description = name.encode("ascii") + b"\0"
    tags = {
        b"desc": b"desc\0\0\0\0"
        + struct.pack(">I", len(description))
        + description
        + b"\0" * (4 + 4 + 2 + 1 + 67),
        b"cprt": b"text\0\0\0\0" + b"public domain" + b"x" * padding + b"\0",
        b"wtpt": b"XYZ \0\0\0\0" + _s15f16(*D50),
        b"rXYZ": b"XYZ \0\0\0\0" + _s15f16(*colorants[:, 0]),
        b"gXYZ": b"XYZ \0\0\0\0" + _s15f16(*colorants[:, 1]),
        b"bXYZ": b"XYZ \0\0\0\0" + _s15f16(*colorants[:, 2]),
        b"rTRC": b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0",
    }
    tags[b"gTRC"] = tags[b"bTRC"] = tags[b"rTRC"]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for signature, body in tags.items():
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body + b"\0" * (-len(body) % 4)
    size = offset + len(data)
    header = struct.pack(">I4sI4s4s4s", size, b"none", 0x02100000, b"mntr", b"RGB ", b"XYZ ")
    header += struct.pack(">6H", 2024, 1, 1, 0, 0, 0) + b"acsp" + b"\0" * 24
    header += struct.pack(">I", 0) + _s15f16(*D50) + b"none"
    header += b"\0" * (128 - len(header))
    return header + struct.pack(">I", len(tags)) + table + data


ADOBE_RGB = rgb_profile(ADOBE_D50, ADOBE_GAMMA, "Adobe RGB (1998)")
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def adobe_to_srgb(rgb) -> np.ndarray:
    """The colour math, independent of littleCMS: Adobe RGB -> XYZ (D50) -> sRGB."""
    linear = (np.asarray(rgb, float) / 255) ** ADOBE_GAMMA
    srgb = np.clip(np.linalg.solve(SRGB_D50, ADOBE_D50 @ linear), 0, 1)
    encoded = np.where(srgb <= 0.0031308, 12.92 * srgb, 1.055 * srgb ** (1 / 2.4) - 0.055)
    return encoded * 255


def patches(side: int = 64) -> Image.Image:
    """Four flat quadrants, one per colour of PATCHES."""
    half = side // 2
    pixels = np.empty((side, side, 3), np.uint8)
    for i, colour in enumerate(PATCHES):
        pixels[(i // 2) * half : (i // 2 + 1) * half, (i % 2) * half : (i % 2 + 1) * half] = colour
    return Image.fromarray(pixels, "RGB")


def encoded(image: Image.Image, fmt="JPEG", **options) -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG":
        options = {"quality": 100, "subsampling": 0, **options}
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def patch_colours(jpeg: bytes) -> np.ndarray:
    """Mean colour of the middle of each quadrant of a decoded JPEG."""
    with Image.open(io.BytesIO(jpeg)) as image:
        pixels = np.asarray(image.convert("RGB"), float)
    side = pixels.shape[0]
    half, q = side // 2, side // 8
    return np.array(
        [
            pixels[
                (i // 2) * half + q : (i // 2 + 1) * half - q,
                (i % 2) * half + q : (i % 2 + 1) * half - q,
            ].mean(axis=(0, 1))
            for i in range(4)
        ]
    )


SAME_SIZE = {"mode": "stretch", "size": 64, "quality": 100, "subsampling": "4:4:4"}


def params(**overrides) -> ResizeParams:
    return ResizeParams.from_config(section_config("resize", {**SAME_SIZE, **overrides}))


def test_the_test_profile_is_adobe_rgb_to_littlecms():
    profile = ImageCms.ImageCmsProfile(io.BytesIO(ADOBE_RGB))
    assert ImageCms.getProfileDescription(profile).strip() == "Adobe RGB (1998)"
    expected = adobe_to_srgb(np.array(PATCHES).T).T
    assert np.abs(expected - np.array(PATCHES)).max() > 20  # a real colour shift


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_an_adobe_rgb_image_is_stored_as_srgb(fmt):
    data = encoded(patches(), fmt, icc_profile=ADOBE_RGB)
    result = resize_image(data, params())
    assert result.icc == "converted"
    expected = adobe_to_srgb(np.array(PATCHES).T).T
    assert np.abs(patch_colours(result.data) - expected).max() < 3


def test_ignore_keeps_the_stored_numbers():
    data = encoded(patches(), icc_profile=ADOBE_RGB)
    result = resize_image(data, params(icc="ignore"))
    assert result.icc == "ignored"
    assert np.abs(patch_colours(result.data) - np.array(PATCHES)).max() < 2


def test_conversion_holds_on_every_decoding_path():
    expected = adobe_to_srgb(np.array(PATCHES).T).T
    big = encoded(patches(512), icc_profile=ADOBE_RGB)  # DCT-scaled decode to 64 px
    result = resize_image(big, params(mode="center-crop"))
    assert result.icc == "converted"
    assert np.abs(patch_colours(result.data) - expected).max() < 3
    # a profile over 64 KB travels in several APP2 chunks
    large = rgb_profile(ADOBE_D50, ADOBE_GAMMA, "Adobe RGB (1998)", padding=150_000)
    result = resize_image(encoded(patches(), icc_profile=large), params())
    assert result.icc == "converted"
    assert np.abs(patch_colours(result.data) - expected).max() < 3
    # alpha (PNG RGBA) is composited over fill after the conversion, fill stays sRGB
    rgba = patches().convert("RGBA")
    rgba.putalpha(255)
    result = resize_image(encoded(rgba, "PNG", icc_profile=ADOBE_RGB), params())
    assert np.abs(patch_colours(result.data) - expected).max() < 3
    # gray output: the luma of the sRGB colours, not of the stored numbers
    result = resize_image(encoded(patches(), icc_profile=ADOBE_RGB), params(colorspace="gray"))
    luma = expected @ np.array([0.299, 0.587, 0.114])
    assert np.abs(patch_colours(result.data)[:, 0] - luma).max() < 3


def test_srgb_and_unusable_profiles_change_no_byte():
    plain = resize_image(encoded(patches()), params())
    assert plain.icc == "none"
    for profile, state in [(SRGB, "srgb"), (b"not a profile at all", "unusable")]:
        for fmt in ("JPEG", "PNG"):
            without = resize_image(encoded(patches(), fmt), params(mode="center-crop", size=48))
            tagged = encoded(patches(), fmt, icc_profile=profile)
            result = resize_image(tagged, params(mode="center-crop", size=48))
            assert result.icc == state
            assert result.data == without.data


def test_keep_stores_only_clean_jpegs():
    clean = encoded(patches(), quality=90, subsampling=2)
    kept = resize_image(clean, params(mode="keep"))
    assert kept.kept and kept.data == clean
    # data after the end marker (another file, anything) is not passed through
    for tail in (b"PK\x03\x04 a zip after the image", clean):
        result = resize_image(clean + tail, params(mode="keep"))
        assert not result.kept
        assert tail not in result.data
        assert result.data.endswith(b"\xff\xd9")
        assert np.abs(patch_colours(result.data) - patch_colours(clean)).max() < 3
    # a profile to convert: re-encoded as sRGB
    adobe = encoded(patches(), quality=90, subsampling=2, icc_profile=ADOBE_RGB)
    result = resize_image(adobe, params(mode="keep"))
    assert not result.kept and result.icc == "converted"
    expected = adobe_to_srgb(np.array(PATCHES).T).T
    assert np.abs(patch_colours(result.data) - expected).max() < 4
    # ignore: the old behaviour, stored as it is
    assert resize_image(adobe, params(mode="keep", icc="ignore")).kept
    # an sRGB profile needs nothing
    srgb = encoded(patches(), quality=90, subsampling=2, icc_profile=SRGB)
    assert resize_image(srgb, params(mode="keep")).kept


def test_the_icc_key_is_checked():
    with pytest.raises(ValueError, match="resize.icc"):
        ResizeParams.from_config({**section_config("resize"), "icc": "keep"})
    config = {"source": {"root": str(SAMPLE)}}
    with pytest.raises(ConfigError, match="'resize.icc'"):
        validate_config({**config, "resize": {"icc": "drop"}})
    assert validate_config(config)["resize"]["icc"] == "convert"
