"""resize_image: sizes, pixels, colours, orientation and rejections, checked on decoded output."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import simplejpeg
from imgprep.config import section_config
from imgprep.kernels import resample
from imgprep.kernels.resize import RejectedImage, ResizeParams, resize_image
from PIL import Image, ImageOps

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


# -- builders -------------------------------------------------------------------------


def encode(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG":
        options.setdefault("quality", 95)
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def decode(data: bytes) -> np.ndarray:
    """Pixels as stored: (h, w, 3) for RGB JPEGs, (h, w) for gray ones."""
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG"
    return np.asarray(image).astype(np.int16)


def solid(color, size=(64, 48), mode="RGB") -> Image.Image:
    return Image.new(mode, size, color)


def bands(colors, size, vertical=True) -> Image.Image:
    """Equal bands of colour, left to right (or top to bottom)."""
    width, height = size
    pixels = np.zeros((height, width, 3), np.uint8)
    n = len(colors)
    for i, color in enumerate(colors):
        if vertical:
            pixels[:, i * width // n : (i + 1) * width // n] = color
        else:
            pixels[i * height // n : (i + 1) * height // n] = color
    return Image.fromarray(pixels)


def texture(size=(500, 375), seed=0) -> Image.Image:
    """Photo-like detail at several scales (deterministic)."""
    rng = np.random.default_rng(seed)
    width, height = size
    acc = np.zeros((height, width, 3), np.float32)
    for cells, amplitude in ((4, 80), (24, 40), (96, 20)):
        coarse = rng.normal(0, 1, (max(2, cells * height // width), cells, 3))
        layer = Image.fromarray(np.clip(coarse * 40 + 128, 0, 255).astype(np.uint8))
        acc += (np.asarray(layer.resize(size, Image.Resampling.BICUBIC), np.float32) - 128) * (
            amplitude / 40
        )
    return Image.fromarray(np.clip(acc + 128, 0, 255).astype(np.uint8))


def params(**overrides) -> ResizeParams:
    """The schema's defaults with ``overrides`` (ResizeParams field names)."""
    return dataclasses.replace(ResizeParams.from_config(section_config("resize")), **overrides)


def run(data: bytes, **overrides):
    result = resize_image(data, params(**overrides))
    check_metadata(result)
    return result


def check_metadata(result) -> None:
    """What the metadata says is what decoding the stored bytes gives."""
    image = Image.open(io.BytesIO(result.data))
    assert image.format == "JPEG"
    assert image.size == (result.width, result.height)
    channels = {"L": 1, "RGB": 3}[image.mode]
    assert channels == result.channels
    assert result.colorspace == {1: "Grayscale", 3: "RGB"}[channels]
    height, width = simplejpeg.decode_jpeg_header(result.data)[:2]
    assert (width, height) == (result.width, result.height)


def mean_color(pixels: np.ndarray) -> np.ndarray:
    return pixels.reshape(-1, pixels.shape[-1]).mean(axis=0) if pixels.ndim == 3 else pixels.mean()


# -- parameters -----------------------------------------------------------------------


def test_from_config_defaults_and_sizes():
    defaults = ResizeParams.from_config(section_config("resize"))
    assert (defaults.mode, defaults.width, defaults.height) == ("center-crop", 256, 256)
    assert (defaults.filter, defaults.quality, defaults.fill) == ("bicubic", 90, (0, 0, 0))
    p = ResizeParams.from_config(
        section_config("resize", {"size": [320, 240], "fill": [1, 2, 3], "mode": "pad"})
    )
    assert (p.width, p.height, p.fill, p.mode) == (320, 240, (1, 2, 3), "pad")
    assert ResizeParams.from_config(section_config("resize", {"size": 128})).width == 128


def test_from_config_wants_the_validated_mapping():
    """Defaults are the schema's alone: a partial mapping is refused, naming the key."""
    partial = section_config("resize")
    del partial["icc"]
    with pytest.raises(ValueError, match=r"resize\.icc: missing"):
        ResizeParams.from_config(partial)


