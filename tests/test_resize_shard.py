"""resize_shard: every position accounted for, deterministic files, atomic writes."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
from imgprep.config import section_config
from imgprep.files.tables import META_COLUMNS, REJECT_COLUMNS
from imgprep.files.tars import read_resized
from imgprep.kernels.resize import ResizeParams
from imgprep.stages import resize as resize_module
from imgprep.stages.resize import resize_shard
from PIL import Image


def resize_params(**values) -> ResizeParams:
    """ResizeParams from the schema's defaults and ``values`` (config keys)."""
    return ResizeParams.from_config(section_config("resize", values))


def _jpeg(seed: int, size=(320, 240), mode="RGB", **options) -> bytes:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (size[1] // 8 + 1, size[0] // 8 + 1, 3), dtype=np.uint8)
    image = Image.fromarray(base).resize(size, Image.Resampling.BICUBIC).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, options.pop("format", "JPEG"), **options)
    return buffer.getvalue()


@pytest.fixture
def shard(tmp_path):
    """A shard mixing good and bad files; returns (paths, {position: expected outcome})."""
    src = tmp_path / "src"
    src.mkdir()
    files = [
        ("a.JPEG", _jpeg(1), "ok"),
        ("b.JPEG", _jpeg(2, (500, 375)), "ok"),
        ("c.JPEG", _jpeg(3)[:2000], "truncated"),
        ("d.JPEG", b"", "empty file"),
        ("e.JPEG", _jpeg(4, format="PNG"), "ok"),  # PNG named .JPEG
        ("f.txt", b"not an image at all\n", "not an image"),
        ("missing.JPEG", None, "unreadable: FileNotFoundError"),
        ("g.JPEG", _jpeg(5, (200, 300), mode="CMYK"), "ok"),
        ("h.JPEG", _jpeg(6, (640, 480), mode="L"), "ok"),
        ("i.JPEG", _jpeg(7, (90, 60)), "ok"),
        ("j\tk.JPEG", None, "unreadable"),  # a tab in a path must not break the table
    ]
    paths, expected = [], {}
    for position, (name, data, outcome) in enumerate(files):
        path = src / name
        if data is not None:
            path.write_bytes(data)
        paths.append(str(path))
        expected[position] = outcome
    return paths, expected


def _outputs(directory, tag):
    return directory / f"{tag}.tar", directory / f"{tag}.meta.tsv", directory / f"{tag}.rejects.tsv"


