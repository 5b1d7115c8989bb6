"""Record previews (RecordFormat.previews) and contact sheets (imgprep.figures.sheets).

Shards are written by each format's own write_shard from known samples (crops of the
sample's photos, with labels, texts, boxes, pin paths and embeddings set here), then read
back through ``previews``: what comes out must be what the records hold, decoded as the
consumer decodes them.
"""

from __future__ import annotations

import io
import math
import os

import numpy as np
import pytest
from helpers import SAMPLE
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from imgprep.figures import sheets  # noqa: E402
from imgprep.figures.sheets import contact_sheet  # noqa: E402
from imgprep.formats import get_format  # noqa: E402
from imgprep.formats.base import Preview, Sample  # noqa: E402
from imgprep.formats.parquet import dataset_card  # noqa: E402
from imgprep.kernels.lab import lab_targets, lab_to_srgb, srgb_to_lab  # noqa: E402
from imgprep.kernels.stringart import pin_pixels, ravel  # noqa: E402

SYNSETS = dict(
    line.split(" ", 1) for line in (SAMPLE / "synsets.txt").read_text().splitlines() if line
)
CLASSES = sorted(SYNSETS)  # label index = position here
PHOTOS = [  # (class, photo number): one of each class, then a second cat
    ("n02123045", 1),
    ("n04266014", 2),
    ("n04485082", 3),
    ("n07920052", 4),
    ("n02123045", 5),
]
PINS, LINES = 64, 400


def photo(synset: str, number: int, size, mode: str) -> np.ndarray:
    with Image.open(SAMPLE / "train" / synset / f"{synset}_{number}.JPEG") as image:
        image = image.convert(mode).resize(size, Image.Resampling.BILINEAR)
        return np.asarray(image)


