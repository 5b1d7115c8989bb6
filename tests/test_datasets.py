"""Datasets: several consumer-ready datasets from one scan, in one run.

The default config.yaml (imagenet, tangler and dlbs datasets) runs on the sample once;
its records are read with the consumers' readers and compared with the single-dataset
bytes pinned in tests/test_golden.py; dry runs on copies of it show what each kind of
change re-runs. Selection (class lists, per-class fractions, holdouts) is checked on the
planned member lists, and end to end with TensorFlow reading the records.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml
from helpers import base_config
from imgprep.config import ConfigError, validate_config
from imgprep.datasets import dataset_list
from imgprep.datasets.selection import plan_files
from imgprep.index import scan, update_index
from test_consumers import tangler_load_dataset
from test_golden import SAMPLE_MTIME_NS, SAMPLE_SHA256
from test_sources import _Handler, image_server, parse_records
from test_workflow import new_workdir, snakemake

assert image_server  # a fixture, used by name below

NAMES = ("imagenet", "tangler", "dlbs")


def read_table(path: Path) -> list[dict]:
    header, *rows = [line.split("\t") for line in path.read_text().splitlines()]
    return [dict(zip(header, row, strict=True)) for row in rows]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """config.yaml as `make run` uses it, on a copy of the sample with fixed mtimes."""
    work = new_workdir(tmp_path_factory.mktemp("datasets") / "default", datasets=True)
    for path in [work / "sample", *(work / "sample").rglob("*")]:
        os.utime(path, ns=(SAMPLE_MTIME_NS, SAMPLE_MTIME_NS), follow_symlinks=False)
    snakemake(work, "--cores", "2")
    return work


def copy_of(built: Path, dest: Path) -> Path:
    shutil.copytree(built, dest, symlinks=True)  # copy2: mtimes kept, nothing outdated
    return dest


def set_datasets(work: Path, change) -> None:
    path = work / "config.yaml"
    config = yaml.safe_load(path.read_text())
    change(config["datasets"])
    path.write_text(yaml.safe_dump(config))


def planned_outputs(work: Path, *args) -> dict[str, list[str]]:
    """rule -> output paths of the jobs a dry run would run."""
    proc = snakemake(work, "-n", *args)
    text = proc.stdout + proc.stderr
    jobs: dict[str, list[str]] = {}
    for rule, outputs in re.findall(
        r"^(?:local)?rule (\w+):\n(?:    .*\n)*?    output: (.*)$", text, re.M
    ):
        jobs.setdefault(rule, []).extend(outputs.split(", "))
    return jobs


# -- the default run: three datasets -----------------------------------------------------


def test_one_run_makes_every_dataset_with_its_summary(built):
    results = built / "results"
    for name in NAMES:
        summary = json.loads((results / name / "summary.json").read_text())
        assert summary["totals"]["rejects"] == 2, name
        records = {s: v["schemas"][name]["records"] for s, v in summary["splits"].items()}
        assert records == {"train": 43, "validation": 13}, name
        assert (results / name / "verify" / f"{name}.json").is_file()
        table = read_table(results / name / "index" / "train.tsv")
        assert len(table) == 43
    # one scan: the source's lists only (every dataset takes the splits as they are)
    assert not (results / "index" / "datasets").exists()
    assert not (results / "records").exists(), "no single-dataset layout beside the datasets"


def test_imagenet_and_dlbs_datasets_hold_the_single_dataset_bytes(built):
    """config.yaml's imagenet and dlbs datasets are byte for byte what the same settings
    made as one dataset (pinned in test_golden before datasets existed)."""
    results = built / "results"
    compared = 0
    for name, sha in SAMPLE_SHA256.items():
        if name.startswith(("records/", "checksums/")):
            schema = name.split("/")[2 if name.startswith("checksums/") else 1]
            path = results / schema / name
            assert hashlib.sha256(path.read_bytes()).hexdigest() == sha, path
            compared += 1
    assert compared == 36  # 12 shards, 12 idx files, 12 checksums


def test_datasets_that_resize_alike_share_one_resize(built):
    """imagenet and dlbs resize alike (the tpu and dlbs presets change nothing the RGB
    256 px crop depends on): one set of resized shards; tangler's gray one apart."""
    results = built / "results"
    assert len(list((results / "resized").iterdir())) == 2
    assert len(list((results / "ravel").iterdir())) == 1
    logs = list((results / "logs" / "resize").rglob("*.log"))
    assert len(logs) == 12  # 6 shards, twice


