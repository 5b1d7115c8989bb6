"""Bounding boxes: index encoding, VOC and Kaggle parsing, caching, and the resize geometry.

The geometry is checked on pixels: a white rectangle is resized like any image and its
box must land where the white ended up.
"""

from __future__ import annotations

import csv
import functools
import io
import os
import tarfile

import numpy as np
import pytest
from imgprep.boxes import (
    BoxGeometry,
    RawBoxes,
    decode_boxes,
    encode_boxes,
    normalize_boxes,
    transform_boxes,
)
from imgprep.config import section_config
from imgprep.files.tars import read_resized
from imgprep.kernels import decode
from imgprep.kernels.resize import MODES, ResizeParams, resize_image
from imgprep.sources import voc_boxes as voc_boxes_module
from imgprep.sources.kaggle import read_kaggle_boxes
from imgprep.sources.voc_boxes import parse_voc_xml, read_voc_boxes
from imgprep.stages.resize import resize_shard
from PIL import Image


def resize_params(**values) -> ResizeParams:
    """ResizeParams from the schema's defaults and ``values`` (config keys)."""
    return ResizeParams.from_config(section_config("resize", values))


# -- builders -------------------------------------------------------------------------


def voc_xml(filename="n01440764_10026", size=(500, 375), objects=((12, 40, 300, 370),)) -> bytes:
    parts = ["<annotation>", "<folder>n01440764</folder>"]
    if filename is not None:
        parts.append(f"<filename>{filename}</filename>")
    parts.append("<source><database>ILSVRC_2012</database></source>")
    if size is not None:
        parts.append(f"<size><width>{size[0]}</width><height>{size[1]}</height>")
        parts.append("<depth>3</depth></size>")
    parts.append("<segmented>0</segmented>")
    for xmin, ymin, xmax, ymax in objects:
        parts.append(
            "<object><name>n01440764</name><pose>Unspecified</pose><truncated>0</truncated>"
            f"<difficult>0</difficult><bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
            f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>"
        )
    parts.append("</annotation>")
    return "\n".join(parts).encode()