def encode(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        pixels = np.asarray(image)
    return pixels.reshape(*pixels.shape[:2], -1)


def assert_tf_decoded(image: np.ndarray, data: bytes) -> None:
    """``image`` is ``data`` as TensorFlow's decode_jpeg decodes it: its default (fast
    integer) IDCT is a few code values from Pillow's, the same picture."""
    diff = np.abs(image.astype(int) - decoded(data).astype(int))
    assert diff.mean() < 1.5 and diff.max() <= 12, (diff.mean(), diff.max())


def make_sample(position, synset, number, size=(64, 48), mode="RGB", **extra) -> Sample:
    pixels = photo(synset, number, size, mode)
    channels, colorspace = (3, "RGB") if mode == "RGB" else (1, "Grayscale")
    index = CLASSES.index(synset)
    return Sample(
        position=position,
        path=f"train/{synset}/{synset}_{number}.JPEG",
        data=encode(pixels),
        width=size[0],
        height=size[1],
        channels=channels,
        colorspace=colorspace,
        label_index=index,
        synset=synset,
        # the second cat has no text: previews then show the synset
        text="" if position == 4 else SYNSETS[synset],
        **extra,
    )


def described_samples() -> list[Sample]:
    """Varied shapes, one gray image, boxes on some (two on one), none on others."""
    boxes = {0: ((0.1, 0.2, 0.6, 0.9),), 2: ((0.0, 0.0, 0.5, 0.5), (0.25, 0.3, 1.0, 0.8))}
    samples = []
    for position, (synset, number) in enumerate(PHOTOS):
        size = (64, 48) if position % 2 == 0 else (40, 56)
        mode = "L" if position == 3 else "RGB"
        samples.append(
            make_sample(position, synset, number, size, mode, boxes=boxes.get(position, ()))
        )
    return samples


def write(tmp_path, schema: str, samples, compression="none", label_base=0, split="train"):
    spec = get_format(schema)
    out = tmp_path / schema / spec.shard_path(split, 0, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = spec.write_shard(samples, out, compression, None, label_base)
    assert result["records"] == len(samples)
    return spec, out


def assert_described(previews: list[Preview], samples, spec, label_base: int) -> None:
    assert [p.filename for p in previews] == [s.filename for s in samples]
    for preview, sample in zip(previews, samples, strict=True):
        assert preview.label == spec.label(sample.label_index, label_base)
        assert preview.text == (sample.text or sample.synset)
        image = preview.image
        assert image.dtype == np.uint8
        assert image.shape == (sample.height, sample.width, sample.channels)
        assert preview.panels == {}


# -- each format, read back --------------------------------------------------------------


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_imagenet_previews_decode_the_jpeg_and_give_the_stored_boxes(tmp_path, compression):
    samples = described_samples()
    spec, shard = write(tmp_path, "imagenet", samples, compression, label_base=1)
    previews = list(spec.previews(shard, compression, 10))
    assert_described(previews, samples, spec, label_base=1)
    assert [p.label for p in previews] == [1, 2, 3, 4, 1]  # labels.base 1
    for preview, sample in zip(previews, samples, strict=True):
        assert_tf_decoded(preview.image, sample.data)
        # stored as float32 lists: the boxes come back at float32 precision
        want = tuple(tuple(float(np.float32(v)) for v in box) for box in sample.boxes)
        assert preview.boxes == want
    assert len(previews[2].boxes) == 2 and previews[1].boxes == ()


def test_previews_stop_at_the_limit(tmp_path):
    samples = described_samples()
    spec, shard = write(tmp_path, "imagenet", samples)
    assert [p.filename for p in spec.previews(shard, None, 2)] == [s.filename for s in samples[:2]]
    assert list(spec.previews(shard, "none", 0)) == []


def test_dlbs_previews_are_the_raw_pixels_reshaped(tmp_path):
    samples = [make_sample(i, synset, n, (32, 32)) for i, (synset, n) in enumerate(PHOTOS)]
    spec, shard = write(tmp_path, "dlbs", samples, label_base=1)
    previews = list(spec.previews(shard, "none", 10))
    assert_described(previews, samples, spec, label_base=1)
    assert [p.label for p in previews] == [0, 1, 2, 3, 0]  # DLBS counts from 0
    for preview, sample in zip(previews, samples, strict=True):
        np.testing.assert_array_equal(preview.image, decoded(sample.data))  # the stored bytes
        assert preview.boxes == ()


def test_webdataset_previews_read_the_members(tmp_path):
    samples = described_samples()
    spec, shard = write(tmp_path, "webdataset", samples)
    previews = list(spec.previews(shard, "none", 4))
    assert_described(previews, samples[:4], spec, label_base=0)
    for preview, sample in zip(previews, samples, strict=False):
        np.testing.assert_array_equal(preview.image, decoded(sample.data))
        assert preview.boxes == tuple(tuple(box) for box in sample.boxes)


def test_parquet_previews_give_the_class_names_of_the_card(tmp_path):
    samples = described_samples()
    spec, shard = write(tmp_path, "parquet", samples)
    without_card = list(spec.previews(shard, "none", 10))
    assert [p.text for p in without_card] == [""] * len(samples)
    card = dataset_card(CLASSES, {"train": [f"data/{shard.name}"]})
    (shard.parent.parent / "README.md").write_text(card)
    previews = list(spec.previews(shard, "none", 10))
    assert [p.label for p in previews] == [CLASSES.index(s.synset) for s in samples]
    assert [p.text for p in previews] == [s.synset for s in samples]  # ClassLabel names
    for preview, sample in zip(previews, samples, strict=True):
        assert preview.filename == sample.filename
        np.testing.assert_array_equal(preview.image, decoded(sample.data))
        assert preview.boxes == ()


def test_parquet_previews_span_row_groups(tmp_path, monkeypatch):
    from imgprep.formats import parquet

    monkeypatch.setattr(parquet, "ROW_GROUP_ROWS", 2)
    samples = described_samples()
    spec, shard = write(tmp_path, "parquet", samples)
    names = [s.filename for s in samples]
    assert [p.filename for p in spec.previews(shard, "none", 3)] == names[:3]
    assert [p.filename for p in spec.previews(shard, "none", 9)] == names


def test_tangler_string_art_is_the_stored_pin_path(tmp_path):
    res = 96
    samples = []
    for position, (synset, number) in enumerate(PHOTOS[:2]):
        sample = make_sample(position, synset, number, (res, res), "L")
        pixels = decoded(sample.data)[..., 0]
        path = ravel(pixels, pins=PINS, lines=LINES)
        samples.append(Sample(**{**vars(sample), "pin_path": path, "n_pins": PINS}))
    spec, shard = write(tmp_path, "tangler", samples)
    previews = list(spec.previews(shard, "none", 10))
    assert [p.filename for p in previews] == [s.filename for s in samples]
    cols, rows = pin_pixels(PINS, res)
    centre, radius = (res - 1) / 2, (res - 1) / 2
    for preview, sample in zip(previews, samples, strict=True):
        assert (preview.label, preview.text, preview.boxes) == (-1, "", ())
        assert preview.image.shape == (res, res, 1)
        assert_tf_decoded(preview.image, sample.data)
        art = preview.panels["string art"]
        assert list(preview.panels) == ["string art"]
        assert art.shape == (res, res, 1) and art.dtype == np.uint8
        assert art.min() < 128 and art.max() == 255  # threads drawn, white left between
        path = np.asarray(sample.pin_path)
        for pin in (path[0], path[-1], *path[1:10]):  # each chord ends on a pin...
            x, y = cols[pin], rows[pin]
            assert art[y, x, 0] < 255, pin  # ...that the thread darkens
            assert abs(math.hypot(x - centre, y - centre) - radius) <= 1.0  # on the circle
        corners = art[:4, :4].ravel().tolist() + art[-4:, -4:].ravel().tolist()
        assert set(corners) == {255}  # no thread outside the circle
        # string art of a photo looks like it: darker where the photo is darker
        inside = np.hypot(*np.mgrid[:res, :res] - centre) < radius * 0.9
        blur = np.asarray(
            Image.fromarray(art[..., 0]).resize((12, 12), Image.Resampling.BOX), float
        )
        photo_small = np.asarray(
            Image.fromarray(preview.image[..., 0]).resize((12, 12), Image.Resampling.BOX), float
        )
        mask = np.asarray(Image.fromarray(inside).resize((12, 12))).astype(bool)
        correlation = np.corrcoef(blur[mask], photo_small[mask])[0, 1]
        assert correlation > 0.3, correlation


def test_koalarization_previews_convert_the_stored_lab(tmp_path):
    rng = np.random.default_rng(3)
    size = 224  # the stored side: no resize between the JPEG and the targets
    samples = []
    for position, (synset, number) in enumerate(PHOTOS[:2]):
        sample = make_sample(position, synset, number, (size, size))
        embedding = rng.normal(size=1001).astype(np.float32)
        samples.append(Sample(**{**vars(sample), "embedding": embedding}))
    spec, shard = write(tmp_path, "koalarization", samples, "zlib")
    previews = list(spec.previews(shard, "zlib", 10))
    assert [p.filename for p in previews] == [s.filename for s in samples]
    for preview, sample in zip(previews, samples, strict=True):
        assert (preview.label, preview.text, preview.boxes) == (-1, "", ())
        assert sorted(preview.panels) == ["L", "ab"]
        source = decoded(sample.data)
        image, lum, ab = preview.image, preview.panels["L"], preview.panels["ab"]
        assert image.shape == (size, size, 3) and lum.shape == (size, size, 1)
        assert ab.shape == (size, size, 3)
        # Lab stored as float32 and converted back: the source within a code value
        assert np.abs(image.astype(int) - source.astype(int)).max() <= 1
        # L alone: the gray of the source's luminance Y (sRGB's transfer curve both ways)
        c = source / 255.0
        linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
        y = linear @ np.array([0.2126729, 0.7151522, 0.0721750])
        gray = np.where(y <= 0.0031308, 12.92 * y, 1.055 * y ** (1 / 2.4) - 0.055) * 255
        assert np.abs(lum[..., 0] - gray).max() <= 1.0
        # ab alone: L 50 with the source's a and b, where that colour is in sRGB's gamut
        _, want_ab = lab_targets(sample.data, size)
        got = srgb_to_lab(ab)
        in_gamut = (ab.min(axis=2) > 0) & (ab.max(axis=2) < 255)
        assert in_gamut.mean() > 0.5
        assert np.abs(got[..., 0][in_gamut] - 50).max() < 1.0
        assert np.abs(got[..., 1:][in_gamut] - 127 * want_ab[in_gamut]).max() < 2.5


def test_lab_to_srgb_inverts_srgb_to_lab_and_clips_the_rest():
    rgb = np.random.default_rng(0).integers(0, 256, size=(50_000, 3), dtype=np.uint8)
    np.testing.assert_array_equal(lab_to_srgb(srgb_to_lab(rgb)), rgb)
    # L 50 with a far-out a and b: no sRGB colour, clipped to the gamut's edge
    edge = lab_to_srgb(np.array([[50.0, 127.0, -127.0], [100.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    assert edge[0].min() == 0 and edge[0].max() == 255
    assert edge[1].tolist() == [255, 255, 255] and edge[2].tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="Lab"):
        lab_to_srgb(np.zeros((4, 2)))


def test_formats_without_previews_say_so():
    from imgprep.formats.base import RecordFormat

    with pytest.raises(NotImplementedError, match="no previews"):
        RecordFormat().previews("x", None, 1)


# -- contact sheets ----------------------------------------------------------------------


def gray_previews(count: int, boxes=()) -> list[Preview]:
    rng = np.random.default_rng(count)
    return [
        Preview(
            filename=f"n01_{i}.JPEG",
            label=i,
            text="costs $5 and 50% off, a long text that does not fit its slot" if i else "",
            image=rng.integers(0, 256, size=(48 + i, 64, 1), dtype=np.uint8),
            boxes=boxes,
        )
        for i in range(count)
    ]


def sheet_size(count: int, panels: int) -> tuple[int, int]:
    """The sheet's pixel size from its layout: slots of THUMB inches at DPI."""
    slots = 1 + panels
    per_row = max(1, round(sheets.SLOTS_PER_ROW / slots))
    rows = math.ceil(count / per_row)
    width = 2 * sheets.MARGIN + per_row * slots * sheets.THUMB + (per_row - 1) * sheets.MARGIN
    cell = sheets.THUMB + sheets.CAPTION + (0.15 if panels else 0)
    height = sheets.HEADER + rows * (cell + sheets.MARGIN) + sheets.MARGIN
    return round(width * sheets.DPI), round(height * sheets.DPI)


def red_pixels(png) -> int:
    with Image.open(png) as image:
        rgb = np.asarray(image.convert("RGB")).astype(int)
    return int(((rgb[..., 0] > 200) & (rgb[..., 1] < 90) & (rgb[..., 2] < 90)).sum())


@pytest.mark.parametrize("count", [1, 24, 48])
def test_contact_sheet_is_a_png_of_the_grid(tmp_path, count):
    out = tmp_path / "sheet.png"
    contact_sheet(gray_previews(count), out, "train · imagenet")
    with Image.open(out) as image:
        assert image.format == "PNG"
        assert image.size == sheet_size(count, 0)
        assert "Software" not in image.info
    assert red_pixels(out) == 0  # gray images, no boxes: nothing red


def test_contact_sheet_bytes_depend_on_the_previews_only(tmp_path):
    previews = gray_previews(6, boxes=((0.2, 0.2, 0.8, 0.7),))
    first, second, other = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    contact_sheet(previews, first, "t")
    contact_sheet(previews, second, "t")
    contact_sheet(previews, other, "another title")
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() != other.read_bytes()
    assert red_pixels(first) > 6 * 100  # each image's box drawn


def test_contact_sheet_puts_panels_beside_each_image(tmp_path):
    rng = np.random.default_rng(0)
    previews = [
        Preview(
            filename=f"lab_{i}.JPEG",
            label=-1,
            text="",
            image=rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8),
            panels={
                "L": np.full((32, 32, 1), 10, np.uint8),
                "ab": np.full((32, 32, 3), 200, np.uint8),
            },
        )
        for i in range(7)
    ]
    out = tmp_path / "sheet.png"
    contact_sheet(previews, out, "koalarization")
    with Image.open(out) as image:
        assert image.size == sheet_size(7, 2)  # three slots a record, three records a row
        rgb = np.asarray(image.convert("RGB"))
    # the L panel (value 10) and the ab panel (200) of each record are on the sheet
    assert ((rgb == 10).all(axis=2)).sum() > 7 * 1000
    assert ((rgb == 200).all(axis=2)).sum() > 7 * 1000


def test_contact_sheet_of_no_records(tmp_path):
    out = tmp_path / "sheet.png"
    contact_sheet([], out, "empty split")
    with Image.open(out) as image:
        assert image.size == sheet_size(1, 0)