def test_the_tangler_dataset_reads_with_tanglers_reader(built):
    import numpy as np
    import tensorflow as tf

    folder = built / "results" / "tangler" / "records" / "tangler"
    table = read_table(built / "results" / "tangler" / "index" / "train.tsv")
    dataset, res, n_pins = tangler_load_dataset(tf, folder / "train")
    assert (res, n_pins) == (256, 256)  # the preset: Tangler's 256 px, 256 pins
    pairs = list(dataset.as_numpy_iterator())
    assert len(pairs) == len(table) == 43
    for image, tangle in pairs:
        assert image.shape == (256, 256, 1) and tangle.shape == (256, 256)
        assert int(np.triu(tangle).sum()) > 1000  # 6000 lines: many distinct chords
    record = next(iter(tf.data.TFRecordDataset(sorted(map(str, folder.glob("train/*.tfrecord"))))))
    path = tf.io.parse_single_example(record, {"target/path": tf.io.VarLenFeature(tf.int64)})
    assert len(path["target/path"].values) == 6001  # ravel.lines 6000 + the first pin


# tangler's shards as the default config makes them (string art bit-exact): a change
# here changes every Tangler dataset built before
TANGLER_SHA256 = dict(
    line.split()[::-1]
    for line in """
61eea6ba1def80836acf365f6f16001237259eccc238e763c0ce069542e6dc56  train/tangle_00001-of-00004.tfrecord
4d3d350ed328802baef5563daf327185ed42177d47d804a62c4eec7bf4d912f5  train/tangle_00002-of-00004.tfrecord
6b0e4775fee6f9814c60d227e7bca84c33ac4b79a1e83c7c8a2f2ae3d1236712  train/tangle_00003-of-00004.tfrecord
68f5a1c78e72367042103e4f8251ffc0fb47ee092eb847529690f772be27a8a7  train/tangle_00004-of-00004.tfrecord
377bafcc89083c333094867f5e80f8801152dc839d3c130b3a83521e602625c7  validation/tangle_00001-of-00002.tfrecord
f271c5d650b3cfe5145e4bc5e30d74724ce95a9e5bf9c659e9a0510f97192d37  validation/tangle_00002-of-00002.tfrecord
""".splitlines()
    if line
)


def test_tangler_records_are_pinned(built):
    folder = built / "results" / "tangler" / "records" / "tangler"
    got = {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.glob("*/tangle_*.tfrecord"))
    }
    assert len(got) == 6
    assert got == TANGLER_SHA256


# -- what a change re-runs -----------------------------------------------------------------


def test_a_dataset_whose_settings_change_reruns_alone(built, tmp_path):
    work = copy_of(built, tmp_path / "w")
    set_datasets(work, lambda d: d["tangler"].update({"resize": {"quality": 80}}))
    jobs = planned_outputs(work)
    # 6 shards: resize writes tar, meta, rejects; records shard, idx, checksum
    assert len(jobs["resize_shard"]) == 18 and len(jobs["ravel_shard"]) == 6
    assert len(jobs["records_shard"]) == 18
    for path in [path for paths in jobs.values() for path in paths]:
        assert "results/imagenet/" not in path and "results/dlbs/" not in path, path


def test_adding_a_dataset_runs_nothing_for_the_others(built, tmp_path):
    work = copy_of(built, tmp_path / "w")
    set_datasets(
        work, lambda d: d.update({"tiny": {"preset": "downsampled", "resize": {"size": 32}}})
    )
    jobs = planned_outputs(work)
    assert len(jobs["resize_shard"]) == 18  # 6 shards x (tar, meta, rejects)
    for rule, paths in jobs.items():
        for path in paths:
            if rule != "all":
                assert "results/tiny/" in path or "/resized/" in path or "/rejects/" in path, path
                assert not re.search(r"results/(imagenet|tangler|dlbs)/", path), path