@pytest.mark.parametrize(
    ("cfg", "key"),
    [
        ({"mode": "squash"}, "resize.mode"),
        ({"size": [1, 2, 3]}, "resize.size"),
        ({"size": 0}, "resize.size"),
        ({"size": "big"}, "resize.size"),
        ({"quality": 101}, "resize.quality"),
        ({"quality": True}, "resize.quality"),
        ({"filter": "cubic"}, "resize.filter"),
        ({"colorspace": "cmyk"}, "resize.colorspace"),
        ({"gray_matrix": "srgb"}, "resize.gray_matrix"),
        ({"subsampling": "4:1:1"}, "resize.subsampling"),
        ({"fill": [0, 0]}, "resize.fill"),
        ({"fill": [0, 0, 256]}, "resize.fill"),
        ({"upscale": "yes"}, "resize.upscale"),
        ({"fast_decode": 1}, "resize.fast_decode"),
        ({"sise": 3}, "resize.sise"),
    ],
)
def test_from_config_names_the_bad_key(cfg, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        ResizeParams.from_config({**section_config("resize"), **cfg})


# -- output sizes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "source", "upscale", "size", "expected"),
    [
        ("stretch", (500, 375), False, 256, (256, 256)),
        ("stretch", (100, 80), False, 256, (100, 80)),
        ("stretch", (100, 80), True, 256, (256, 256)),
        ("stretch", (300, 100), False, 256, (256, 100)),  # each side clamped on its own
        ("center-crop", (500, 375), False, 256, (256, 256)),
        ("center-crop", (375, 500), False, 256, (256, 256)),
        ("center-crop", (200, 100), False, 256, (100, 100)),
        ("center-crop", (200, 100), True, 256, (256, 256)),
        ("center-crop", (300, 200), False, 256, (200, 200)),
        ("center-crop", (1000, 1000), False, (320, 240), (320, 240)),
        ("center-crop", (200, 200), False, (320, 240), (200, 150)),
        ("shorter-side", (500, 375), False, 256, (341, 256)),
        ("shorter-side", (375, 500), False, 256, (256, 341)),
        ("shorter-side", (200, 100), False, 256, (200, 100)),
        ("shorter-side", (200, 100), True, 256, (512, 256)),
        ("shorter-side", (600, 400), False, (300, 200), (300, 200)),
        ("pad", (500, 375), False, 256, (256, 256)),
        ("pad", (100, 50), False, 256, (256, 256)),
        ("pad", (100, 50), True, 256, (256, 256)),
        ("pad", (375, 500), False, (200, 100), (200, 100)),
        ("keep", (500, 375), False, 256, (500, 375)),
        ("keep", (30, 20), True, 256, (30, 20)),
    ],
)
@pytest.mark.parametrize("colorspace", ["rgb", "gray"])
def test_output_size(mode, source, upscale, size, expected, colorspace):
    width, height = (size, size) if isinstance(size, int) else size
    data = encode(texture(source), quality=90)
    result = run(
        data, mode=mode, width=width, height=height, upscale=upscale, colorspace=colorspace
    )
    assert (result.width, result.height) == expected
    assert (result.source_width, result.source_height) == source


@pytest.mark.parametrize(
    ("source", "upscale", "content", "offset"),
    [
        ((500, 375), False, (256, 192), (0, 32)),
        ((375, 500), False, (192, 256), (32, 0)),
        ((100, 50), False, (100, 50), (78, 103)),
        ((100, 50), True, (256, 128), (0, 64)),
    ],
)
def test_pad_geometry(source, upscale, content, offset):
    result = run(encode(texture(source)), mode="pad", upscale=upscale)
    assert result.pad == (*offset, *content)
    assert result.crop == (0.0, 0.0, float(source[0]), float(source[1]))


# -- where the pixels come from -------------------------------------------------------


