"""The duplicate audit: the perceptual hash, the pair search, and a workflow run on the
sample with planted copies of validation images in train (listed, counted, and with
``duplicates.leaks: drop`` left out of the train records and listed as rejects)."""

from __future__ import annotations

import io
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
import simplejpeg
import yaml
from helpers import SAMPLE, jpeg_bytes
from imgprep.duplicates import KINDS, Images, duplicate_pairs, leak_drops, write_audit
from imgprep.kernels import phash as ph
from imgprep.kernels.pairs import blocks, brute_force_pairs, near_pairs
from imgprep.kernels.resize import ResizeParams, resize_image
from PIL import Image, ImageEnhance
from test_workflow import new_workdir, snakemake

RESIZE = yaml.safe_load((SAMPLE.parents[1] / "config.yaml").read_text())["resize"]


def encode(image: Image.Image, quality=90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def stored():
    """The sample's photos as resize stores them (256 px center crops)."""
    params = ResizeParams.from_config(RESIZE)
    out = []
    for path in sorted(SAMPLE.glob("*/*/*")):
        if path.suffix.lower() in (".jpeg", ".jpg") and path.stat().st_size > 1000:
            try:
                out.append(resize_image(path.read_bytes(), params).data)
            except Exception:
                continue
    assert len(out) > 40
    return out


# -- phash ----------------------------------------------------------------------------------


def float_phash(gray32: np.ndarray) -> int:
    """ImageHash's phash of a 32 x 32 image, in float64 (scipy's unnormalized DCT-II)."""
    n = np.arange(32)
    cosines = 2 * np.cos(np.pi * np.arange(32)[:, None] * (2 * n + 1) / 64)
    dct = cosines @ gray32.astype(np.float64) @ cosines.T
    low = dct[:8, :8]
    bits = (low > np.median(low)).ravel()
    return int("".join("1" if b else "0" for b in bits), 2)


def test_integer_dct_gives_the_float_dct_bits(stored):
    for data in stored:
        gray = simplejpeg.decode_jpeg(data, colorspace="GRAY")[:, :, 0]
        small = np.asarray(Image.fromarray(gray, "L").resize((32, 32), Image.Resampling.LANCZOS))
        assert ph.phash_pixels(small) == float_phash(small)


def test_phash_of_a_copy_is_the_same_and_flat_images_are_fixed(stored):
    assert [ph.phash(d) for d in stored] == [ph.phash(bytes(d)) for d in stored]
    flat = encode(Image.new("RGB", (256, 256), (120, 30, 200)))
    assert ph.phash(flat) == 0x8000000000000000
    assert ph.phash_hex(ph.phash(flat)) == "8000000000000000"


def test_modified_copies_are_near_and_unrelated_photos_far(stored):
    distances = {"requality": [], "resize": [], "brighten": []}
    for data in stored:
        image = Image.open(io.BytesIO(data)).convert("RGB")
        mine = ph.phash(data)
        copies = {
            "requality": encode(image, 50),
            "resize": encode(image.resize((230, 230), Image.Resampling.BICUBIC)),
            "brighten": encode(ImageEnhance.Brightness(image).enhance(1.1)),
        }
        for kind, copy in copies.items():
            distances[kind].append(ph.hamming(mine, ph.phash(copy)))
    for kind, found in distances.items():
        assert max(found) <= 6 and np.mean(found) <= 2, (kind, found)
    unrelated = [ph.hamming(ph.phash(a), ph.phash(b)) for a, b in itertools.combinations(stored, 2)]
    assert min(unrelated) > 4 and np.mean(unrelated) > 24


def test_pixel_digest_is_the_same_by_resize_or_alone_and_for_a_png_of_the_pixels():
    params = ResizeParams.from_config(RESIZE)
    small = jpeg_bytes(300, 280, seed=3)  # decoded in full by resize: the source's pixels
    made = resize_image(small, params, pixels_digest=True)
    assert made.pixels_sha256 == ph.source_pixels_sha256(small)
    assert resize_image(small, params).pixels_sha256 == ""
    pixels = simplejpeg.decode_jpeg(small)
    png = io.BytesIO()
    Image.fromarray(pixels).save(png, "PNG")
    assert ph.source_pixels_sha256(png.getvalue()) == made.pixels_sha256
    assert ph.pixels_sha256(pixels) == made.pixels_sha256
    # the same picture at the same size resizes to the same stored image, whichever file
    assert resize_image(png.getvalue(), params, pixels_digest=True).data == made.data


def test_a_dct_scaled_decode_is_digested_as_decoded_and_matches_its_copies():
    params = ResizeParams.from_config(RESIZE)
    large = jpeg_bytes(1200, 1100, seed=4)  # DCT-reduced by resize: no second decode
    made = resize_image(large, params, pixels_digest=True)
    assert made.pixels_sha256 and made.pixels_sha256 != ph.source_pixels_sha256(large)
    from imgprep.kernels.decode import decode_jpeg

    scaled = {
        reduce: ph.pixels_sha256(decode_jpeg(large, 3, reduce, 1200, 1100), f"1/{reduce} 3")
        for reduce in (2, 4, 8)
    }
    assert made.pixels_sha256 in scaled.values()
    # another EXIF/comment block, the same coefficients: the same digest, other bytes
    commented = large[:2] + b"\xff\xfe\x00\x07hello" + large[2:]
    copy = resize_image(commented, params, pixels_digest=True)
    assert commented != large and copy.pixels_sha256 == made.pixels_sha256


# -- pair search ----------------------------------------------------------------------------


def planted(n: int, distance: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**64 - 1, size=n, dtype=np.uint64, endpoint=True)
    for _ in range(n // 10):
        a, b = rng.integers(0, n, size=2)
        flips = rng.choice(64, size=int(rng.integers(0, distance + 2)), replace=False)
        hashes[b] = hashes[a] ^ np.uint64(sum(1 << int(f) for f in flips))
    # clustered hashes too: many sharing blocks, as real photos' phashes do
    hashes[: n // 20] &= np.uint64(0xFFFF0000FFFF0000)
    return hashes


@pytest.mark.parametrize("distance", [0, 1, 2, 3, 4, 5, 6])
def test_pair_search_finds_exactly_what_brute_force_finds(distance):
    for seed in range(3):
        hashes = planted(3000, distance, seed)
        found = near_pairs(hashes, distance)
        assert np.array_equal(found, brute_force_pairs(hashes, distance))
        assert len(found) >= 100  # the planted pairs within reach, and the clustered ones


def test_blocks_cover_the_64_bits_once():
    for distance in range(7):
        parts = blocks(distance)
        assert len(parts) == distance + 1 and sum(bits for _, bits in parts) == 64
        mask = 0
        for shift, bits in parts:
            block = ((1 << bits) - 1) << shift
            assert not mask & block
            mask |= block
        assert mask == 2**64 - 1


def synthetic_images() -> Images:
    #            train 0, train 1, train 2, validation 3, validation 4, test 5
    phashes = [0x0F, 0x0F ^ 0b111, 0xFFFF0000, 0x0F, 0xF0F0F0F0F0F0F0F0, 0xFFFF0000 ^ 1]
    return Images(
        splits=("train", "validation", "test"),
        split=np.array([0, 0, 0, 1, 1, 2]),
        shard=["00000"] * 6,
        position=np.arange(6),
        path=[f"p{i}" for i in range(6)],
        source_sha256=["a", "b", "c", "a", "d", ""],
        pixels_sha256=["x", "y", "z", "x", "z", ""],
        phash=np.array(phashes, dtype=np.uint64),
        has_phash=np.ones(6, bool),
    )


def test_each_pair_once_with_its_strongest_kind_and_the_leaks_it_makes():
    images = synthetic_images()
    pairs = duplicate_pairs(images, 4)
    listed = [(a, b, KINDS[k], d) for a, b, k, d in pairs.tolist()]
    assert listed == [
        (0, 1, "near", 3),
        (0, 3, "exact_bytes", 0),
        (1, 3, "near", 3),
        (2, 4, "exact_pixels", 32),  # far apart by phash, yet the same pixels
        (2, 5, "near", 1),
    ]
    drops = leak_drops(images, pairs, ["train"])
    assert drops == [
        ("train", "00000", 0, "p0", "duplicate of validation image (exact_bytes): p3"),
        ("train", "00000", 1, "p1", "duplicate of validation image (near): p3"),
        ("train", "00000", 2, "p2", "duplicate of validation image (exact_pixels): p4"),
    ]
    # validation trained on too: only the test image's partner leaks
    drops = leak_drops(images, pairs, ["train", "validation"])
    assert [d[2] for d in drops] == [2]


def test_meta_tables_from_before_the_audit_are_counted_not_audited(tmp_path):
    """A build resized before the hashes existed is not resized again for them: its old
    meta tables are skipped and counted; dropping leaks needs every hash."""
    table = tmp_path / "index" / "train.tsv"
    table.parent.mkdir()
    table.write_text("path\tshard\tposition\na.jpg\t00000\t0\nb.jpg\t00001\t0\n")
    old = tmp_path / "resized" / "train" / "00000.meta.tsv"
    new = tmp_path / "resized" / "train" / "00001.meta.tsv"
    old.parent.mkdir(parents=True)
    old.write_text("position\twidth\n0\t256\n")
    new.write_text("position\tsource_sha256\tpixels_sha256\tphash\n0\tab\tcd\t00000000000000ff\n")
    outputs = [tmp_path / name for name in ("d.tsv", "d.json", "d.leaks.tsv")]
    settings = {"near_distance": 4, "leaks": "keep", "train_splits": ["train"]}
    counts = write_audit(["train"], [table], [old, new], settings, *outputs)
    assert (counts["images"], counts["unhashed_images"], counts["pairs"]["total"]) == (1, 1, 0)
    with pytest.raises(ValueError, match="leaks: drop needs hashes"):
        write_audit(["train"], [table], [old, new], {**settings, "leaks": "drop"}, *outputs)


def test_an_empty_shard_is_audited_as_empty(tmp_path):
    """A shard with no members (more shards than images) has a meta table with no rows
    and no rows in the split table: nothing to audit, no error."""
    table = tmp_path / "index" / "validation.tsv"
    table.parent.mkdir()
    table.write_text("path\tshard\tposition\na.jpg\t00001\t0\n")
    empty = tmp_path / "resized" / "validation" / "00000.meta.tsv"
    full = tmp_path / "resized" / "validation" / "00001.meta.tsv"
    empty.parent.mkdir(parents=True)
    empty.write_text("position\tsource_sha256\tpixels_sha256\tphash\n")
    full.write_text("position\tsource_sha256\tpixels_sha256\tphash\n0\tab\tcd\t00000000000000ff\n")
    outputs = [tmp_path / name for name in ("d.tsv", "d.json", "d.leaks.tsv")]
    settings = {"near_distance": 4, "leaks": "keep", "train_splits": ["train"]}
    counts = write_audit(["validation"], [table], [empty, full], settings, *outputs)
    assert (counts["images"], counts["pairs"]["total"]) == (1, 0)


# -- a workflow run -------------------------------------------------------------------------

VALIDATION = SAMPLE / "validation" / "n02123045"
PLANTED = {  # train copy -> (validation original, kind)
    "train/n02123045/copy_bytes.JPEG": ("ILSVRC2012_val_00005624.JPEG", "exact_bytes"),
    "train/n02123045/copy_pixels.png": ("ILSVRC2012_val_00009480.JPEG", "exact_pixels"),
    "train/n02123045/copy_near.JPEG": ("ILSVRC2012_val_00007779.JPEG", "near"),
}


def plant_copies(sample: Path) -> None:
    for copy, (original, kind) in PLANTED.items():
        data = (VALIDATION / original).read_bytes()
        if kind == "exact_pixels":
            buffer = io.BytesIO()
            Image.fromarray(simplejpeg.decode_jpeg(data)).save(buffer, "PNG")
            data = buffer.getvalue()
        elif kind == "near":
            image = Image.open(io.BytesIO(data)).convert("RGB")
            w, h = image.size
            data = encode(image.resize((w * 19 // 20, h * 19 // 20), Image.Resampling.BICUBIC), 75)
        (sample / copy).write_bytes(data)


def set_leaks(workdir: Path, leaks: str) -> None:
    path = workdir / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config["records"]["schemas"] = ["imagenet"]
    config["duplicates"] = {"leaks": leaks}
    path.write_text(yaml.safe_dump(config))


def train_filenames(results: Path) -> list[str]:
    import tensorflow as tf

    files = sorted(str(p) for p in (results / "records" / "imagenet").glob("train-*-of-*"))
    feature = {"image/filename": tf.io.FixedLenFeature([], tf.string)}
    names = []
    for record in tf.data.TFRecordDataset(files):
        names.append(tf.io.parse_single_example(record, feature)["image/filename"].numpy())
    return [name.decode() for name in names]


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory):
    workdir = new_workdir(tmp_path_factory.mktemp("duplicates") / "work")
    plant_copies(workdir / "sample")
    set_leaks(workdir, "keep")
    snakemake(workdir, "--cores", "2")
    return workdir


def test_the_audit_lists_and_counts_the_planted_copies(planted_run):
    results = planted_run / "results"
    lines = (results / "duplicates.tsv").read_text().splitlines()
    assert lines[0].split("\t") == ["split_a", "path_a", "split_b", "path_b", "kind", "distance"]
    rows = [line.split("\t") for line in lines[1:]]
    found = {(Path(r[1]).name, Path(r[3]).name, r[0], r[2], r[4]) for r in rows}
    for copy, (original, kind) in PLANTED.items():
        assert (Path(copy).name, original, "train", "validation", kind) in found
    near = [r for r in rows if r[4] == "near"]
    assert all(0 <= int(r[5]) <= 4 for r in near)
    counts = json.loads((results / "duplicates.json").read_text())
    summary = json.loads((results / "summary.json").read_text())
    assert summary["duplicates"] == counts
    assert counts["split_pairs"]["train/validation"] == {k: 1 for k in KINDS}
    assert counts["across_splits"] == {k: 1 for k in KINDS}
    assert counts["leaks"] == {
        "policy": "keep",
        "train_splits": ["train"],
        "images": {"train": 3},
        "dropped": {},
    }
    # kept: every copy is a record, the audit only lists them
    assert {Path(c).name for c in PLANTED} <= set(train_filenames(results))
    assert summary["splits"]["train"]["rejects"] == 0


def test_dropped_leaks_are_rejects_not_records(planted_run):
    results = planted_run / "results"
    set_leaks(planted_run, "drop")
    snakemake(planted_run, "--cores", "2")
    names = train_filenames(results)
    assert not {Path(c).name for c in PLANTED} & set(names)
    assert len(names) == 43  # the sample's train images, every one of them a record
    rejects = [line.split("\t") for line in (results / "rejects.tsv").read_text().splitlines()]
    assert rejects[0] == ["split", "shard", "position", "path", "reason"]
    reasons = {Path(r[3]).name: r[4] for r in rejects[1:] if r[0] == "train"}
    assert reasons == {
        Path(copy).name: f"duplicate of validation image ({kind}): sample/validation/n02123045/"
        f"{original}"
        for copy, (original, kind) in PLANTED.items()
    }
    summary = json.loads((results / "summary.json").read_text())
    train = summary["splits"]["train"]
    assert (train["images"], train["rejects"], train["schemas"]["imagenet"]["records"]) == (
        46,
        3,
        43,
    )
    assert summary["duplicates"]["leaks"]["dropped"] == {"train": 3}
    verified = json.loads((results / "verify" / "imagenet.json").read_text())
    assert sum(s["rejects"] for s in verified["splits"]["train"]) == 3
    # validation keeps its originals
    assert summary["splits"]["validation"]["schemas"]["imagenet"]["records"] == 13


def test_dropping_leaks_from_a_split_the_dataset_lacks_fails_naming_the_key(tmp_path):
    from imgprep.config import ConfigError
    from test_datasets import selection_config

    dropping = {"leaks": "drop", "train_splits": ["training"]}
    key = "datasets.d.duplicates.train_splits"
    with pytest.raises(ConfigError, match=re.escape(f"'{key}': training is no split")):
        selection_config(tmp_path / "a", {"d": {"duplicates": dropping}})
    # kept, the list only names what counts as a leak: nothing to refuse
    selection_config(tmp_path / "b", {"d": {"duplicates": {**dropping, "leaks": "keep"}}})
