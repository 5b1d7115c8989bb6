"""sRGB -> CIELAB against the standard reference values, and Koalarization's targets."""

import io

import numpy as np
import pytest
from imgprep.kernels.lab import lab_targets, srgb_to_lab
from PIL import Image

REFERENCE = [
    # sRGB, (L, a, b), tolerance
    ((255, 255, 255), (100.0, 0.0, 0.0), 0.01),
    ((0, 0, 0), (0.0, 0.0, 0.0), 0.01),
    ((255, 0, 0), (53.24, 80.09, 67.20), 0.05),
    ((0, 255, 0), (87.73, -86.18, 83.18), 0.05),
    ((0, 0, 255), (32.30, 79.19, -107.86), 0.05),
    ((128, 128, 128), (53.59, 0.0, 0.0), 0.01),
]


@pytest.mark.parametrize(("rgb", "lab", "tol"), REFERENCE)
def test_known_colors(rgb, lab, tol):
    out = srgb_to_lab(np.array(rgb, dtype=np.uint8))
    assert out.dtype == np.float32
    assert out.shape == (3,)
    np.testing.assert_allclose(out, lab, atol=tol)


def test_vectorized_over_leading_axes():
    rgb = np.array([r for r, _, _ in REFERENCE], dtype=np.uint8).reshape(2, 3, 3)
    out = srgb_to_lab(rgb)
    assert out.shape == (2, 3, 3)
    for index, (one, _, _) in enumerate(REFERENCE):
        np.testing.assert_array_equal(
            out.reshape(-1, 3)[index], srgb_to_lab(np.array(one, np.uint8))
        )


def test_rejects_non_rgb():
    with pytest.raises(ValueError):
        srgb_to_lab(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError):
        srgb_to_lab(np.zeros((4, 3), np.float32))


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _colorful(size=(40, 30)) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def test_lab_targets_shapes_and_ranges():
    lum, ab = lab_targets(_jpeg(_colorful()), 24)
    assert lum.shape == (24, 24)
    assert ab.shape == (24, 24, 2)
    assert lum.dtype == ab.dtype == np.float32
    assert lum.min() >= -1.0 - 1e-6
    assert lum.max() <= 1.0 + 1e-6
    assert np.abs(ab).max() <= 1.0
    assert np.abs(ab).max() > 0.1  # a colorful image has color


def test_lab_targets_scaling_matches_srgb_to_lab():
    image = _colorful((16, 16))
    data = _jpeg(image)
    with Image.open(io.BytesIO(data)) as decoded:
        rgb = np.asarray(decoded.convert("RGB"))
    lab = srgb_to_lab(rgb)
    lum, ab = lab_targets(data, 16)  # already 16x16: no resize
    np.testing.assert_allclose(lum, lab[..., 0] / 50.0 - 1.0, atol=1e-5)
    np.testing.assert_allclose(ab, lab[..., 1:] / 127.0, atol=1e-6)


def test_gray_jpeg_has_no_color():
    gray = Image.fromarray(np.tile(np.arange(0, 256, 8, dtype=np.uint8), (20, 1)), mode="L")
    lum, ab = lab_targets(_jpeg(gray), 20)
    assert lum.shape == (20, 20)
    np.testing.assert_allclose(ab, 0.0, atol=1e-4)
    assert lum.min() < -0.8
    assert lum.max() > 0.8