@pytest.mark.parametrize("vertical", [True, False])
@pytest.mark.parametrize("fast_decode", [True, False])
def test_center_crop_takes_the_middle(vertical, fast_decode):
    size = (768, 256) if vertical else (256, 768)
    data = encode(bands([RED, GREEN, BLUE], size, vertical), quality=100, subsampling=0)
    result = run(data, quality=100, subsampling="4:4:4", fast_decode=fast_decode)
    pixels = decode(result.data)
    assert pixels.shape == (256, 256, 3)
    inner = pixels[8:-8, 8:-8]  # JPEG and the filter blur the crop's edges a little
    assert np.abs(inner - np.array(GREEN)).max() <= 6
    assert result.crop == ((256.0, 0.0, 512.0, 256.0) if vertical else (0.0, 256.0, 256.0, 512.0))


def test_center_crop_downscales_the_middle():
    data = encode(bands([RED, GREEN, BLUE], (1536, 512)), quality=100, subsampling=0)
    result = run(data, quality=100, subsampling="4:4:4")
    pixels = decode(result.data)
    assert np.abs(pixels[16:-16, 16:-16] - np.array(GREEN)).max() <= 6
    assert result.crop == (512.0, 0.0, 1024.0, 512.0)


@pytest.mark.parametrize("colorspace", ["rgb", "gray"])
@pytest.mark.parametrize("upscale", [False, True])
def test_pad_fills_the_bars(colorspace, upscale):
    source = (200, 100) if upscale else (512, 256)
    data = encode(solid(BLUE, source), quality=100, subsampling=0)
    fill = (255, 200, 0)
    result = run(data, mode="pad", fill=fill, quality=100, subsampling="4:4:4",
                 colorspace=colorspace, upscale=upscale)  # fmt: skip
    assert result.pad == (0, 64, 256, 128)
    pixels = decode(result.data)
    if colorspace == "gray":
        fill_luma = (19595 * 255 + 38470 * 200) / 65536
        blue_luma = 7471 * 255 / 65536
        assert abs(pixels[:56].mean() - fill_luma) < 2
        assert abs(pixels[-56:].mean() - fill_luma) < 2
        assert abs(pixels[72:184].mean() - blue_luma) < 2
    else:
        assert np.abs(pixels[:56] - np.array(fill)).max() <= 4
        assert np.abs(pixels[-56:] - np.array(fill)).max() <= 4
        assert np.abs(pixels[72:184] - np.array(BLUE)).max() <= 4


def test_pad_small_image_is_centred_unscaled():
    picture = texture((100, 50), seed=3)
    data = encode(picture, "PNG")
    result = run(data, mode="pad", fill=(10, 20, 30), quality=100, subsampling="4:4:4")
    pixels = decode(result.data)
    inside = pixels[103:153, 78:178]
    assert np.abs(inside - np.asarray(picture)).mean() < 2
    assert np.abs(pixels[:100, :70] - np.array((10, 20, 30))).max() <= 3


def test_stretch_ignores_aspect():
    data = encode(bands([(0, 0, 0), (255, 255, 255)], (800, 200)), quality=100, subsampling=0)
    result = run(data, mode="stretch", width=200, height=200, quality=100, subsampling="4:4:4")
    pixels = decode(result.data)
    assert pixels.shape == (200, 200, 3)
    assert pixels[:, :90].mean() < 5
    assert pixels[:, 110:].mean() > 250


def test_shorter_side_keeps_aspect():
    data = encode(bands([RED, BLUE], (600, 300)), quality=100, subsampling=0)
    result = run(data, mode="shorter-side", quality=100, subsampling="4:4:4")
    assert (result.width, result.height) == (512, 256)
    pixels = decode(result.data)
    assert np.abs(pixels[:, :240] - np.array(RED)).max() <= 6
    assert np.abs(pixels[:, 272:] - np.array(BLUE)).max() <= 6


