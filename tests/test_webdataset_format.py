"""The webdataset format: tar shards that the ``webdataset`` package streams and ``wids``
opens by our shard index, read back by both and compared with the index; the README's
snippets are the code run here."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import webdataset
from helpers import dataset_folders, jpeg_bytes
from imgprep.formats import get_format
from imgprep.formats.base import Sample, UnreadableShard
from PIL import Image
from test_workflow import new_workdir, snakemake, write_config

FORMAT = get_format("webdataset")
FOLDER = Path("results") / "records" / "webdataset"
# wids imports torch for its Dataset base class and the distributed rank alone; where
# torch is not installed these stand in, so that wids' own index, tar and decoder code runs
TORCH_STAND_IN = """
import importlib.util, sys, types
if importlib.util.find_spec("torch") is None:
    torch, utils, data, dist = (types.ModuleType(n) for n in
        ("torch", "torch.utils", "torch.utils.data", "torch.distributed"))
    class Dataset:
        def __class_getitem__(cls, item):
            return cls
    data.Dataset = data.Sampler = Dataset
    dist.is_initialized = lambda: False
    torch.utils, utils.data, torch.distributed = utils, data, dist
    sys.modules.update({m.__name__: m for m in (torch, utils, data, dist)})
"""
# a name with dots (webdataset's key ends at the first one), non-ASCII and spaces, and
# one basename in two classes
ODD_NAMES = {
    "train/n02123045/x.y.z café ☕.JPEG": "train/n02123045/n02123045_10.JPEG",
    "train/n04266014/n02123045_11.jpg": "train/n02123045/n02123045_11.jpg",
}


def readme_snippet(name: str) -> str:
    from test_loaders import readme_snippet as snippet

    return snippet(name)


def sample(position: int, name: str, label_index: int | None = 0, mode="RGB", **extra) -> Sample:
    data = jpeg_bytes(width=20, height=12, seed=position, mode=mode)
    return Sample(
        position=position,
        path=f"src/{name}",
        data=data,
        width=20,
        height=12,
        channels=3 if mode == "RGB" else 1,
        colorspace="RGB" if mode == "RGB" else "Grayscale",
        label_index=label_index,
        synset="" if label_index is None else f"n{label_index}",
        text="" if label_index is None else f"text {label_index}",
        **extra,
    )


def samples() -> list[Sample]:
    return [
        sample(0, "a.JPEG", 0, boxes=((0.1, 0.2, 0.5, 0.75),)),
        sample(1, os.fsdecode(b"caf\xe9.jpg"), 1),  # not UTF-8: a surrogate escape
        sample(2, "x.y.JPEG", None, mode="L"),  # unlabelled, gray, dotted
    ]


class Problems:
    def __init__(self):
        self.found = []

    def add(self, kind, example):
        self.found.append((kind, example))


def verify(path: Path, expected: dict) -> tuple[list, Counter, int]:
    """What the verify stage does with the format's reader and check_batch."""
    problems, seen, count = Problems(), {"names": Counter(), "labels": set()}, 0
    for batch in FORMAT.reader(1).batches(path, ""):
        FORMAT.check_batch(batch, count, expected, problems, seen)
        count += len(batch["filename"])
    return problems.found, seen["names"], count


def expected_of(items) -> dict:
    expected = {}
    for s in items:
        label = FORMAT.label(s.label_index, 1)
        expected.setdefault(s.filename, []).append((label, s.synset, s.text))
    return expected


# -- the shard ------------------------------------------------------------------------


def test_same_samples_give_the_same_bytes_with_headers_free_of_clock_and_owner(tmp_path):
    first = FORMAT.write_shard(samples(), tmp_path / "a" / "train-000003.tar", "", None, 1)
    second = FORMAT.write_shard(samples(), tmp_path / "b" / "train-000003.tar", "", None, 1)
    a, b = (tmp_path / d / "train-000003.tar" for d in "ab")
    assert a.read_bytes() == b.read_bytes()
    assert first == second and first["records"] == 3 and first["bytes"] == a.stat().st_size
    with tarfile.open(a) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == [
        f"train-000003-00000{i}.{ext}" for i in range(3) for ext in ("cls", "jpg", "json")
    ]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {
        (0, 0, 0, "", "", 0o644)
    }
    assert not list(a.parent.glob(".*"))  # no temp left beside it