def _table(path) -> list[list[str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.split("\t") for line in lines]


def test_every_position_is_either_stored_or_rejected(shard, tmp_path):
    paths, expected = shard
    tar, meta, rejects = _outputs(tmp_path / "out", "s")
    counts = resize_shard(paths, resize_params(), tar, meta, rejects, threads=1)

    good = [p for p, outcome in expected.items() if outcome == "ok"]
    bad = [p for p, outcome in expected.items() if outcome != "ok"]
    assert counts == (len(good), len(bad))

    meta_rows = _table(meta)
    assert tuple(meta_rows[0]) == META_COLUMNS
    assert [int(row[0]) for row in meta_rows[1:]] == good
    reject_rows = _table(rejects)
    assert tuple(reject_rows[0]) == REJECT_COLUMNS
    assert all(len(row) == 3 for row in reject_rows)
    assert [int(row[0]) for row in reject_rows[1:]] == bad
    for row in reject_rows[1:]:
        position = int(row[0])
        assert expected[position] in row[2]
        assert row[1] == paths[position].replace("\t", " ")

    with tarfile.open(tar) as archive:
        members = archive.getmembers()
    assert [m.name for m in members] == [f"{p:06d}.jpg" for p in good]
    for member in members:
        assert (member.mtime, member.uid, member.gid, member.mode) == (0, 0, 0, 0o644)
        assert (member.uname, member.gname) == ("", "")
        assert member.isfile()


def test_metadata_matches_the_stored_jpegs(shard, tmp_path):
    paths, _ = shard
    tar, meta, rejects = _outputs(tmp_path, "s")
    resize_shard(paths, resize_params(), tar, meta, rejects)
    rows = _table(meta)
    header, rows = rows[0], [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
    assert len(header) == len(META_COLUMNS)
    stored = dict(read_resized(tar))
    assert sorted(stored) == [int(row["position"]) for row in rows]
    for row in rows:
        data = stored[int(row["position"])]
        image = Image.open(io.BytesIO(data))
        assert image.format == "JPEG"
        assert image.size == (int(row["width"]), int(row["height"]))
        assert {"RGB": "3", "L": "1"}[image.mode] == row["channels"]
        assert row["colorspace"] == "RGB"
        assert int(row["nbytes"]) == len(data)
        float(row["crop_x0"])  # numbers, not "None"
    by_name = {paths[int(row["position"])].rsplit("/", 1)[-1]: row for row in rows}
    assert by_name["e.JPEG"]["source_format"] == "PNG"
    assert by_name["g.JPEG"]["source_mode"] == "CMYK"
    assert by_name["h.JPEG"]["source_mode"] == "L"
    assert (by_name["i.JPEG"]["width"], by_name["i.JPEG"]["height"]) == ("60", "60")


@pytest.mark.parametrize(
    "params",
    [resize_params(), resize_params(mode="pad", colorspace="gray", fill=[9, 8, 7])],
)
def test_outputs_are_byte_identical_whatever_the_threads(shard, tmp_path, params):
    paths, _ = shard
    paths = paths * 3  # enough work for several chunks per process
    one = _outputs(tmp_path, "one")
    two = _outputs(tmp_path, "two")
    three = _outputs(tmp_path, "three")
    assert resize_shard(paths, params, *one, threads=1) == resize_shard(
        paths, params, *two, threads=2
    )
    resize_shard(paths, params, *three, threads=3)
    for a, b, c in zip(one, two, three, strict=True):
        assert a.read_bytes() == b.read_bytes() == c.read_bytes()


def test_rerun_gives_the_same_bytes(shard, tmp_path):
    paths, _ = shard
    first = [p.read_bytes() for p in _write(paths, tmp_path, "x")]
    second = [p.read_bytes() for p in _write(paths, tmp_path, "x")]
    assert first == second


def _write(paths, directory, tag):
    outputs = _outputs(directory, tag)
    resize_shard(paths, resize_params(), *outputs)
    return outputs


def test_writes_are_atomic_and_leave_no_temp_files(shard, tmp_path):
    paths, _ = shard
    out = tmp_path / "out"
    _write(paths, out, "s")
    assert sorted(p.name for p in out.iterdir()) == ["s.meta.tsv", "s.rejects.tsv", "s.tar"]


def test_a_failure_midway_leaves_nothing_behind(shard, tmp_path, monkeypatch):
    paths, _ = shard
    out = tmp_path / "out"
    real = resize_module._process

    def fail_at_four(item):
        if item[0] == 4:
            raise RuntimeError("disk on fire")
        return real(item)

    monkeypatch.setattr(resize_module, "_process", fail_at_four)
    with pytest.raises(RuntimeError, match="disk on fire"):
        resize_shard(paths, resize_params(), *_outputs(out, "s"), threads=1)
    assert list(out.iterdir()) == []


def test_empty_shard(tmp_path):
    tar, meta, rejects = _outputs(tmp_path, "empty")
    assert resize_shard([], resize_params(), tar, meta, rejects, threads=4) == (0, 0)
    assert _table(meta) == [list(META_COLUMNS)]
    assert _table(rejects) == [list(REJECT_COLUMNS)]
    assert list(read_resized(tar)) == []


def test_read_resized_gives_positions_and_bytes(shard, tmp_path):
    paths, _ = shard
    tar, meta, rejects = _write(paths, tmp_path, "s")
    items = list(read_resized(tar))
    with tarfile.open(tar) as archive:
        for (position, data), member in zip(items, archive.getmembers(), strict=True):
            assert member.name == f"{position:06d}.jpg"
            assert archive.extractfile(member).read() == data


def test_shard_order_is_the_callers(tmp_path):
    """paths[i] is position i even when the pool finishes them out of order."""
    src = tmp_path / "src"
    src.mkdir()
    sizes = [(1600, 1200), (64, 48), (1200, 900), (32, 32)] * 4
    paths = []
    for i, size in enumerate(sizes):
        path = src / f"{i}.jpg"
        path.write_bytes(_jpeg(i, size))
        paths.append(str(path))
    tar, meta, rejects = _outputs(tmp_path, "s")
    resize_shard(paths, resize_params(mode="keep"), tar, meta, rejects, threads=2)
    rows = _table(meta)[1:]
    assert [int(row[0]) for row in rows] == list(range(len(sizes)))
    assert [(int(row[1]), int(row[2])) for row in rows] == sizes