def test_small_images_are_not_upscaled_and_keep_their_pixels():
    picture = texture((120, 90), seed=5)
    data = encode(picture, "PNG")
    result = run(data, mode="center-crop", quality=100, subsampling="4:4:4")
    assert (result.width, result.height) == (90, 90)
    assert result.crop == (15.0, 0.0, 105.0, 90.0)
    expected = np.asarray(picture)[:, 15:105].astype(np.int16)
    assert np.abs(decode(result.data) - expected).mean() < 1.5


@pytest.mark.parametrize("filter_name", resample.FILTERS)
def test_filters_match_pillow(filter_name):
    """Same kernels as Pillow: the difference is JPEG noise, not resampling."""
    picture = texture((500, 375), seed=1)
    data = encode(picture, "PNG")
    result = run(data, filter=filter_name, quality=100, subsampling="4:4:4")
    resample = getattr(Image.Resampling, filter_name.upper())
    reference = picture.resize((256, 256), resample, box=(62.5, 0, 437.5, 375))
    diff = np.abs(decode(result.data) - np.asarray(reference).astype(np.int16))
    assert diff.mean() < 1.0
    assert np.percentile(diff, 99) <= 4


def test_photo_like_jpeg_is_as_good_as_pillow_resize_and_save():
    """Against Pillow's own resize, our stored JPEG is as close as Pillow's saved one."""
    data = encode(texture((500, 375), seed=2), quality=92)
    result = run(data)
    source = Image.open(io.BytesIO(data)).convert("RGB")
    reference = source.resize((256, 256), Image.Resampling.BICUBIC, box=(62.5, 0, 437.5, 375))
    pillow_saved = decode(encode(reference, quality=90))
    target = np.asarray(reference).astype(np.int16)
    ours = np.abs(decode(result.data) - target).mean()
    theirs = np.abs(pillow_saved - target).mean()
    assert ours < theirs * 1.1 + 0.1


@pytest.mark.parametrize("subsampling", ["4:4:4", "4:2:2", "4:2:0"])
def test_subsampling_and_quality_are_honoured(subsampling):
    data = encode(texture((500, 375)))
    high = run(data, subsampling=subsampling, quality=95)
    low = run(data, subsampling=subsampling, quality=40)
    name = subsampling.replace(":", "")
    assert simplejpeg.decode_jpeg_header(high.data)[3] == name
    assert len(low.data) < len(high.data)


def test_output_is_deterministic():
    data = encode(texture((640, 480), seed=9))
    for overrides in ({}, {"colorspace": "gray"}, {"mode": "pad"}, {"mode": "stretch"}):
        assert run(data, **overrides).data == run(data, **overrides).data


@pytest.mark.parametrize("size", [(255, 257), (151, 151), (7, 5)])
@pytest.mark.parametrize("colorspace", ["rgb", "gray"])
def test_odd_sizes_are_deterministic(size, colorspace):
    """libjpeg-turbo reads planes past their edge: bytes must not depend on memory."""
    data = encode(texture((600, 600), seed=4))
    results = {
        run(data, mode="stretch", width=size[0], height=size[1], colorspace=colorspace).data
        for _ in range(6)
    }
    assert len(results) == 1


@pytest.mark.parametrize("color", [(255, 255, 255), (0, 0, 0), (128, 128, 128), (37, 37, 37)])
@pytest.mark.parametrize("mode", ["center-crop", "pad", "stretch"])
def test_flat_grays_stay_exact(color, mode):
    """Weight rows sum exactly: white stays 255 and gray stays neutral, not off by one."""
    data = encode(solid(color, (500, 375)), "PNG")
    result = run(data, mode=mode, fill=color, quality=100, subsampling="4:4:4")
    assert np.array_equal(np.unique(decode(result.data)), [color[0]])


