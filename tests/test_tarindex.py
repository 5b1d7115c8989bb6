"""Listing and reading ILSVRC-style tars in place, checked against tarfile's own reading."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import tarfile

import pytest
from helpers import jpeg_bytes
from imgprep import tarindex
from imgprep.tarindex import (
    TarIndexError,
    TarMember,
    TruncatedMemberError,
    cached_list_tar,
    list_tar,
    read_member,
)

FORMATS = {"gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT, "ustar": tarfile.USTAR_FORMAT}
WNIDS = ("n01440764", "n01443537", "n01484850")
# > 100 characters: a GNU long-name record, a pax path record, or (ustar) the prefix field
LONG_NAME = (
    "a_rather_long_folder_name_" * 3 + "/" + "an_image_whose_name_alone_is_long_" * 2 + ".JPEG"
)


def add_file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 1_300_000_000
    tar.addfile(info, io.BytesIO(data))


def add_special(tar: tarfile.TarFile, name: str, kind: bytes, target: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    info.mtime = 1_300_000_000
    tar.addfile(info)


def tar_bytes(files: dict[str, bytes], fmt: int, extras: bool = False) -> bytes:
    """An uncompressed tar of ``files`` in order; ``extras`` adds a directory and links."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        if extras:
            add_special(tar, "a_directory", tarfile.DIRTYPE)
        for name, data in files.items():
            add_file(tar, name, data)
        if extras:
            first = next(iter(files))
            add_special(tar, "a_symlink.JPEG", tarfile.SYMTYPE, first)
            add_special(tar, "a_hardlink.JPEG", tarfile.LNKTYPE, first)
    return buffer.getvalue()


def class_files(wnid: str, count: int, seed: int, long_name: bool) -> dict[str, bytes]:
    files = {f"{wnid}_{1000 + i}.JPEG": jpeg_bytes(8 + i, 8, seed=seed + i) for i in range(count)}
    if long_name:
        files[f"{wnid}_{LONG_NAME}"] = jpeg_bytes(9, 9, seed=seed + 99)
    return files


def make_train_tar(path, fmt: int = tarfile.PAX_FORMAT) -> dict[str, bytes]:
    """An ILSVRC train-style tar of per-class tars; returns {expected name: bytes}."""
    inner_tars = {}
    expected = {}
    for k, wnid in enumerate(WNIDS):
        files = class_files(wnid, 2 + k, seed=10 * k, long_name=k == 1)
        inner_tars[f"{wnid}.tar"] = tar_bytes(files, fmt, extras=k == 0)
        expected.update({f"{wnid}.tar/{name}": data for name, data in files.items()})
    path.write_bytes(tar_bytes(inner_tars, fmt, extras=True))
    return expected


def make_val_tar(path, count: int = 5, fmt: int = tarfile.GNU_FORMAT) -> dict[str, bytes]:
    files = {
        f"ILSVRC2012_val_{i:08d}.JPEG": jpeg_bytes(8, 8 + i, seed=i) for i in range(1, count + 1)
    }
    path.write_bytes(tar_bytes(files, fmt))
    return files


def tarfile_listing(path) -> list[tuple[str, int, int]]:
    """The oracle: regular members and data offsets as tarfile sees them."""
    with tarfile.open(path) as tar:
        return [(m.name, m.offset_data, m.size) for m in tar.getmembers() if m.isreg()]


def nested_tarfile_listing(path) -> list[tuple[str, int, int]]:
    found = []
    for name, offset, size in tarfile_listing(path):
        with open(path, "rb") as handle:
            handle.seek(offset)
            inner = handle.read(size)
        with tarfile.open(fileobj=io.BytesIO(inner)) as tar:
            found += [
                (f"{name}/{m.name}", offset + m.offset_data, m.size)
                for m in tar.getmembers()
                if m.isreg()
            ]
    return found


def header_offsets(path) -> dict[str, int]:
    with tarfile.open(path) as tar:
        return {m.name: m.offset for m in tar.getmembers()}


def spy_on_list_tar(monkeypatch) -> list:
    calls = []
    real = tarindex.list_tar

    def spy(path, nested, skipped=None):
        calls.append(path)
        return real(path, nested, skipped)

    monkeypatch.setattr(tarindex, "list_tar", spy)
    return calls