def write_tar(path, members: dict[str, bytes], mode="w:gz") -> None:
    with tarfile.open(path, mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


ANNOTATIONS = {
    "n01440764/n01440764_10026.xml": voc_xml(),
    "n01440764/n01440764_10027.xml": voc_xml(
        "n01440764_10027", (250, 200), ((1.5, 2.5, 100.25, 150), (10, 10, 20, 20))
    ),
    "n01440764/n01440764_10028.xml": voc_xml("%s", (100, 100), ((0, 0, 50, 50),)),
    "n01443537/n01443537_1.xml": voc_xml("n01443537_1", (80, 60), objects=()),
    "n01443537/n01443537_2.xml": b"<annotation><filename>x</filename><object>",
    "n01443537/readme.txt": b"not an annotation",
    "val/ILSVRC2012_val_00000001.xml": voc_xml("ILSVRC2012_val_00000001", (500, 353)),
}
EXPECTED = {
    "n01440764_10026": RawBoxes(500, 375, ((12, 40, 300, 370),)),
    "n01440764_10027": RawBoxes(250, 200, ((1.5, 2.5, 100.25, 150), (10, 10, 20, 20))),
    "n01440764_10028": RawBoxes(100, 100, ((0, 0, 50, 50),)),
    "ILSVRC2012_val_00000001": RawBoxes(500, 353, ((12, 40, 300, 370),)),
}


def write_folder(root, members: dict[str, bytes]) -> None:
    for name, data in members.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def forbid_parsing(monkeypatch) -> None:
    """Any XML parse now fails the test: what a cache hit must not need."""

    def fail(*args, **kwargs):
        raise AssertionError("parsed although the cache should have answered")

    monkeypatch.setattr(voc_boxes_module, "parse_voc_xml", fail)


# -- the index column -----------------------------------------------------------------


def test_encoding_is_compact_and_round_trips():
    text = encode_boxes(500, 375, [(12, 40, 300, 370), (5, 5, 80, 90)])
    assert text == "500 375 12 40 300 370 5 5 80 90"
    assert decode_boxes(text) == RawBoxes(500, 375, ((12, 40, 300, 370), (5, 5, 80, 90)))


def test_encoding_keeps_floats_exact_and_ints_as_ints():
    boxes = [(0.1, 1e-07, 2.0, 1 / 3), (np.float32(1.5), np.int64(7), -3, 10**12)]
    text = encode_boxes(0, 0, boxes)
    assert "\t" not in text and "\n" not in text
    assert text.split()[:6] == ["0", "0", "0.1", "1e-07", "2.0", repr(1 / 3)]
    decoded = decode_boxes(text)
    assert decoded.boxes == ((0.1, 1e-07, 2.0, 1 / 3), (1.5, 7, -3, 10**12))
    assert [type(v) for v in decoded.boxes[1]] == [float, int, int, int]
    assert encode_boxes(decoded.ref_width, decoded.ref_height, decoded.boxes) == text


def test_no_boxes_is_the_empty_string():
    assert encode_boxes(500, 375, []) == ""
    assert decode_boxes("") == RawBoxes(0, 0, ())
    assert decode_boxes("  ") == RawBoxes(0, 0, ())


@pytest.mark.parametrize(
    ("ref", "boxes"),
    [
        ((500, 375), [(1, 2, 3)]),
        ((500, 375), [(1, 2, 3, float("nan"))]),
        ((500, 375), [(1, 2, 3, float("inf"))]),
        ((500, 375), [(1, 2, 3, True)]),
        ((500, 375), [(1, 2, 3, "4")]),
        ((-1, 375), [(1, 2, 3, 4)]),
        ((500, 0), [(1, 2, 3, 4)]),
    ],
)
def test_encoding_refuses_what_it_cannot_carry(ref, boxes):
    with pytest.raises(ValueError):
        encode_boxes(*ref, boxes)


@pytest.mark.parametrize("text", ["500 375", "500 375 1 2 3", "500 375 1 2 3 x", "0 0 1 2 3 nan"])
def test_decoding_refuses_malformed_text(text):
    with pytest.raises(ValueError):
        decode_boxes(text)


# -- VOC XMLs -------------------------------------------------------------------------


def test_parse_voc_xml_reads_filename_size_and_boxes():
    stem, raw = parse_voc_xml(voc_xml(objects=((12, 40, 300, 370), (5.5, 6, 7, 8.25))))
    assert stem == "n01440764_10026"
    assert raw == RawBoxes(500, 375, ((12, 40, 300, 370), (5.5, 6, 7, 8.25)))


@pytest.mark.parametrize(
    ("filename", "fallback", "stem"),
    [
        ("n01440764_10026.JPEG", None, "n01440764_10026"),
        ("n01440764_10026.jpg", "other", "n01440764_10026"),
        ("ILSVRC2012_val_00000001", "other", "ILSVRC2012_val_00000001"),
        ("some/dir/photo.png", None, "photo"),
        ("image.v2", None, "image.v2"),  # not an image extension: part of the name
        ("%s", "n01440764_10026", "n01440764_10026"),
        ("%s.JPEG", "n02000000_1", "n02000000_1"),
        ("  ", "fallback", "fallback"),
        (None, "fallback", "fallback"),
    ],
)
def test_parse_voc_xml_stem(filename, fallback, stem):
    assert parse_voc_xml(voc_xml(filename), fallback)[0] == stem


def test_parse_voc_xml_without_any_name_fails():
    with pytest.raises(ValueError, match="filename"):
        parse_voc_xml(voc_xml("%s"))


@pytest.mark.parametrize("size", [None, (0, 0), (500, 0)])
def test_parse_voc_xml_without_size_refers_to_the_real_image(size):
    raw = parse_voc_xml(voc_xml(size=size))[1]
    assert (raw.ref_width, raw.ref_height) == (0, 0)
    assert normalize_boxes(raw, 600, 400) == [(12 / 600, 40 / 400, 300 / 600, 370 / 400)]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"<annotation><filename>a</filename>", "well-formed"),
        (b"<notes><filename>a</filename></notes>", "annotation"),
        (
            b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e "x">]><annotation>&e;</annotation>',
            "DTD",
        ),
        (voc_xml(objects=((1, 2, "three", 4),)), "xmax|xmin|ymin|ymax"),
        (voc_xml(objects=((1, 2, "nan", 4),)), "finite"),
        (voc_xml().replace(b"<ymax>370</ymax>", b""), "coordinate"),
        (voc_xml().replace(b"<bndbox>", b"<box>").replace(b"</bndbox>", b"</box>"), "bndbox"),
    ],
)
def test_parse_voc_xml_rejects_broken_files(data, reason):
    with pytest.raises(ValueError, match=reason):
        parse_voc_xml(data, "fallback")