def test_webdataset_groups_and_decodes_each_sample_as_written(tmp_path):
    shard = tmp_path / "train-000000.tar"
    FORMAT.write_shard(samples(), shard, "", None, 1)
    got = list(webdataset.WebDataset(str(shard), shardshuffle=False).decode("pil"))
    assert [s["__key__"] for s in got] == [f"train-000000-00000{i}" for i in range(3)]
    assert [s["cls"] for s in got] == [0, 1, -1]  # 0-based whatever labels.base; -1: none
    for read, written in zip(got, samples(), strict=True):
        assert isinstance(read["jpg"], Image.Image)
        assert read["jpg"].size == (written.width, written.height)
        assert read["json"]["filename"] == written.filename  # the surrogate comes back
        assert read["json"]["synset"] == written.synset
        assert read["json"]["text"] == written.text
        assert read["json"]["boxes"] == [list(box) for box in written.boxes]
        # decode("pil") gives RGB, a gray JPEG too
        pixels = np.asarray(Image.open(io.BytesIO(written.data)).convert("RGB"))
        assert np.array_equal(np.asarray(read["jpg"]), pixels)
    rgb = next(iter(webdataset.WebDataset(str(shard), shardshuffle=False).decode("rgb")))
    assert rgb["jpg"].shape == (12, 20, 3) and rgb["jpg"].dtype == np.float32


def test_an_empty_shard_is_a_tar_with_no_sample(tmp_path):
    shard = tmp_path / "validation-000001.tar"
    assert FORMAT.write_shard([], shard, "", None, 1)["records"] == 0
    # webdataset refuses a dataset with no sample at all unless told (an empty shard among
    # others is read as it is)
    assert list(webdataset.WebDataset(str(shard), shardshuffle=False, empty_check=False)) == []
    assert verify(shard, {}) == ([], Counter(), 0)


def test_verification_reads_back_names_labels_and_shapes(tmp_path):
    shard = tmp_path / "train-000000.tar"
    FORMAT.write_shard(samples(), shard, "", None, 1)
    expected = expected_of(samples())
    problems, names, count = verify(shard, expected)
    assert problems == [] and count == 3
    assert names == Counter({name: len(rows) for name, rows in expected.items()})
    wrong = {**expected, "a.JPEG": [(5, "n5", "text 5")]}
    assert [kind for kind, _ in verify(shard, wrong)[0]] == ["wrong label"]


def test_a_sample_missing_a_member_is_an_unreadable_shard(tmp_path):
    shard = tmp_path / "train-000000.tar"
    FORMAT.write_shard(samples(), shard, "", None, 1)
    cut = tmp_path / "cut" / shard.name
    cut.parent.mkdir()
    with tarfile.open(shard) as source, tarfile.open(cut, "w", format=tarfile.USTAR_FORMAT) as out:
        for member in source.getmembers():
            if member.name != "train-000000-000001.cls":
                out.addfile(member, source.extractfile(member))
    with pytest.raises(UnreadableShard, match="train-000000-000001 has members"):
        verify(cut, expected_of(samples()))


def test_the_wids_shard_index_lists_each_shard_from_the_report():
    from imgprep.formats.base import MetadataInputs

    report = {
        "splits": {
            "train": [
                {"record": "train-000000.tar", "records": 3, "bytes": 10240},
                {"record": "train-000001.tar", "records": 0, "bytes": 10240},
            ]
        }
    }
    paths = {"train": ["train-000000.tar", "train-000001.tar"]}
    assert FORMAT.metadata_files(["train"], "") == ["train.shardindex.json"]
    text = FORMAT.metadata("train.shardindex.json", MetadataInputs(report, paths, "", 1, {}))
    assert json.loads(text) == {
        "__kind__": "wids-shard-index-v1",
        "wids_version": 1,
        "name": "train",
        "shardlist": [
            {"url": "train-000000.tar", "nsamples": 3, "filesize": 10240},
            {"url": "train-000001.tar", "nsamples": 0, "filesize": 10240},
        ],
    }