def test_blocking_does_not_change_the_bytes(monkeypatch):
    """Exact arithmetic: how the matrix products are cut up cannot change a bit."""
    data = encode(texture((640, 480), seed=11))
    outputs = set()
    for size in (None, 2, 5, 32):
        for cached in (resample._rows_band, resample._cols_band):
            cached.cache_clear()
        if size is not None:
            monkeypatch.setattr(resample, "_pick_block", lambda *args, size=size: size)
        for overrides in ({}, {"colorspace": "gray", "gray_matrix": "rec709"}, {"mode": "pad"}):
            outputs.add((str(overrides), run(data, **overrides).data))
    for cached in (resample._rows_band, resample._cols_band):
        cached.cache_clear()
    assert len(outputs) == 3


# -- keep -----------------------------------------------------------------------------


def test_keep_stores_a_clean_baseline_jpeg_unchanged():
    data = encode(texture((300, 200)), quality=90)
    result = run(data, mode="keep")
    assert result.kept and result.data == data
    assert (result.width, result.height, result.channels) == (300, 200, 3)


def test_keep_stores_a_gray_jpeg_unchanged_for_a_gray_target():
    data = encode(texture((300, 200)).convert("L"), quality=90)
    result = run(data, mode="keep", colorspace="gray")
    assert result.kept and result.data == data


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


@pytest.mark.parametrize(
    ("name", "data", "colorspace", "size"),
    [
        ("progressive", encode(texture((300, 200)), progressive=True), "rgb", (300, 200)),
        ("cmyk", encode(texture((300, 200)).convert("CMYK")), "rgb", (300, 200)),
        ("png", encode(texture((300, 200)), "PNG"), "rgb", (300, 200)),
        ("rotated", encode(texture((300, 200)), exif=_exif(6)), "rgb", (200, 300)),
        ("gray-for-rgb", encode(texture((300, 200)).convert("L")), "rgb", (300, 200)),
        ("rgb-for-gray", encode(texture((300, 200))), "gray", (300, 200)),
    ],
)
def test_keep_reencodes_what_is_not_clean(name, data, colorspace, size):
    result = run(data, mode="keep", colorspace=colorspace)
    assert not result.kept and result.data != data
    assert (result.width, result.height) == size


