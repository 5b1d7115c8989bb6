"""Hostile trees and files: nothing hangs, multiplies, leaks, eats memory or is forgotten.

Each test is an attack a careless user or a hostile source makes: symlink loops and
links into another split, FIFOs and /dev/zero named like images or annotations, sparse
huge files, names that are not UTF-8, folders that cannot be listed, odd tar members and
XML that asks for entity expansion.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import tarfile
import tempfile
import time
from pathlib import Path

import pytest
from helpers import base_config, jpeg_bytes, make_tree
from imgprep.config import ConfigError, section_config, validate_config
from imgprep.files.tables import read_tsv
from imgprep.files.tars import read_resized
from imgprep.index import (
    ignored_path,
    scan,
    shard_index_path,
    update_index,
    write_split_table,
)
from imgprep.kernels.resize import ResizeParams
from imgprep.sourcefile import ReadLimits, read_file
from imgprep.sources.voc_boxes import parse_voc_xml, read_voc_boxes
from imgprep.stages.resize import resize_shard
from PIL import Image

LAYOUT = {"train/a": 3, "train/b": 3, "validation/a": 2, "validation/b": 2}
BAD_NAME = os.fsdecode(b"bad\xffname.JPEG")


class Blocked(BaseException):
    """Not an OSError (TimeoutError is one): a reader that turns OSErrors into rejects
    must not swallow it and read on."""


@contextlib.contextmanager
def deadline(seconds: int):
    """Fail (instead of hanging the suite) when the block blocks."""

    def expired(signum, frame):
        raise Blocked(f"still blocked after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "src"
    make_tree(root, LAYOUT)
    return root


def configure(root, tmp_path, **overrides):
    return validate_config(base_config(root, tmp_path / "results", **overrides))


def indexed(result, split) -> list[str]:
    return [p for shard in range(len(result.shards[split])) for p in result.paths(split, shard)]


def resize_one_shard(tmp_path, sources, limits=None, threads=1):
    out = tmp_path / "out"
    counts = resize_shard(
        sources,
        ResizeParams.from_config(section_config("resize", {"size": 32})),
        out / "s.tar",
        out / "s.meta.tsv",
        out / "s.rejects.tsv",
        threads=threads,
        **({} if limits is None else {"limits": limits}),
    )
    rejects = read_tsv(out / "s.rejects.tsv", ints=("position",))
    return counts, dict(zip(rejects["position"], rejects["reason"], strict=True)), out


# -- symlinks ---------------------------------------------------------------------------


def test_a_symlink_loop_does_not_multiply_images(tree, tmp_path):
    (tree / "train" / "a" / "loop").symlink_to(".")
    result = scan(configure(tree, tmp_path))
    train = indexed(result, "train")
    assert len(train) == len(set(train)) == 6
    assert dict(result.ignored)["train/a/loop"] == "symlink, not followed (to .)"


def test_a_symlink_into_validation_does_not_leak_it_into_train(tree, tmp_path):
    (tree / "train" / "a" / "leak").symlink_to("../../validation/b")
    (tree / "train" / "b" / "one.JPEG").symlink_to("../../validation/a/a_0.JPEG")
    (tree / "train" / "c").symlink_to("../validation/a")  # a whole class folder
    result = scan(configure(tree, tmp_path))
    train = [os.path.relpath(path, tree) for path in indexed(result, "train")]
    assert sorted(train) == [f"train/{c}/{c}_{i}.JPEG" for c in "ab" for i in range(3)]
    ignored = dict(result.ignored)
    assert ignored["train/a/leak"].startswith("symlink, not followed")
    assert ignored["train/b/one.JPEG"].startswith("symlink, not followed")
    assert ignored["train/c"].startswith("symlink, not followed")
    assert len(indexed(result, "validation")) == 4


# -- FIFOs, devices, huge files ---------------------------------------------------------


def test_a_fifo_named_like_an_image_is_ignored_by_the_scan(tree, tmp_path):
    os.mkfifo(tree / "train" / "a" / "x.JPEG")
    (tree / "train" / "b" / "zero.JPEG").symlink_to("/dev/zero")
    with deadline(10):
        result = scan(configure(tree, tmp_path))
    assert len(indexed(result, "train")) == 6
    ignored = dict(result.ignored)
    assert ignored["train/a/x.JPEG"] == "not a regular file (FIFO)"
    assert ignored["train/b/zero.JPEG"] == "symlink, not followed (to /dev/zero)"


def test_resize_rejects_fifos_devices_and_huge_files_without_reading_them(tmp_path):
    good = tmp_path / "good.JPEG"
    good.write_bytes(jpeg_bytes(40, 30))
    fifo = tmp_path / "x.JPEG"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.JPEG"
    zero.symlink_to("/dev/zero")
    sparse = tmp_path / "sparse.JPEG"
    with open(sparse, "wb") as handle:
        handle.truncate(2 * 1024**3)  # 2 GB of holes: nothing on disk
    started = time.perf_counter()
    with deadline(10):
        (resized, rejected), reasons, out = resize_one_shard(
            tmp_path, [str(good), str(fifo), str(zero), str(sparse)]
        )
    assert time.perf_counter() - started < 20
    assert (resized, rejected) == (1, 3)
    assert reasons == {
        1: "not a regular file (FIFO)",
        2: "not a regular file (character device)",
        3: "too large: 2147483648 bytes, more than source.max_file_bytes (67108864)",
    }
    [(position, data)] = list(read_resized(out / "s.tar"))
    assert position == 0 and Image.open(io.BytesIO(data)).size == (30, 30)  # center-crop


def test_the_byte_cap_is_a_config_key_and_symlinks_follow_only_when_asked(tmp_path):
    image = tmp_path / "big.JPEG"
    image.write_bytes(jpeg_bytes(64, 64, quality=95))
    link = tmp_path / "link.JPEG"
    link.symlink_to(image)
    size = image.stat().st_size
    (resized, rejected), reasons, _ = resize_one_shard(
        tmp_path,
        [str(image), str(link), str(link)],
        ReadLimits(max_bytes=size - 1),
        threads=2,
    )
    assert (resized, rejected) == (0, 3)
    assert reasons[0] == f"too large: {size} bytes, more than source.max_file_bytes ({size - 1})"
    (_, rejected), reasons, _ = resize_one_shard(
        tmp_path, [str(image), str(link)], ReadLimits(max_bytes=size, follow_symlinks=False)
    )
    assert rejected == 1 and reasons == {1: "symlink, not followed"}
    assert read_file(link, size, follow_symlinks=True) == image.read_bytes()
    config = configure(tmp_path, tmp_path)
    assert config["source"]["max_file_bytes"] == 64 * 1024 * 1024
    with pytest.raises(ConfigError, match="source.max_file_bytes"):
        configure(tmp_path, tmp_path, source={"root": str(tmp_path), "max_file_bytes": 0})


def test_a_fifo_named_xml_in_a_boxes_folder_does_not_hang_the_scan(tree, tmp_path):
    boxes = tmp_path / "boxes"
    boxes.mkdir()
    (boxes / "a_0.xml").write_bytes(
        b"<annotation><filename>a_0</filename><size><width>64</width><height>48</height>"
        b"</size><object><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>30</xmax><ymax>40</ymax>"
        b"</bndbox></object></annotation>"
    )
    os.mkfifo(boxes / "fifo.xml")
    (boxes / "zero.xml").symlink_to("/dev/zero")
    (boxes / "loop").symlink_to(".")
    splits = {"train": {"shards": 2, "boxes": str(boxes)}, "validation": {"shards": 1}}
    config = configure(tree, tmp_path, splits=splits)
    with deadline(10):
        result = update_index(config)
    ignored = dict(result.ignored)
    assert ignored[f"{boxes}:fifo.xml"] == "box annotation skipped: not a regular file (FIFO)"
    assert ignored[f"{boxes}:zero.xml"] == "box annotation skipped: symlink, not followed"
    assert ignored[f"{boxes}:loop"].startswith("box annotation skipped: symlink, not followed")
    lines = [line for shard in result.shards["train"] for line in shard]
    assert [line.rsplit("\t", 1)[1] for line in lines if "/a_0.JPEG" in line] == ["64 48 1 2 30 40"]


def test_a_fifo_named_as_the_boxes_archive_fails_naming_the_key(tree, tmp_path):
    os.mkfifo(tmp_path / "boxes.tar.gz")
    splits = {"train": {"shards": 2, "boxes": str(tmp_path / "boxes.tar.gz")}}
    config = configure(tree, tmp_path, splits={**splits, "validation": {"shards": 1}})
    with deadline(10), pytest.raises(ConfigError, match=r"splits.train.boxes.*\(FIFO\)"):
        scan(config)


def test_a_huge_box_annotation_is_skipped_unread(tmp_path):
    boxes = tmp_path / "boxes"
    boxes.mkdir()
    with open(boxes / "huge.xml", "wb") as handle:
        handle.truncate(1 << 30)
    with deadline(10):
        found, problems = read_voc_boxes(boxes, tmp_path / "cache", max_bytes=1 << 20)
    assert found == {}
    assert problems == [
        ("huge.xml", "too large: 1073741824 bytes, more than source.max_file_bytes (1048576)")
    ]


# -- names that are not UTF-8 -------------------------------------------------------------


def test_a_name_that_is_not_utf8_is_listed_not_crashed_on(tree, tmp_path):
    (tree / "train" / "a" / BAD_NAME).write_bytes(jpeg_bytes(seed=7))
    (tree / "train" / os.fsdecode(b"cl\xe9")).mkdir()
    (tree / "train" / os.fsdecode(b"cl\xe9") / "c_0.JPEG").write_bytes(jpeg_bytes(seed=8))
    config = configure(tree, tmp_path)
    result = update_index(config)
    assert len(indexed(result, "train")) == 6
    ignored = read_tsv(ignored_path(config["results"]))  # valid UTF-8, read back by pandas
    reasons = dict(zip(ignored["path"], ignored["reason"], strict=True))
    assert reasons["train/a/bad\\xffname.JPEG"].startswith("name is not valid UTF-8")
    assert reasons["train/cl\\xe9"].startswith("name is not valid UTF-8")
    shards = [shard_index_path(config["results"], "train", s) for s in range(4)]
    table = write_split_table(shards, tmp_path / "results/index/labels.tsv", tmp_path / "t.tsv")
    assert len(table) == 6
    (resized, rejected), _, _ = resize_one_shard(tmp_path, list(table["path"]))
    assert (resized, rejected) == (6, 0)


def test_a_manifest_that_is_not_utf8_fails_naming_the_key(tmp_path):
    manifest = tmp_path / "list.csv"
    manifest.write_bytes(b"path,label,split\nbad\xffname.JPEG,a,train\n")
    config = validate_config(
        {
            "results": str(tmp_path / "results"),
            "source": {"type": "manifest", "manifest": str(manifest)},
            "splits": {"train": {"shards": 1}},
        }
    )
    with pytest.raises(ConfigError, match="source.manifest.*not UTF-8"):
        scan(config)


# -- folders that cannot be listed --------------------------------------------------------


def test_an_unreadable_class_folder_is_listed_not_a_traceback(tree, tmp_path, monkeypatch):
    import imgprep.sources.common as scan_module

    locked = str(tree / "train" / "b")
    real = os.listdir

    def listdir(path="."):
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real(path)

    monkeypatch.setattr(scan_module.os, "listdir", listdir)
    result = scan(configure(tree, tmp_path))
    assert len(indexed(result, "train")) == 3
    assert dict(result.ignored)["train/b"] == "unreadable folder: Permission denied"


def test_an_unreadable_folder_for_real(tmp_path):
    """chmod 000 for real: root reads anything, so as root the scan runs as nobody in a
    child; any other user cannot read the folder already."""
    top = tempfile.mkdtemp(prefix="imgprep-eacces-", dir="/tmp")
    try:
        os.chmod(top, 0o755)
        root = os.path.join(top, "src")
        make_tree(Path(root), LAYOUT)
        for folder, _, _ in os.walk(top):
            os.chmod(folder, 0o755)
        os.chmod(os.path.join(root, "train", "b"), 0o000)
        config = validate_config(base_config(root, os.path.join(top, "results")))
        if os.geteuid() != 0:
            result = scan(config)
            assert len(indexed(result, "train")) == 3
            assert dict(result.ignored)["train/b"] == "unreadable folder: Permission denied"
            return
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            try:
                os.close(read_end)
                os.setgid(65534)
                os.setuid(65534)
                result = scan(config)
                text = f"{len(indexed(result, 'train'))}\n{dict(result.ignored).get('train/b')}"
            except BaseException as error:  # report, never return into pytest
                text = f"error\n{error!r}"
            os.write(write_end, text.encode())
            os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end) as reader:
            text = reader.read()
        os.waitpid(child, 0)
        assert text == "3\nunreadable folder: Permission denied"
    finally:
        os.chmod(os.path.join(top, "src", "train", "b"), 0o755)
        shutil.rmtree(top)


# -- tars -------------------------------------------------------------------------------


def _add(tar: tarfile.TarFile, name: str, data: bytes = b"", kind=tarfile.REGTYPE, link=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, len(data)
    tar.addfile(info, io.BytesIO(data) if data else None)


def _class_tar(names) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for i, name in enumerate(names):
            _add(tar, name, jpeg_bytes(seed=i))
    return buffer.getvalue()


def test_tar_links_and_inner_tars_with_unsafe_names_are_listed(tmp_path):
    root = tmp_path / "tars"
    root.mkdir()
    with tarfile.open(root / "train.tar", "w", format=tarfile.GNU_FORMAT) as tar:
        _add(tar, "n01.tar", _class_tar(["n01_1.JPEG", "n01_2.JPEG"]))
        _add(tar, "./n02.tar", _class_tar(["n02_1.JPEG"]))
        _add(tar, "../evil.tar", _class_tar(["e_1.JPEG"]))
        _add(tar, "/abs.tar", _class_tar(["f_1.JPEG"]))
        _add(tar, "loose.JPEG", jpeg_bytes(seed=9))
        _add(tar, "sym.JPEG", kind=tarfile.SYMTYPE, link="n01.tar")
        _add(tar, "hard.JPEG", kind=tarfile.LNKTYPE, link="loose.JPEG")
        _add(tar, "pipe.JPEG", kind=tarfile.FIFOTYPE)
    config = validate_config(
        {
            "results": str(tmp_path / "results"),
            "source": {"type": "tars", "root": str(root)},
            "splits": {"train": {"tar": "train.tar", "shards": 2}},
        }
    )
    for _ in range(2):  # listing, then the cached listing: the same answer
        result = update_index(config)
        lines = [line.split("\t") for shard in result.shards["train"] for line in shard]
        assert sorted((path.rpartition("!/")[2], cls) for path, cls, *_ in lines) == [
            ("./n02.tar/n02_1.JPEG", "n02"),
            ("n01.tar/n01_1.JPEG", "n01"),
            ("n01.tar/n01_2.JPEG", "n01"),
        ]
        ignored = dict(result.ignored)
        assert ignored["train.tar!/sym.JPEG"] == "symlink member, not followed (to n01.tar)"
        assert ignored["train.tar!/hard.JPEG"] == "hard link member, not read (to loose.JPEG)"
        assert ignored["train.tar!/pipe.JPEG"] == "not a regular file (FIFO)"
        assert ignored["train.tar!/loose.JPEG"].startswith("not inside a class tar")
        assert "absolute or has '..'" in ignored["train.tar!/../evil.tar/e_1.JPEG"]
        assert "absolute or has '..'" in ignored["train.tar!//abs.tar/f_1.JPEG"]
        assert [label for _, label, *_ in result.labels] == [0, 1]


# -- XML --------------------------------------------------------------------------------

UTF16_ENTITY = (
    '<?xml version="1.0" encoding="UTF-16"?>'
    '<!DOCTYPE annotation [<!ENTITY e "n01440764_1">]>'
    "<annotation><filename>&e;</filename><object><bndbox><xmin>1</xmin><ymin>1</ymin>"
    "<xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>"
).encode("utf-16")


def test_a_utf16_xml_with_an_internal_entity_is_refused():
    with pytest.raises(ValueError, match="DTDs and entity declarations are not accepted"):
        parse_voc_xml(UTF16_ENTITY, "x")


def test_a_utf16_xml_with_an_entity_in_a_boxes_folder_is_a_problem(tmp_path):
    boxes = tmp_path / "boxes"
    boxes.mkdir()
    (boxes / "n01440764_1.xml").write_bytes(UTF16_ENTITY)
    found, problems = read_voc_boxes(boxes, tmp_path / "cache")
    assert found == {}
    assert [(name, reason.split(" (")[0]) for name, reason in problems] == [
        ("n01440764_1.xml", "DTDs and entity declarations are not accepted")
    ]


# -- the whole workflow -------------------------------------------------------------------


def test_the_workflow_on_a_hostile_tree_accounts_for_everything(tmp_path):
    """FIFOs, links, a sparse 2 GB image, a non-UTF-8 name and a FIFO among the box XMLs:
    the dry run answers at once, the run finishes, records + rejects = index."""
    import json

    from test_workflow import new_workdir, snakemake, write_config

    work = new_workdir(tmp_path / "w")
    cls = work / "sample" / "train" / "n02123045"
    os.mkfifo(cls / "fifo.JPEG")
    (cls / "zero.JPEG").symlink_to("/dev/zero")
    (cls / "loop").symlink_to(".")
    (cls / "leak").symlink_to("../../validation/n04266014")
    (cls / BAD_NAME).write_bytes(jpeg_bytes(seed=3))
    with open(cls / "sparse.JPEG", "wb") as handle:
        handle.truncate(2 * 1024**3)
    boxes = work / "boxes"
    boxes.mkdir()
    os.mkfifo(boxes / "n02123045_1.xml")
    write_config(work, splits={"train": {"dir": "train", "shards": 4, "boxes": "boxes"}})
    started = time.perf_counter()
    snakemake(work, "-n")
    dry_run = time.perf_counter() - started
    assert dry_run < 60
    snakemake(work, "--cores", "2")
    summary = json.loads((work / "results" / "summary.json").read_text())
    train = summary["splits"]["train"]
    assert (train["images"], train["rejects"]) == (44, 1)
    assert train["schemas"]["imagenet"]["records"] == 43
    rejects = read_tsv(work / "results" / "rejects.tsv")
    assert dict(zip(rejects["path"], rejects["reason"], strict=True))[
        "sample/train/n02123045/sparse.JPEG"
    ].startswith("too large: 2147483648 bytes")
    ignored = read_tsv(work / "results" / "index" / "ignored.tsv")
    reasons = dict(zip(ignored["path"], ignored["reason"], strict=True))
    prefix = "train/n02123045/"
    assert reasons[prefix + "fifo.JPEG"] == "not a regular file (FIFO)"
    assert reasons[prefix + "zero.JPEG"].startswith("symlink, not followed")
    assert reasons[prefix + "loop"].startswith("symlink, not followed")
    assert reasons[prefix + "leak"].startswith("symlink, not followed")
    assert reasons[prefix + "bad\\xffname.JPEG"].startswith("name is not valid UTF-8")
    assert reasons["boxes:n02123045_1.xml"].endswith("not a regular file (FIFO)")