# -- listing --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_nested_listing_names_every_image_and_reads_its_exact_bytes(tmp_path, fmt):
    path = tmp_path / "ILSVRC2012_img_train.tar"
    expected = make_train_tar(path, fmt)

    members = list_tar(path, nested=True)

    assert [m.name for m in members] == list(expected)
    assert all(isinstance(m, TarMember) for m in members)
    assert [tuple(m) for m in members] == nested_tarfile_listing(path)
    for member in members:
        assert read_member(path, member.offset, member.size) == expected[member.name]
    assert any(len(m.name) > 100 for m in members)


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_flat_listing_of_a_tar_of_tars_lists_the_inner_tars(tmp_path, fmt):
    path = tmp_path / "train.tar"
    make_train_tar(path, fmt)
    with tarfile.open(path) as tar:
        inner = {name: tar.extractfile(name).read() for name in tar.getnames()[1:4]}

    members = list_tar(path, nested=False)

    assert [m.name for m in members] == [f"{wnid}.tar" for wnid in WNIDS]
    assert [tuple(m) for m in members] == tarfile_listing(path)
    for member in members:
        assert read_member(path, member.offset, member.size) == inner[member.name]


def test_val_style_flat_tar(tmp_path):
    path = tmp_path / "ILSVRC2012_img_val.tar"
    expected = make_val_tar(path)

    for nested in (False, True):
        members = list_tar(path, nested=nested)
        assert [m.name for m in members] == list(expected)
        assert [read_member(path, m.offset, m.size) for m in members] == list(expected.values())


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=FORMATS.keys())
def test_offsets_match_tarfile_around_block_boundaries(tmp_path, fmt):
    path = tmp_path / "sizes.tar"
    files = {f"f{size}.bin": bytes([size % 251]) * size for size in (0, 1, 511, 512, 513, 1025)}
    path.write_bytes(tar_bytes(files, fmt, extras=True))

    members = list_tar(path, nested=False)

    assert [tuple(m) for m in members] == tarfile_listing(path)
    assert [read_member(path, m.offset, m.size) for m in members] == list(files.values())


def test_upper_case_inner_tar_suffix_is_descended_into(tmp_path):
    path = tmp_path / "outer.tar"
    inner = tar_bytes({"x.JPEG": b"abc"}, tarfile.GNU_FORMAT)
    path.write_bytes(tar_bytes({"CLASS.TAR": inner, "notes.txt": b"hi"}, tarfile.GNU_FORMAT))

    members = list_tar(path, nested=True)

    assert [m.name for m in members] == ["CLASS.TAR/x.JPEG", "notes.txt"]
    assert [read_member(path, m.offset, m.size) for m in members] == [b"abc", b"hi"]


def test_pax_global_headers_and_non_ascii_names(tmp_path):
    path = tmp_path / "git-archive-like.tar"
    buffer = io.BytesIO()
    with tarfile.open(
        fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"comment": "abc123"}
    ) as tar:
        add_file(tar, "café/naïve.JPEG", b"first")
        add_file(tar, "plain.JPEG", b"second")
    path.write_bytes(buffer.getvalue())

    members = list_tar(path, nested=False)

    assert [m.name for m in members] == ["café/naïve.JPEG", "plain.JPEG"]
    assert [tuple(m) for m in members] == tarfile_listing(path)


def rewrite_header(raw: bytearray, at: int, field: slice, value: bytes) -> None:
    """Put ``value`` into one header field and fix the header's checksum."""
    raw[field] = value
    raw[at + 148 : at + 156] = b" " * 8
    raw[at + 148 : at + 156] = b"%06o\0 " % sum(raw[at : at + 512])


def test_base256_size_field_is_read(tmp_path):
    path = tmp_path / "base256.tar"
    raw = bytearray(tar_bytes({"a.bin": b"x" * 700, "b.bin": b"y"}, tarfile.GNU_FORMAT))
    rewrite_header(raw, 0, slice(124, 136), b"\x80" + (700).to_bytes(11, "big"))
    path.write_bytes(raw)

    assert [tuple(m) for m in list_tar(path, nested=False)] == [
        ("a.bin", 512, 700),
        ("b.bin", 512 + 1024 + 512, 1),
    ]


def test_signed_header_checksum_of_old_tars_is_accepted(tmp_path):
    path = tmp_path / "old.tar"
    raw = bytearray(tar_bytes({"café.JPEG": b"x" * 3}, tarfile.GNU_FORMAT))
    raw[148:156] = b" " * 8
    signed = sum(byte - 256 if byte >= 128 else byte for byte in raw[:512])
    assert signed != sum(raw[:512])
    raw[148:156] = b"%06o\0 " % signed
    path.write_bytes(raw)

    assert [tuple(m) for m in list_tar(path, nested=False)] == [("café.JPEG", 512, 3)]