def test_keep_still_rejects_a_truncated_jpeg():
    data = encode(texture((300, 200)))
    with pytest.raises(RejectedImage, match="truncated"):
        resize_image(data[: len(data) * 6 // 10], params(mode="keep"))


# -- orientation ----------------------------------------------------------------------

# stored picture = inverse of the correction the tag asks for
_STORE = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def upright_marker() -> Image.Image:
    """Blue 96x64 picture: red block top-left, green block top-right."""
    pixels = np.zeros((64, 96, 3), np.uint8)
    pixels[:] = BLUE
    pixels[:24, :24] = RED
    pixels[:24, -24:] = GREEN
    return Image.fromarray(pixels)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_gives_the_upright_picture(orientation, fmt):
    upright = upright_marker()
    stored = upright if _STORE[orientation] is None else upright.transpose(_STORE[orientation])
    options = {"quality": 100, "subsampling": 0} if fmt == "JPEG" else {}
    data = encode(stored, fmt, exif=_exif(orientation), **options)
    # Pillow agrees on what the tag means
    assert ImageOps.exif_transpose(Image.open(io.BytesIO(data))).size == (96, 64)
    result = run(data, mode="stretch", width=96, height=64, quality=100, subsampling="4:4:4")
    assert result.orientation == orientation
    assert (result.source_width, result.source_height) == stored.size
    pixels = decode(result.data)
    assert pixels.shape == (64, 96, 3)
    assert np.abs(pixels[4:20, 4:20] - np.array(RED)).max() <= 8
    assert np.abs(pixels[4:20, -20:-4] - np.array(GREEN)).max() <= 8
    assert np.abs(pixels[40:60, 40:56] - np.array(BLUE)).max() <= 8


def test_crop_is_in_oriented_coordinates():
    stored = texture((300, 600))  # stored portrait, upright landscape after orientation 6
    result = run(encode(stored, exif=_exif(6)))
    assert result.orientation == 6
    assert (result.source_width, result.source_height) == (300, 600)
    assert result.crop == (150.0, 0.0, 450.0, 300.0)


# -- colour ---------------------------------------------------------------------------


def test_cmyk_jpeg_keeps_its_colours():
    for color in (RED, GREEN, BLUE, (200, 150, 50)):
        data = encode(solid(color, (300, 300)).convert("CMYK"), quality=100)
        assert Image.open(io.BytesIO(data)).mode == "CMYK"
        result = run(data, quality=100, subsampling="4:4:4")
        assert result.source_mode == "CMYK"
        assert np.abs(mean_color(decode(result.data)) - np.array(color)).max() < 4


def test_adobe_cmyk_jpeg_is_not_inverted():
    """Pillow writes CMYK JPEGs Adobe-style (inverted); decoding must undo that."""
    image = solid((30, 120, 220), (200, 200))
    data = encode(image.convert("CMYK"), quality=100)
    assert b"Adobe" in data[:200]
    result = run(data, quality=100, subsampling="4:4:4")
    assert np.abs(mean_color(decode(result.data)) - np.array((30, 120, 220))).max() < 4


@pytest.mark.parametrize(
    ("color", "matrix", "expected"),
    [
        (RED, "rec601", 0.299 * 255),
        (GREEN, "rec601", 0.587 * 255),
        (BLUE, "rec601", 0.114 * 255),
        (RED, "rec709", 0.2126 * 255),
        (GREEN, "rec709", 0.7152 * 255),
        (BLUE, "rec709", 0.0722 * 255),
    ],
)
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("mode", ["center-crop", "keep"])
def test_gray_luma_weights(color, matrix, expected, fmt, mode):
    options = {"quality": 100, "subsampling": 0} if fmt == "JPEG" else {}
    data = encode(solid(color, (300, 300)), fmt, **options)
    result = run(data, mode=mode, colorspace="gray", gray_matrix=matrix, quality=100)
    assert (result.channels, result.colorspace) == (1, "Grayscale")
    assert abs(decode(result.data).mean() - expected) < 1.5


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("mode", ["center-crop", "keep", "pad"])
def test_gray_source_to_rgb_target_has_three_equal_channels(fmt, mode):
    data = encode(texture((300, 200)).convert("L"), fmt)
    result = run(data, mode=mode, fill=(128, 128, 128))
    assert (result.channels, result.colorspace, result.source_mode) == (3, "RGB", "L")
    pixels = decode(result.data)
    assert pixels.shape[2] == 3
    assert np.array_equal(pixels[..., 0], pixels[..., 1])
    assert np.array_equal(pixels[..., 1], pixels[..., 2])


def test_palette_with_transparency_is_composited_over_fill():
    pixels = np.zeros((100, 100), np.uint8)
    pixels[:, 50:] = 1  # index 0 transparent, index 1 red
    image = Image.fromarray(pixels, "P")
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    data = encode(image, "PNG", transparency=0)
    result = run(data, fill=GREEN, quality=100, subsampling="4:4:4", mode="stretch")
    assert result.source_mode == "P"
    out = decode(result.data)
    assert np.abs(out[:, :40] - np.array(GREEN)).max() <= 4
    assert np.abs(out[:, 60:] - np.array(RED)).max() <= 4


def test_palette_without_transparency():
    image = solid((40, 80, 160), (100, 100)).convert("P")
    result = run(encode(image, "GIF"), quality=100, subsampling="4:4:4")
    assert (result.source_format, result.source_mode) == ("GIF", "P")
    assert np.abs(mean_color(decode(result.data)) - np.array((40, 80, 160))).max() < 4


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_composited_over_fill(mode):
    pixels = np.zeros((100, 100, 4), np.uint8)
    pixels[..., :3] = 255  # white
    pixels[:, 50:, 3] = 255  # right half opaque
    pixels[:, :50, 3] = 0  # left half transparent
    pixels[:50, :50, 3] = 128  # top-left half transparent
    image = Image.fromarray(pixels, "RGBA").convert(mode)
    fill = (0, 0, 255)
    result = run(encode(image, "PNG"), fill=fill, mode="stretch", quality=100, subsampling="4:4:4")
    assert result.source_mode == mode
    out = decode(result.data)
    assert np.abs(out[60:, 5:40] - np.array(fill)).max() <= 4  # transparent: fill
    assert np.abs(out[:, 60:] - 255).max() <= 4  # opaque: the picture
    assert np.abs(out[5:40, 5:40] - np.array((128, 128, 255))).max() <= 5  # half: blend


@pytest.mark.parametrize("colorspace", ["rgb", "gray"])
def test_16_bit_png_is_scaled_not_clipped(colorspace):
    pixels = np.zeros((64, 96), np.uint16)
    pixels[:, :32] = 32768
    pixels[:, 32:64] = 65535
    image = Image.fromarray(pixels)
    assert image.mode == "I;16"
    result = run(encode(image, "PNG"), mode="stretch", colorspace=colorspace, quality=100,
                 subsampling="4:4:4", width=96, height=64)  # fmt: skip
    assert result.source_mode == "I;16"
    out = decode(result.data)
    gray = out if out.ndim == 2 else out[..., 0]
    assert abs(gray[:, 4:28].mean() - 128) <= 1.5
    assert abs(gray[:, 36:60].mean() - 255) <= 1.5
    assert abs(gray[:, 68:].mean() - 0) <= 1.5


@pytest.mark.parametrize(
    ("fmt", "options"),
    [
        ("PNG", {}),
        ("GIF", {}),
        ("BMP", {}),
        ("TIFF", {}),
        ("WEBP", {"lossless": True}),
    ],
)
def test_other_formats_by_content(fmt, options):
    color = (200, 40, 90)
    result = run(encode(solid(color, (300, 200)), fmt, **options), quality=100, subsampling="4:4:4")
    assert result.source_format == fmt
    tolerance = 12 if fmt == "GIF" else 4  # GIF quantizes to a palette
    assert np.abs(mean_color(decode(result.data)) - np.array(color)).max() < tolerance


def test_first_frame_of_an_animation():
    frames = [solid(RED, (100, 100)), solid(BLUE, (100, 100))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    result = run(buffer.getvalue(), quality=100, subsampling="4:4:4")
    assert np.abs(mean_color(decode(result.data)) - np.array(RED)).max() < 12


def test_png_content_is_detected_whatever_the_bytes_would_be_called():
    data = encode(solid(GREEN, (300, 300)), "PNG")  # a .JPEG file with PNG inside
    result = run(data)
    assert (result.source_format, result.source_mode) == ("PNG", "RGB")


# -- rejection ------------------------------------------------------------------------


def _jpeg() -> bytes:
    return encode(texture((300, 200)), quality=90)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"hello, this is text\n" * 20, "not an image"),
        (np.random.default_rng(0).bytes(5000), "not an image"),
        (_jpeg()[: len(_jpeg()) * 6 // 10], "truncated JPEG"),
        (_jpeg()[:-2], "truncated JPEG"),  # only the end-of-image marker is missing
        (_jpeg()[:120], "truncated JPEG"),  # inside the header
        (encode(texture((300, 200)), "PNG")[:3000], "truncated"),
        (encode(texture((300, 200)), progressive=True)[:9000], "truncated"),
    ],
)
@pytest.mark.parametrize("mode", ["center-crop", "keep"])
def test_bad_files_are_rejected_with_a_reason(data, reason, mode):
    with pytest.raises(RejectedImage) as caught:
        resize_image(data, params(mode=mode))
    assert reason in caught.value.reason


def test_truncated_files_are_rejected_even_if_pillow_was_told_to_pad_them(monkeypatch):
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    png = encode(texture((300, 200)), "PNG")
    cmyk = encode(texture((300, 200)).convert("CMYK"))
    for data in (png[: len(png) // 2], cmyk[: len(cmyk) // 2], _jpeg()[:-2]):
        with pytest.raises(RejectedImage, match="truncated"):
            resize_image(data, params())
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # put back as it was


def test_cmyk_truncated_is_rejected():
    data = encode(solid(RED, (300, 300)).convert("CMYK"))
    with pytest.raises(RejectedImage, match="truncated"):
        resize_image(data[: len(data) // 2], params())


def test_decompression_bombs_are_rejected(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300 * 200 - 1)
    for data in (_jpeg(), encode(texture((300, 200)), "PNG")):
        with pytest.raises(RejectedImage, match="decompression bomb"):
            resize_image(data, params())


def test_zero_height_jpeg_is_rejected():
    data = bytearray(_jpeg())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 7] = b"\x00\x00"  # frame height 0
    with pytest.raises(RejectedImage, match="zero-size"):
        resize_image(bytes(data), params())


def test_outputs_jpeg_cannot_hold_are_rejected():
    data = encode(solid(RED, (1, 300)), "PNG")
    assert run(data, mode="shorter-side").width == 1  # no upscale: stays 1x300
    with pytest.raises(RejectedImage, match="65500"):
        resize_image(data, params(mode="shorter-side", upscale=True))  # would be 256x76800


@pytest.mark.parametrize("size", [(1, 1), (1, 300), (300, 1), (2, 3)])
@pytest.mark.parametrize("mode", ["stretch", "center-crop", "pad", "keep"])
def test_tiny_images(size, mode):
    data = encode(solid((10, 200, 30), size), quality=95)
    for upscale in (False, True):
        result = run(data, mode=mode, upscale=upscale)
        left, top, width, height = result.pad
        assert result.width >= width and result.height >= height
        if mode != "pad":
            assert np.abs(mean_color(decode(result.data)) - np.array((10, 200, 30))).max() < 8


def test_unexpected_decoder_errors_become_rejections(monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("decoder fell over")

    monkeypatch.setattr(simplejpeg, "decode_jpeg", explode)
    with pytest.raises(RejectedImage) as caught:
        resize_image(_jpeg(), params())
    assert "RuntimeError" in caught.value.reason


# -- fast decoding --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "colorspace", "expected"),
    [
        ((2048, 1536), "rgb", (384, 512)),  # 1/4: crop 384 >= 256 (1/8 would be 192)
        ((2048, 1536), "gray", (384, 512)),
        ((1600, 1200), "rgb", (300, 400)),  # 1/4: crop 300 >= 256
        ((1000, 750), "rgb", (375, 500)),  # 1/2
        ((600, 450), "rgb", (450, 600)),  # crop 450 < 512: no reduction possible
    ],
)
def test_fast_decode_reduces_but_never_below_the_output(
    decoded_shapes, source, colorspace, expected
):
    data = encode(texture(source, seed=7), quality=92)
    fast = run(data, colorspace=colorspace)
    assert decoded_shapes[-1] == expected
    assert min(decoded_shapes[-1]) >= 256
    slow = run(data, colorspace=colorspace, fast_decode=False)
    assert decoded_shapes[-1] == (source[1], source[0])
    assert np.abs(decode(fast.data) - decode(slow.data)).mean() < 1.5


# -- misc -----------------------------------------------------------------------------


def test_result_reports_the_source():
    result = run(encode(texture((500, 375))))
    assert (result.source_format, result.source_mode) == ("JPEG", "RGB")
    assert (result.source_width, result.source_height, result.orientation) == (500, 375, 1)
    assert result.crop == (62.5, 0.0, 437.5, 375.0)
    assert result.pad == (0, 0, 256, 256)
    assert result.kept is False