def test_a_touched_image_reruns_its_shard_in_each_dataset(built, tmp_path):
    work = copy_of(built, tmp_path / "w")
    photo = sorted((work / "sample" / "train").glob("*/*.JPEG"))[0]
    os.utime(photo, ns=(SAMPLE_MTIME_NS + 10**9, SAMPLE_MTIME_NS + 10**9))
    jobs = planned_outputs(work)
    tars = [p for p in jobs["resize_shard"] if p.endswith(".tar")]
    assert len(tars) == 2 and len({Path(t).name for t in tars}) == 1  # shared + tangler's
    assert len(jobs["ravel_shard"]) == 1
    shards = [p for p in jobs["records_shard"] if "/checksums/" not in p and "/idx/" not in p]
    assert sorted(p.split("/")[1] for p in shards) == sorted(NAMES)


def test_a_dataset_is_a_target(tmp_path):
    work = new_workdir(tmp_path / "t", datasets=True)
    jobs = planned_outputs(work, "dlbs")
    outputs = [path for paths in jobs.values() for path in paths]
    assert len(jobs["records_shard"]) == 18 and "ravel_shard" not in jobs
    assert all("results/imagenet/" not in p and "results/tangler/" not in p for p in outputs)


def test_one_format_compressed_in_one_dataset_and_not_in_another(tmp_path):
    """Whether a shard gets an index file depends on the format and the dataset's
    compression together: imagenet shards get one in one dataset, none in the other."""
    work = new_workdir(tmp_path / "c", datasets=True)
    packed = {"preset": "tfds", "records": {"compression": "gzip"}}
    set_datasets(work, lambda d: d.update({"packed": packed}))
    jobs = planned_outputs(work, "imagenet", "packed")
    indexed = [p for p in jobs["records_shard"] if p.endswith(".idx")]
    assert len(indexed) == 6 and all("results/imagenet/" in p for p in indexed)
    unindexed = [p for p in jobs["records_shard_unindexed"] if "/checksums/" not in p]
    assert len(unindexed) == 6 and all("results/packed/records/imagenet/" in p for p in unindexed)
    assert not [p for p in jobs.get("records_metadata", []) if "results/packed/" in p]


# -- selection ---------------------------------------------------------------------------


def selection_config(tmp: Path, datasets: dict, seed=0) -> dict:
    root = tmp / "src"
    for split, per_class in (("train", 20), ("validation", 4)):
        for c in range(5):
            folder = root / split / f"n0000000{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                (folder / f"{c}_{i}.JPEG").write_bytes(b"")
    return validate_config(base_config(root, tmp / "results", datasets=datasets, seed=seed))


def planned(config: dict) -> dict[str, dict[str, list[str]]]:
    """dataset -> split -> paths, from the planned lists (the source's where shared)."""
    result = scan(config)
    found = {}
    for dataset in dataset_list(config):
        files = plan_files(dataset, config, result)
        splits = {}
        for split in dataset.splits:
            own = [f for f in files if f.startswith(f"datasets/{dataset.name}/{split}/")]
            if own:
                lines = [line for f in sorted(own) for line in files[f].decode().splitlines()[1:]]
            else:
                lines = [line for shard in result.shards[split] for line in shard]
            splits[split] = [line.split("\t")[0] for line in lines]
        found[dataset.name] = splits
    return found


SUBSET = {
    "preset": "tfds",
    "classes": ["n00000001", "n00000003", "n00000004"],
    "splits": {
        "train": {"fraction": 0.25, "per_class": True, "shards": 3},
        "minival": {"from": "train", "holdout": True, "count": 6, "shards": 1},
        "validation": {"shards": 2},
    },
}