def test_sparse_member_is_refused(tmp_path):
    path = tmp_path / "sparse.tar"
    raw = bytearray(tar_bytes({"a.bin": b"x" * 10}, tarfile.GNU_FORMAT))
    rewrite_header(raw, 0, slice(156, 157), b"S")
    path.write_bytes(raw)

    with pytest.raises(TarIndexError, match="sparse"):
        list_tar(path, nested=False)


@pytest.mark.parametrize("nested", [False, True])
def test_empty_tar_lists_nothing(tmp_path, nested):
    path = tmp_path / "empty.tar"
    path.write_bytes(tar_bytes({}, tarfile.GNU_FORMAT))

    assert list_tar(path, nested=nested) == []


def test_empty_inner_tar_contributes_nothing(tmp_path):
    path = tmp_path / "outer.tar"
    empty = tar_bytes({}, tarfile.GNU_FORMAT)
    path.write_bytes(tar_bytes({"a.tar": empty, "b.JPEG": b"b"}, tarfile.GNU_FORMAT))

    assert [m.name for m in list_tar(path, nested=True)] == ["b.JPEG"]


def test_zero_byte_file_is_not_an_empty_tar(tmp_path):
    path = tmp_path / "download-failed.tar"
    path.write_bytes(b"")

    with pytest.raises(TarIndexError, match="empty file"):
        list_tar(path, nested=True)


# -- refusals -------------------------------------------------------------------------

COMPRESSORS = {"gzip": gzip.compress, "bzip2": bz2.compress, "xz": lzma.compress}


@pytest.mark.parametrize("kind", COMPRESSORS)
def test_compressed_tar_is_refused_with_the_reason(tmp_path, kind):
    path = tmp_path / "ILSVRC2012_img_val.tar.gz"
    plain = tar_bytes({"a.JPEG": jpeg_bytes(seed=1)}, tarfile.GNU_FORMAT)
    path.write_bytes(COMPRESSORS[kind](plain))

    with pytest.raises(TarIndexError) as error:
        list_tar(path, nested=False)

    message = str(error.value)
    assert str(path) in message and kind in message
    assert "uncompressed" in message and "ILSVRC2012" in message


def test_compressed_inner_tar_is_refused_naming_it(tmp_path):
    path = tmp_path / "outer.tar"
    inner = gzip.compress(tar_bytes({"a.JPEG": b"a"}, tarfile.GNU_FORMAT))
    path.write_bytes(tar_bytes({"n01440764.tar": inner}, tarfile.GNU_FORMAT))

    with pytest.raises(TarIndexError, match=r"n01440764\.tar.*gzip"):
        list_tar(path, nested=True)
    assert [m.name for m in list_tar(path, nested=False)] == ["n01440764.tar"]


def last_member_cuts(path) -> dict[str, int]:
    """Byte counts to keep: inside the last header, inside its data, before the end block."""
    with tarfile.open(path) as tar:
        last = tar.getmembers()[-1]
    end_of_data = last.offset_data + (last.size + 511) // 512 * 512
    return {
        "in header": last.offset + 100,
        "in data": last.offset_data + last.size // 2,
        "no end block": end_of_data,
    }


@pytest.mark.parametrize("cut", ["in header", "in data", "no end block"])
def test_truncated_outer_tar_is_refused_naming_file_and_offset(tmp_path, cut):
    path = tmp_path / "ILSVRC2012_img_val.tar"
    last_name = list(make_val_tar(path))[-1]
    keep = last_member_cuts(path)[cut]
    with open(path, "r+b") as handle:
        handle.truncate(keep)

    with pytest.raises(TarIndexError, match="truncated") as error:
        list_tar(path, nested=False)

    assert str(path) in str(error.value)
    assert str(keep) in str(error.value)
    if cut == "in data":
        assert last_name in str(error.value)