# -- the workflow, read by webdataset and wids ---------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The sample as webdataset shards, with odd names and more validation shards than
    validation images (empty shards)."""
    return build_odd_sample(tmp_path_factory.mktemp("webdataset") / "work", "webdataset")


def build_odd_sample(folder: Path, schema: str) -> Path:
    """The sample with ODD_NAMES added, 3 train and 12 validation shards, built as ``schema``."""
    work = new_workdir(folder)
    for new, original in ODD_NAMES.items():
        shutil.copyfile(work / "sample" / original, work / "sample" / new)
    write_config(
        work,
        records={"schemas": [schema]},
        splits={
            "train": {"dir": "train", "shards": 3},
            "validation": {"dir": "validation", "shards": 12},
        },
    )
    snakemake(work, "--cores", "2")
    return work


def index_table(work: Path, split: str) -> pd.DataFrame:
    """The split's table, without the rejected images, with the 0-based class index."""
    table = pd.read_csv(
        work / "results" / "index" / f"{split}.tsv", sep="\t", dtype=str, keep_default_na=False
    )
    labels = pd.read_csv(
        work / "results" / "index" / "labels.tsv", sep="\t", dtype=str, keep_default_na=False
    )
    rejects = pd.read_csv(
        work / "results" / "rejects.tsv", sep="\t", dtype=str, keep_default_na=False
    )
    table = table[~table["path"].isin(set(rejects.loc[rejects["split"] == split, "path"]))]
    index = dict(zip(labels["synset"], labels["index"].astype(int), strict=True))
    return table.assign(cls=table["class"].map(lambda c: index.get(c, -1)))


def expected_samples(work: Path, split: str) -> Counter:
    table = index_table(work, split)
    return Counter(zip(table["filename"], table["cls"], table["class"], table["text"], strict=True))


@pytest.mark.parametrize("split", ["train", "validation"])
def test_webdataset_reads_every_image_of_the_index(built, split, monkeypatch):
    monkeypatch.chdir(built)
    code = readme_snippet("webdataset").replace("/train-", f"/{split}-")
    namespace: dict = {}
    got = Counter()
    with dataset_folders(built, "imagenet"):
        exec(code, namespace)
        for image, label, described in namespace["dataset"]:
            image.load()  # decodes every JPEG
            assert image.size == (described["width"], described["height"])
            got[(described["filename"], label, described["synset"], described["text"])] += 1
    assert got == expected_samples(built, split)
    if split == "train":
        names = {name for name, *_ in got}
        assert "x.y.z café ☕.JPEG" in names
        assert sum(n == "n02123045_11.jpg" for n, *_ in got.elements()) == 2


def test_shards_are_named_for_webdataset_and_some_are_empty(built):
    folder = built / FOLDER
    assert sorted(p.name for p in folder.glob("train-*.tar")) == [
        f"train-{i:06d}.tar" for i in range(3)
    ]
    validation = sorted(folder.glob("validation-*.tar"))
    assert [p.name for p in validation] == [f"validation-{i:06d}.tar" for i in range(12)]
    counts = [
        len(list(webdataset.WebDataset(str(p), shardshuffle=False, empty_check=False)))
        for p in validation
    ]
    assert 0 in counts and sum(counts) == len(index_table(built, "validation"))


def test_wids_opens_each_split_by_its_shard_index(built):
    code = (
        TORCH_STAND_IN
        + readme_snippet("wids")
        + """
out = []
for i in range(len(dataset)):
    item = dataset[i]
    item[".jpg"].load()
    out.append([item[".json"]["filename"], item[".cls"], item[".json"]["synset"],
                item[".json"]["text"], list(item[".jpg"].size), item["__key__"]])
print(json.dumps(out))
"""
    )
    for split in ("train", "validation"):
        with dataset_folders(built, "imagenet"):
            proc = subprocess.run(
                [sys.executable, "-c", "import json\n" + code.replace("/train.", f"/{split}.")],
                cwd=built,
                capture_output=True,
                text=True,
                timeout=300,
                env={**os.environ, "WIDS_CACHE": str(built / "wids-cache")},
            )
        assert proc.returncode == 0, proc.stderr[-3000:]
        rows = json.loads(proc.stdout.strip().splitlines()[-1])
        got = Counter((name, label, synset, text) for name, label, synset, text, _, _ in rows)
        assert got == expected_samples(built, split), split
        assert len({key for *_, key in rows}) == len(rows)  # keys unique in the split
        index = json.loads((built / FOLDER / f"{split}.shardindex.json").read_text())
        report = json.loads((built / "results" / "verify" / "webdataset.json").read_text())
        assert [s["nsamples"] for s in index["shardlist"]] == [
            shard["records"] for shard in report["splits"][split]
        ]


def test_a_rerun_rewrites_nothing(built):
    before = {p: p.stat().st_mtime_ns for p in (built / FOLDER).rglob("*") if p.is_file()}
    proc = snakemake(built, "--cores", "2")
    assert "Nothing to be done" in proc.stdout + proc.stderr
    assert {p: p.stat().st_mtime_ns for p in (built / FOLDER).rglob("*") if p.is_file()} == before