def test_selection_takes_classes_fractions_and_a_disjoint_holdout(tmp_path):
    one = {"splits": {"train": {"count": 2, "per_class": True}}}
    config = selection_config(tmp_path, {"sub": SUBSET, "every": {"preset": "tfds"}, "one": one})
    got = planned(config)
    sub, every = got["sub"], got["every"]
    classes = {p.split("/")[-2] for split in sub.values() for p in split}
    assert classes == set(SUBSET["classes"])
    assert len(sub["minival"]) == 6
    assert not set(sub["minival"]) & set(sub["train"])
    # 25 % of the 20 - (held out) images of each class, rounded half up
    per_class = {c: sum(p.split("/")[-2] == c for p in sub["train"]) for c in classes}
    held = {c: sum(p.split("/")[-2] == c for p in sub["minival"]) for c in classes}
    assert per_class == {c: int((20 - held[c]) * 0.25 + 0.5) for c in classes}
    assert len(sub["validation"]) == 12 and len(every["train"]) == 100
    assert set(sub["train"]) <= set(every["train"])
    # subsets take the lowest ranks, holdouts the highest: across datasets too
    two = {c: [p for p in got["one"]["train"] if p.split("/")[-2] == c] for c in classes}
    assert all(len(paths) == 2 and set(paths) <= set(sub["train"]) for paths in two.values())
    assert not set(got["one"]["train"]) & set(sub["minival"])
    assert planned(config) == got, "deterministic"
    other_seed = planned(selection_config(tmp_path / "s", {"sub": SUBSET}, seed=1))["sub"]
    assert {p.rpartition("/")[2] for p in other_seed["minival"]} != {
        p.rpartition("/")[2] for p in sub["minival"]
    }


def test_a_class_subset_is_labelled_from_its_base(tmp_path):
    config = selection_config(tmp_path, {"sub": SUBSET})
    result = update_index(config)
    labels = (Path(config["results"]) / "index" / "datasets" / "sub" / "labels.tsv").read_text()
    rows = [line.split("\t") for line in labels.splitlines()[1:]]
    assert [(int(r[0]), int(r[1]), r[2]) for r in rows] == [
        (0, 0, "n00000001"),
        (1, 1, "n00000003"),
        (2, 2, "n00000004"),
    ]
    assert "datasets/sub/minival/00000.tsv" in result.dataset_files


def test_shipped_class_lists_resolve(tmp_path):
    config = selection_config(tmp_path, {"nette": {"classes": "imagenette"}})
    [dataset] = dataset_list(config)
    assert len(dataset.classes) == 10 and "n01440764" in dataset.classes
    with pytest.raises(ConfigError, match=r"datasets\.nette\.classes': 10 class\(es\) are not in"):
        update_index(config)


@pytest.mark.parametrize(
    ("dataset", "key"),
    [
        ({"preset": "tpu", "labels": {"base": 0}}, "datasets.d.labels.base"),
        ({"preset": "tfds", "labels": {"base": 1}}, "datasets.d.labels.base"),
        ({"preset": "downsampled", "resize": {"filter": "bicubic"}}, "datasets.d.resize.filter"),
        ({"preset": "downsampled", "resize": {"mode": "center-crop"}}, "datasets.d.resize.mode"),
        ({"preset": "tangler", "resize": {"colorspace": "rgb"}}, "datasets.d.resize.colorspace"),
        ({"preset": "dlbs", "resize": {"upscale": False}}, "datasets.d.resize.upscale"),
        ({"preset": "tpu", "records": {"schemas": ["webdataset"]}}, "datasets.d.records.schemas"),
        ({"splits": {"x": {"from": "nope"}}}, "datasets.d.splits.x.from"),
        ({"splits": {"x": {"from": "train", "holdout": True}}}, "datasets.d.splits.x"),
        ({"splits": {"train": {"count": 3, "fraction": 0.5}}}, "datasets.d.splits.train"),
        ({"classes": {"file": "/nonexistent"}}, "datasets.d.classes"),
        ({"classes": "no_such_list"}, "datasets.d.classes"),
        ({"classes": ["a", "a"]}, "datasets.d.classes"),
        ({"resize": {"quality": 0}}, "datasets.d.resize.quality"),
    ],
)
def test_a_dataset_that_breaks_its_consumer_fails_naming_the_key(tmp_path, dataset, key):
    with pytest.raises(ConfigError, match=re.escape(f"'{key}")):
        selection_config(tmp_path, {"d": dataset})


@pytest.mark.parametrize("name", ["index", "resized", "all", "summary", "9lives", "a-b"])
def test_reserved_and_malformed_dataset_names_fail(tmp_path, name):
    with pytest.raises(ConfigError, match="datasets"):
        selection_config(tmp_path, {name: {}})