@pytest.mark.parametrize("cut", ["in header", "in data", "no end block"])
def test_truncated_inner_tar_is_refused_naming_it(tmp_path, cut):
    whole = tmp_path / "whole_inner.tar"
    expected = class_files("n01443537", 3, seed=5, long_name=False)
    whole.write_bytes(tar_bytes(expected, tarfile.GNU_FORMAT))
    broken = whole.read_bytes()[: last_member_cuts(whole)[cut]]
    path = tmp_path / "ILSVRC2012_img_train.tar"
    healthy = tar_bytes({"x.JPEG": b"x"}, tarfile.GNU_FORMAT)
    inner = {"n01440764.tar": healthy, "n01443537.tar": broken, "n01484850.tar": healthy}
    path.write_bytes(tar_bytes(inner, tarfile.GNU_FORMAT))

    with pytest.raises(TarIndexError, match="truncated") as error:
        list_tar(path, nested=True)

    assert str(path) in str(error.value) and "n01443537.tar" in str(error.value)


def test_corrupt_header_is_refused_naming_its_offset(tmp_path):
    path = tmp_path / "val.tar"
    names = list(make_val_tar(path))
    at = header_offsets(path)[names[2]]
    raw = bytearray(path.read_bytes())
    raw[at + 3] ^= 0x01  # one flipped bit in the name
    path.write_bytes(raw)

    with pytest.raises(TarIndexError, match=f"corrupt tar header at offset {at}"):
        list_tar(path, nested=False)


def test_corrupt_inner_header_is_refused(tmp_path):
    path = tmp_path / "train.tar"
    make_train_tar(path, tarfile.GNU_FORMAT)
    raw = bytearray(path.read_bytes())
    second = header_offsets(path)["n01443537.tar"] + 512
    raw[second + 130] ^= 0x04  # the size field of the inner tar's first header
    path.write_bytes(raw)

    with pytest.raises(TarIndexError, match=r"n01443537\.tar.*corrupt"):
        list_tar(path, nested=True)
    assert len(list_tar(path, nested=False)) == 3


def test_not_a_tar_is_refused(tmp_path):
    path = tmp_path / "photo.tar"
    path.write_bytes(jpeg_bytes(seed=3))

    with pytest.raises(TarIndexError, match="offset 0"):
        list_tar(path, nested=False)


# -- reading --------------------------------------------------------------------------


def test_read_member_short_read_is_a_truncation_oserror(tmp_path):
    path = tmp_path / "val.tar"
    expected = make_val_tar(path)
    first, *_, last = list_tar(path, nested=False)
    assert read_member(path, last.offset, last.size) == expected[last.name]
    with open(path, "r+b") as handle:
        handle.truncate(last.offset + last.size - 1)

    with pytest.raises(TruncatedMemberError, match="truncated") as error:
        read_member(path, last.offset, last.size)

    assert isinstance(error.value, OSError) and str(path) in str(error.value)
    assert read_member(path, first.offset, 10) == expected[first.name][:10]
    assert read_member(path, last.offset, 0) == b""


# -- the cache ------------------------------------------------------------------------


def test_cache_hit_does_not_read_the_tar_again(tmp_path, monkeypatch):
    path = tmp_path / "train.tar"
    make_train_tar(path)
    cache_dir = tmp_path / "cache"
    calls = spy_on_list_tar(monkeypatch)

    first = cached_list_tar(path, True, cache_dir)
    second = cached_list_tar(path, True, cache_dir)

    assert len(calls) == 1
    assert first == second == list_tar(path, nested=True)
    assert all(type(m) is TarMember for m in second)
    (cache_file,) = cache_dir.iterdir()
    stat = path.stat()
    assert cache_file.name.startswith("train.tar.")
    assert f".nested.{stat.st_size}.{stat.st_mtime_ns}." in cache_file.name


def test_cache_keeps_nested_and_flat_listings_apart(tmp_path, monkeypatch):
    path = tmp_path / "train.tar"
    make_train_tar(path)
    cache_dir = tmp_path / "cache"
    calls = spy_on_list_tar(monkeypatch)

    nested = cached_list_tar(path, True, cache_dir)
    flat = cached_list_tar(path, False, cache_dir)

    assert len(calls) == 2
    assert nested == list_tar(path, nested=True) and flat == list_tar(path, nested=False)
    assert cached_list_tar(path, True, cache_dir) == nested
    assert cached_list_tar(path, False, cache_dir) == flat
    assert len(calls) == 2
    assert len(list(cache_dir.iterdir())) == 2