@pytest.mark.parametrize("suffix", [".tar.gz", ".tgz", ".tar"])
def test_read_voc_boxes_from_an_archive(tmp_path, suffix):
    archive = tmp_path / f"bbox{suffix}"
    write_tar(archive, ANNOTATIONS, "w" if suffix == ".tar" else "w:gz")
    boxes, problems = read_voc_boxes(archive, tmp_path / "cache")
    assert boxes == EXPECTED
    assert [member for member, _ in problems] == ["n01443537/n01443537_2.xml"]
    assert "well-formed" in problems[0][1]


def test_read_voc_boxes_from_a_folder_walks_it_recursively(tmp_path):
    root = tmp_path / "Annotations" / "CLS-LOC"
    write_folder(root, {f"train/{name}": data for name, data in ANNOTATIONS.items()})
    boxes, problems = read_voc_boxes(root, tmp_path / "cache")
    assert boxes == EXPECTED
    assert problems == [("train/n01443537/n01443537_2.xml", problems[0][1])]


def test_read_voc_boxes_reports_a_second_annotation_of_an_image(tmp_path):
    write_folder(
        tmp_path / "xml",
        {"a/n01_1.xml": voc_xml("n01_1"), "b/n01_1.xml": voc_xml("n01_1", (10, 10))},
    )
    boxes, problems = read_voc_boxes(tmp_path / "xml", tmp_path / "cache")
    assert boxes == {"n01_1": RawBoxes(500, 375, ((12, 40, 300, 370),))}
    assert len(problems) == 1 and problems[0][0] == "b/n01_1.xml"
    assert "a/n01_1.xml" in problems[0][1]


def test_read_voc_boxes_keys_by_the_xml_name(tmp_path):
    # the XML's own name is how the sets pair annotations with images
    write_folder(tmp_path / "xml", {"n01_7.xml": voc_xml("n01_8.JPEG")})
    assert set(read_voc_boxes(tmp_path / "xml", tmp_path / "cache")[0]) == {"n01_7"}