def test_a_holdout_that_takes_everything_fails(tmp_path):
    split = {"from": "train", "holdout": True, "count": 1000}
    config = selection_config(tmp_path, {"d": {"splits": {"train": {}, "h": split}}})
    with pytest.raises(ConfigError, match=r"datasets\.d\.splits\.h.*holds out all 100"):
        update_index(config)


# -- end to end: a subset dataset, and a URL list shared by two datasets -----------------


def test_a_subset_with_a_holdout_builds_and_reads_back(tmp_path):
    work = new_workdir(tmp_path / "s", datasets=True)
    config = yaml.safe_load((work / "config.yaml").read_text())
    config["datasets"] = {
        "sub": {
            "preset": "tfds",
            "classes": ["n02123045", "n07920052"],
            "resize": {"size": 64},
            "splits": {
                "train": {"shards": 2},
                "minival": {"from": "train", "holdout": True, "count": 4, "shards": 1},
                "validation": {"shards": 1},
            },
        }
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    snakemake(work, "--cores", "2")
    folder = work / "results" / "sub"
    rejected = {r["path"] for r in read_table(folder / "rejects.tsv")}
    names = {}
    for split in ("train", "minival", "validation"):
        table = read_table(folder / "index" / f"{split}.tsv")
        assert {row["class"] for row in table} <= {"n02123045", "n07920052"}
        records = parse_records(sorted((folder / "records" / "imagenet").glob(f"{split}-*-of-*")))
        expected = [row for row in table if row["path"] not in rejected]
        assert [(r["filename"], r["label"]) for r in records] == [
            (row["filename"], int(row["label"])) for row in expected
        ]
        assert {r["label"] for r in records} <= {0, 1}  # the tfds preset: from 0
        assert all(r["shape"] == (64, 64, 3) for r in records)
        names[split] = {r["filename"] for r in records}
    assert len(names["minival"]) == 4 and not names["minival"] & names["train"]
    info = json.loads((folder / "records" / "imagenet" / "dataset_info.json").read_text())
    assert {s["name"] for s in info["splits"]} == {"train", "minival", "validation"}


def test_a_url_list_is_downloaded_once_for_every_dataset(tmp_path, image_server):
    base, photos = image_server
    work = new_workdir(tmp_path / "u", datasets=True)
    lines = [f"{p.parent.name}_{i}\t{base}/img/{p.name}" for i, p in enumerate(photos[:24])]
    (work / "urls.txt").write_text("\n".join(lines) + "\n")
    config = yaml.safe_load((work / "config.yaml").read_text())
    config["source"] = {"type": "urls", "urls": "urls.txt"}
    config["splits"] = {
        "train": {"shards": 2, "fraction": 0.75},
        "validation": {"shards": 1, "fraction": 0.25},
    }
    config["download"] = {"retries": 0, "allow_private": True}
    config["datasets"] = {
        "same": {"preset": "tfds", "resize": {"size": 48}},
        # other shard counts and a subset: its shards draw from several download shards
        "other": {
            "preset": "tpu",
            "classes": [photos[0].parent.name],
            "resize": {"size": 32},
            "splits": {"train": {"shards": 3}, "validation": {"shards": 2}},
        },
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    snakemake(work, "--cores", "2")
    assert sorted(_Handler.requests) == sorted({f"/img/{p.name}" for p in photos[:24]})
    assert len(list((work / "results" / "downloads").glob("*/*.tar"))) == 3
    for name, label_base in (("same", 0), ("other", 1)):
        folder = work / "results" / name
        records = [
            r
            for split in ("train", "validation")
            for r in parse_records(
                sorted((folder / "records" / "imagenet").glob(f"{split}-*-of-*"))
            )
        ]
        tables = [
            row
            for s in ("train", "validation")
            for row in read_table(folder / "index" / f"{s}.tsv")
        ]
        assert len(records) == len(tables) > 0
        assert {r["label"] for r in records} <= set(range(label_base, label_base + 4))
    feeds = work / "results" / "index" / "datasets" / "other" / "downloads.json"
    assert any(len(sources) > 1 for sources in json.loads(feeds.read_text())["train"].values())