def test_cache_is_invalidated_by_a_changed_tar(tmp_path, monkeypatch):
    path = tmp_path / "val.tar"
    make_val_tar(path)
    cache_dir = tmp_path / "cache"
    calls = spy_on_list_tar(monkeypatch)
    cached_list_tar(path, False, cache_dir)

    # same size, new mtime
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    cached_list_tar(path, False, cache_dir)
    assert len(calls) == 2

    # new contents and size
    files = {"only.JPEG": jpeg_bytes(seed=42)}
    path.write_bytes(tar_bytes(files, tarfile.GNU_FORMAT))
    members = cached_list_tar(path, False, cache_dir)
    assert len(calls) == 3
    assert [m.name for m in members] == ["only.JPEG"]
    assert read_member(path, members[0].offset, members[0].size) == files["only.JPEG"]
    assert len(list(cache_dir.iterdir())) == 1  # the stale cache files are gone


def damage_truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def damage_digit(data: bytes) -> bytes:
    at = data.index(b"0000000000000200 ") + 13  # the first member's offset, 512
    return data[:at] + b"6" + data[at + 1 :]


def damage_name(data: bytes) -> bytes:
    return data.replace(b"ILSVRC2012_val_00000003", b"ILSVRC2012_val_00000009")


def damage_count(data: bytes) -> bytes:
    return data.replace(b"members=", b"members=1")


def damage_garbage(data: bytes) -> bytes:
    return b"\x00\xff" * 40


DAMAGES = [damage_truncate, damage_digit, damage_name, damage_count, damage_garbage]


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_cache_is_rebuilt(tmp_path, monkeypatch, damage):
    path = tmp_path / "val.tar"
    make_val_tar(path)
    cache_dir = tmp_path / "cache"
    good = cached_list_tar(path, False, cache_dir)
    (cache_file,) = cache_dir.iterdir()
    intact = cache_file.read_bytes()
    cache_file.write_bytes(damage(intact))
    calls = spy_on_list_tar(monkeypatch)

    assert cached_list_tar(path, False, cache_dir) == good
    assert len(calls) == 1
    assert cache_file.read_bytes() == intact


def test_cache_round_trips_awkward_names(tmp_path, monkeypatch):
    path = tmp_path / "awkward.tar"
    names = ["tab\there.JPEG", "new\nline.JPEG", "back\\slash\\t.JPEG", "ünï\u2028cødé.JPEG"]
    names.append("carriage\rreturn.JPEG")
    path.write_bytes(tar_bytes({name: name.encode() for name in names}, tarfile.PAX_FORMAT))
    cache_dir = tmp_path / "cache"
    built = cached_list_tar(path, False, cache_dir)
    calls = spy_on_list_tar(monkeypatch)

    loaded = cached_list_tar(path, False, cache_dir)

    assert calls == []
    assert [m.name for m in loaded] == names
    assert loaded == built == list_tar(path, nested=False)


def test_cache_of_an_empty_tar(tmp_path, monkeypatch):
    path = tmp_path / "empty.tar"
    path.write_bytes(tar_bytes({}, tarfile.GNU_FORMAT))
    cache_dir = tmp_path / "cache"
    assert cached_list_tar(path, True, cache_dir) == []
    calls = spy_on_list_tar(monkeypatch)

    assert cached_list_tar(path, True, cache_dir) == []
    assert calls == []


def test_cache_file_is_deterministic(tmp_path):
    path = tmp_path / "train.tar"
    make_train_tar(path)
    cache_dir = tmp_path / "cache"
    cached_list_tar(path, True, cache_dir)
    (cache_file,) = cache_dir.iterdir()
    first = cache_file.read_bytes()
    cache_file.unlink()

    cached_list_tar(path, True, cache_dir)

    assert cache_file.read_bytes() == first


def test_broken_tar_writes_no_cache(tmp_path):
    path = tmp_path / "val.tar"
    make_val_tar(path)
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)
    cache_dir = tmp_path / "cache"

    with pytest.raises(TarIndexError):
        cached_list_tar(path, False, cache_dir)

    assert not cache_dir.exists() or list(cache_dir.iterdir()) == []


def test_tar_changing_while_listed_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "val.tar"
    make_val_tar(path)
    real = tarindex.list_tar

    def list_then_touch(tar_path, nested, skipped=None):
        members = real(tar_path, nested, skipped)
        stat = os.stat(tar_path)
        os.utime(tar_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
        return members

    monkeypatch.setattr(tarindex, "list_tar", list_then_touch)

    with pytest.raises(TarIndexError, match="changed while"):
        cached_list_tar(path, False, tmp_path / "cache")