def test_read_voc_boxes_of_a_missing_source_fails(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_voc_boxes(tmp_path / "nothing.tgz", tmp_path / "cache")


def test_read_voc_boxes_of_a_truncated_archive_fails(tmp_path):
    archive = tmp_path / "bbox.tgz"
    write_tar(archive, ANNOTATIONS)
    archive.write_bytes(archive.read_bytes()[:-40])
    with pytest.raises(ValueError, match="archive"):
        read_voc_boxes(archive, tmp_path / "cache")


def test_archive_cache_is_reused_while_the_archive_is_unchanged(tmp_path, monkeypatch):
    archive = tmp_path / "bbox.tgz"
    write_tar(archive, ANNOTATIONS)
    cache = tmp_path / "cache"
    first = read_voc_boxes(archive, cache)
    files = list(cache.iterdir())
    assert len(files) == 1 and not files[0].name.startswith(".")
    with monkeypatch.context() as patch:
        forbid_parsing(patch)
        assert read_voc_boxes(archive, cache) == first
    # new content (and mtime): parsed again
    changed = dict(ANNOTATIONS)
    changed["n01440764/n01440764_10026.xml"] = voc_xml(objects=((1, 2, 3, 4),))
    write_tar(archive, changed)
    stat = archive.stat()
    os.utime(archive, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    boxes, _ = read_voc_boxes(archive, cache)
    assert boxes["n01440764_10026"] == RawBoxes(500, 375, ((1, 2, 3, 4),))
    assert len(list(cache.iterdir())) == 1  # one cache file per source, rewritten


def test_archive_cache_is_invalidated_by_mtime_alone(tmp_path, monkeypatch):
    archive = tmp_path / "bbox.tgz"
    write_tar(archive, ANNOTATIONS)
    cache = tmp_path / "cache"
    read_voc_boxes(archive, cache)
    stat = archive.stat()
    os.utime(archive, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    with monkeypatch.context() as patch, pytest.raises(AssertionError, match="cache"):
        forbid_parsing(patch)
        read_voc_boxes(archive, cache)


def test_a_copy_elsewhere_has_its_own_cache(tmp_path):
    cache = tmp_path / "cache"
    write_tar(tmp_path / "a.tgz", {"n01_1.xml": voc_xml("n01_1")})
    write_tar(tmp_path / "b.tgz", {"n01_2.xml": voc_xml("n01_2")})
    assert set(read_voc_boxes(tmp_path / "a.tgz", cache)[0]) == {"n01_1"}
    assert set(read_voc_boxes(tmp_path / "b.tgz", cache)[0]) == {"n01_2"}
    assert len(list(cache.iterdir())) == 2


@pytest.mark.parametrize("change", ["edit", "add", "remove", "rename", "touch"])
def test_folder_cache_follows_the_folder(tmp_path, monkeypatch, change):
    root = tmp_path / "xml"
    write_folder(root, ANNOTATIONS)
    cache = tmp_path / "cache"
    first = read_voc_boxes(root, cache)
    with monkeypatch.context() as patch:
        forbid_parsing(patch)
        assert read_voc_boxes(root, cache) == first
    target = root / "n01440764" / "n01440764_10026.xml"
    expected = dict(EXPECTED)
    if change == "edit":  # same size, new content
        target.write_bytes(target.read_bytes().replace(b"<xmin>12<", b"<xmin>13<"))
        expected["n01440764_10026"] = RawBoxes(500, 375, ((13, 40, 300, 370),))
    elif change == "add":
        write_folder(root, {"deeper/still/n09_1.xml": voc_xml("n09_1")})
        expected["n09_1"] = RawBoxes(500, 375, ((12, 40, 300, 370),))
    elif change == "remove":
        target.unlink()
        del expected["n01440764_10026"]
    elif change == "rename":
        target.rename(target.with_name("n01440764_99999.xml"))
        expected["n01440764_99999"] = expected.pop("n01440764_10026")
    else:  # same bytes, newer mtime: cannot know it is unchanged without parsing
        stat = target.stat()
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert read_voc_boxes(root, cache)[0] == expected


def test_a_damaged_cache_is_rebuilt(tmp_path):
    archive = tmp_path / "bbox.tgz"
    write_tar(archive, ANNOTATIONS)
    cache = tmp_path / "cache"
    first = read_voc_boxes(archive, cache)
    (cache_file,) = cache.iterdir()
    header = cache_file.read_text().splitlines()[0]
    cache_file.write_text(header + "\nn01440764_10026\t500 375 1 2\n")
    assert read_voc_boxes(archive, cache) == first
    assert read_voc_boxes(archive, cache) == first


def test_cache_is_deterministic(tmp_path):
    archive = tmp_path / "bbox.tgz"
    write_tar(archive, ANNOTATIONS)
    read_voc_boxes(archive, tmp_path / "c1")
    read_voc_boxes(archive, tmp_path / "c2")
    (one,) = (tmp_path / "c1").iterdir()
    (two,) = (tmp_path / "c2").iterdir()
    assert one.read_bytes() == two.read_bytes()


# -- Kaggle CSVs ----------------------------------------------------------------------


def write_csv(path, rows, header=("ImageId", "PredictionString")) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def test_read_kaggle_boxes(tmp_path):
    path = tmp_path / "LOC_val_solution.csv"
    write_csv(
        path,
        [
            ("ILSVRC2012_val_00008726", "n02119789 255 142 454 329 n02119789 44 21 322 295 "),
            ("ILSVRC2012_val_00000001", "n01751748 0.5 1 2 3.25"),
            ("ILSVRC2012_val_00000002", ""),
        ],
    )
    assert read_kaggle_boxes(path) == {
        "ILSVRC2012_val_00008726": RawBoxes(0, 0, ((255, 142, 454, 329), (44, 21, 322, 295))),
        "ILSVRC2012_val_00000001": RawBoxes(0, 0, ((0.5, 1, 2, 3.25),)),
    }


@pytest.mark.parametrize(
    ("rows", "line", "reason"),
    [
        ([("a", "n01 1 2 3 4"), ("b", "n01 1 2 3")], 3, "groups"),
        ([("a", "n01 1 2 x 4")], 2, "not a number"),
        ([("a", "n01 1 2 3 4"), ("b", "n01 1 2 3 4", "extra")], 3, "2 fields"),
        ([("a", "n01 1 2 3 4"), ("a", "n01 5 6 7 8")], 3, "twice"),
        ([("", "n01 1 2 3 4")], 2, "ImageId"),
    ],
)
def test_read_kaggle_boxes_names_file_and_line(tmp_path, rows, line, reason):
    path = tmp_path / "LOC_train_solution.csv"
    write_csv(path, rows)
    with pytest.raises(ValueError, match=f"LOC_train_solution.csv:{line}: .*{reason}"):
        read_kaggle_boxes(path)


def test_read_kaggle_boxes_checks_the_header(tmp_path):
    path = tmp_path / "labels.csv"
    write_csv(path, [("a", "n01 1 2 3 4")], header=("ImageId", "Label"))
    with pytest.raises(ValueError, match="labels.csv:1"):
        read_kaggle_boxes(path)


# -- normalizing ----------------------------------------------------------------------


def test_normalize_by_the_voc_size_not_the_real_one():
    raw = RawBoxes(500, 250, ((50, 25, 250, 125),))
    assert normalize_boxes(raw, 1000, 1000) == [(0.1, 0.1, 0.5, 0.5)]


def test_normalize_kaggle_boxes_by_the_real_size():
    raw = RawBoxes(0, 0, ((50, 25, 250, 125),))
    assert normalize_boxes(raw, 1000, 250) == [(0.05, 0.1, 0.25, 0.5)]
    with pytest.raises(ValueError, match="size"):
        normalize_boxes(raw, 0, 0)


def test_normalize_swaps_clamps_and_drops():
    raw = RawBoxes(
        100,
        200,
        (
            (80, 150, 20, 50),  # inverted both ways: swapped
            (-10, -20, 50, 400),  # out of range: clamped
            (30, 10, 30, 90),  # zero width
            (10, 60, 90, 60),  # zero height
            (120, 10, 150, 90),  # right of the image: nothing left after clamping
            (-30, -40, -1, -2),  # above and left of it
        ),
    )
    assert normalize_boxes(raw, 1, 1) == [(0.2, 0.25, 0.8, 0.75), (0.0, 0.0, 0.5, 1.0)]


# -- the geometry ---------------------------------------------------------------------


def oriented_size(width, height, orientation):
    return (height, width) if orientation >= 5 else (width, height)


def identity_geometry(width, height, orientation) -> BoxGeometry:
    """Orientation only: the whole oriented image, unscaled."""
    ow, oh = oriented_size(width, height, orientation)
    return BoxGeometry(width, height, orientation, 0.0, 0.0, ow, oh, 0, 0, ow, oh, ow, oh)


def mask_box(mask: np.ndarray):
    """(x0, y0, x1, y1) around the true pixels, pixel edges; None when there are none."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_moves_boxes_exactly_like_pixels(orientation):
    """Against decode.orient itself: on whole pixels the match must be exact."""
    width, height = 40, 30
    stored = np.zeros((height, width, 1), np.uint8)
    stored[3:12, 5:26] = 1  # x 5..26, y 3..12
    oriented = decode.orient(stored, orientation)[:, :, 0]
    ow, oh = oriented_size(width, height, orientation)
    assert oriented.shape == (oh, ow)
    box = (5 / width, 3 / height, 26 / width, 12 / height)
    (moved,) = transform_boxes([box], identity_geometry(width, height, orientation))
    expected = mask_box(oriented)
    assert np.allclose(np.multiply(moved, (ow, oh, ow, oh)), expected, atol=1e-9)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pillows_transposes(orientation):
    """The Pillow decode path orients with decode._TRANSPOSE: the same map."""
    width, height = 40, 30
    stored = np.zeros((height, width), np.uint8)
    stored[3:12, 5:26] = 255
    image = Image.fromarray(stored)
    if orientation != 1:
        image = image.transpose(decode._TRANSPOSE[orientation])
    ow, oh = image.size
    box = (5 / width, 3 / height, 26 / width, 12 / height)
    (moved,) = transform_boxes([box], identity_geometry(width, height, orientation))
    expected = mask_box(np.asarray(image) > 0)
    assert np.allclose(np.multiply(moved, (ow, oh, ow, oh)), expected, atol=1e-9)


def test_crop_scale_and_pad_by_hand():
    # 200x100 source, region x 50..150 y 0..100 scaled to 50x50, at (10, 20) on 70x90
    geometry = BoxGeometry(200, 100, 1, 50.0, 0.0, 150.0, 100.0, 10, 20, 50, 50, 70, 90)
    boxes = [
        (0.5, 0.2, 0.6, 0.4),  # inside: x 100..120 -> 25..35 (+10), y 20..40 -> 10..20 (+20)
        (0.0, 0.0, 0.3, 1.0),  # x 0..60: only 50..60 survives -> 0..5 (+10)
        (0.0, 0.1, 0.25, 0.9),  # x 0..50: ends where the crop starts: gone
        (0.9, 0.1, 1.0, 0.9),  # x 180..200: right of the crop: gone
    ]
    moved = transform_boxes(boxes, geometry)
    expected = [(35 / 70, 30 / 90, 45 / 70, 40 / 90), (10 / 70, 20 / 90, 15 / 70, 70 / 90)]
    assert len(moved) == 2 and np.allclose(moved, expected, rtol=0, atol=1e-12)


def test_geometry_from_a_meta_row_or_keywords():
    row = {
        "position": "3",
        "width": "70",
        "height": "90",
        "channels": "3",
        "colorspace": "RGB",
        "source_width": "200",
        "source_height": "100",
        "orientation": "1",
        "crop_x0": "50.0",
        "crop_y0": "0.0",
        "crop_x1": "150.0",
        "crop_y1": "100.0",
        "pad_left": "10",
        "pad_top": "20",
        "content_width": "50",
        "content_height": "50",
        "kept": "0",
    }
    by_keywords = BoxGeometry(
        source_width=200,
        source_height=100,
        orientation=1,
        crop_x0=50,
        crop_y0=0,
        crop_x1=150,
        crop_y1=100,
        pad_left=10,
        pad_top=20,
        content_width=50,
        content_height=50,
        width=70,
        height=90,
    )
    assert BoxGeometry.from_meta(row) == by_keywords
    box = [(0.5, 0.2, 0.6, 0.4)]
    assert transform_boxes(box, row) == transform_boxes(box, by_keywords)
    numbers = {key: int(value) for key, value in row.items() if value.isdigit()}
    numbers.update({key: float(row[key]) for key in ("crop_x0", "crop_y0", "crop_x1", "crop_y1")})
    assert BoxGeometry.from_meta(numbers) == by_keywords


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("orientation", "9", "orientation"),
        ("pad_left", "1.5", "integer"),
        ("width", "0", "positive"),
        ("crop_x1", "50.0", "empty"),
        ("crop_y0", "nan", "crop_y0"),
        ("content_height", "x", "content_height"),
    ],
)
def test_geometry_refuses_nonsense(key, value, reason):
    row = dict(
        source_width="200",
        source_height="100",
        orientation="1",
        crop_x0="50.0",
        crop_y0="0.0",
        crop_x1="150.0",
        crop_y1="100.0",
        pad_left="10",
        pad_top="20",
        content_width="50",
        content_height="50",
        width="70",
        height="90",
    )
    row[key] = value
    with pytest.raises(ValueError, match=reason):
        transform_boxes([], row)
    del row[key]
    with pytest.raises(ValueError, match=key):
        BoxGeometry.from_meta(row)


# -- the geometry, on pixels ----------------------------------------------------------

SOURCE = (400, 300)
# stored pixels (x0, y0, x1, y1): where the white rectangle is drawn
RECTANGLES = {
    "middle": (150, 90, 290, 210),
    "corner": (30, 40, 130, 150),  # partly cut away by most crops
    "edge": (10, 100, 45, 180),  # wholly cut away by some crops
}
SIZES = [
    (100, 100, False),
    (160, 90, False),
    (64, 128, False),
    (500, 500, False),  # larger than the source: stored unscaled (padded, cropped)
    (600, 450, True),
]
TOLERANCE = 1.5  # output pixels: JPEG ringing and the filter's blur move the threshold


@functools.cache
def rectangle_image(rectangle: str, orientation: int, fmt: str) -> bytes:
    pixels = np.zeros((SOURCE[1], SOURCE[0], 3), np.uint8)
    x0, y0, x1, y1 = RECTANGLES[rectangle]
    pixels[y0:y1, x0:x1] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    options = {"quality": 95} if fmt == "JPEG" else {}
    Image.fromarray(pixels).save(buffer, fmt, exif=exif, **options)
    return buffer.getvalue()


def white_box(jpeg: bytes):
    """Bounding box of the bright pixels of a stored JPEG, in output pixel edges."""
    pixels = np.asarray(Image.open(io.BytesIO(jpeg)).convert("L"))
    return mask_box(pixels >= 128)


def expected_box(rectangle: str, geometry: BoxGeometry):
    raw = RawBoxes(*SOURCE, (RECTANGLES[rectangle],))
    moved = transform_boxes(normalize_boxes(raw, *SOURCE), geometry)
    assert len(moved) <= 1
    if not moved:
        return None
    return np.multiply(moved[0], (geometry.width, geometry.height) * 2)


def check_box_matches_pixels(rectangle: str, result) -> str:
    """Compare; return how much of the rectangle survived ("whole", "part", "none")."""
    geometry = BoxGeometry.from_resized(result)
    expected = expected_box(rectangle, geometry)
    found = white_box(result.data)
    if expected is None:
        assert found is None, f"box dropped but white pixels at {found}"
        return "none"
    assert found is not None, f"box at {expected} but no white pixels"
    assert np.abs(np.subtract(found, expected)).max() <= TOLERANCE, (found, expected.tolist())
    canvas = (geometry.width, geometry.height) * 2
    content = (
        geometry.pad_left,
        geometry.pad_top,
        geometry.pad_left + geometry.content_width,
        geometry.pad_top + geometry.content_height,
    )
    touches = any(abs(e - c) < 1e-9 for e, c in zip(expected, content, strict=True))
    assert all(0 <= e <= c for e, c in zip(expected, canvas, strict=True))
    return "part" if touches else "whole"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "x".join(map(str, s[:2])) + "+up" * s[2])
@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("mode", MODES)
def test_boxes_follow_the_pixels_through_resize(mode, orientation, size, fmt):
    width, height, upscale = size
    params = resize_params(mode=mode, size=[width, height], upscale=upscale)
    for rectangle in RECTANGLES:
        result = resize_image(rectangle_image(rectangle, orientation, fmt), params)
        assert result.orientation == orientation
        check_box_matches_pixels(rectangle, result)


@pytest.mark.parametrize(
    ("rectangle", "orientation", "size", "survived"),
    [
        ("middle", 1, (100, 100), "whole"),
        ("corner", 1, (100, 100), "part"),  # crop x 50..350 cuts its left side (x 30..130)
        ("edge", 1, (100, 100), "none"),  # x 10..45 lies left of the crop
        ("corner", 6, (100, 100), "part"),  # upright 300x400: stored x is y, crop y 50..350
        ("edge", 6, (100, 100), "none"),
        ("edge", 6, (64, 128), "whole"),  # crop x 50..250: stored y 100..180 is x 120..200
        ("edge", 1, (64, 128), "none"),  # crop x 125..275
    ],
)
def test_center_crop_cuts_boxes(rectangle, orientation, size, survived):
    params = resize_params(mode="center-crop", size=list(size))
    result = resize_image(rectangle_image(rectangle, orientation, "JPEG"), params)
    assert check_box_matches_pixels(rectangle, result) == survived


def test_boxes_through_a_resized_shard_and_its_meta_table(tmp_path):
    """The meta TSV rows as written by resize_shard are enough to place the boxes."""
    paths = []
    for orientation in range(1, 9):
        path = tmp_path / f"img{orientation}.jpg"
        path.write_bytes(rectangle_image("corner", orientation, "JPEG"))
        paths.append(str(path))
    params = resize_params(mode="center-crop", size=[120, 80])
    tar, meta, rejects = tmp_path / "s.tar", tmp_path / "s.meta.tsv", tmp_path / "s.rej.tsv"
    assert resize_shard(paths, params, tar, meta, rejects) == (8, 0)
    with open(meta, newline="") as handle:
        rows = {int(row["position"]): row for row in csv.DictReader(handle, delimiter="\t")}
    raw = RawBoxes(*SOURCE, (RECTANGLES["corner"],))
    for position, jpeg in read_resized(tar):
        row = rows[position]
        (box,) = transform_boxes(normalize_boxes(raw, *SOURCE), row)
        expected = np.multiply(box, (int(row["width"]), int(row["height"])) * 2)
        assert np.abs(np.subtract(white_box(jpeg), expected)).max() <= TOLERANCE
