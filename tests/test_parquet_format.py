"""The parquet format: the Hugging Face layout, loaded by ``datasets.load_dataset`` (and
read by pyarrow) from .plugins/hf in a fresh interpreter, compared with the index; the
README's snippet is the code run here."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from helpers import REPO, dataset_folders
from imgprep.formats import get_format
from imgprep.formats.base import UnreadableShard
from imgprep.formats.parquet import ROW_GROUP_ROWS, dataset_card, shown_name
from test_webdataset_format import (
    build_odd_sample,
    expected_of,
    index_table,
    readme_snippet,
    sample,
)

FORMAT = get_format("parquet")
HF_PLUGIN = REPO / ".plugins" / "hf"
FOLDER = Path("results") / "records" / "parquet"
needs_hf = pytest.mark.skipif(
    not (HF_PLUGIN / "datasets").is_dir(),
    reason="make test installs datasets into .plugins/hf (see requirements-hf.txt)",
)


def run_hf(code: str, *args, cwd=None) -> object:
    """Run ``code`` with datasets and pyarrow importable (a fresh interpreter: pyarrow
    would turn this process' pandas strings into Arrow ones); it prints one JSON value."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HF_PLUGIN), str(REPO / "scripts")]),
        "HF_HOME": str(Path(cwd or ".").resolve() / "hf-home"),
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    proc = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def many(count: int):
    return [sample(i, f"img_{i}.JPEG", i % 3) for i in range(count)]


class Problems:
    def __init__(self):
        self.found = []

    def add(self, kind, example):
        self.found.append((kind, example))


def verify(path: Path, expected: dict):
    problems, seen, count = Problems(), {"names": Counter(), "labels": set()}, 0
    for batch in FORMAT.reader(1).batches(path, ""):
        FORMAT.check_batch(batch, count, expected, problems, seen)
        count += len(batch["filename"])
    return problems.found, seen["names"], count


# -- the file ---------------------------------------------------------------------------

_PYARROW_READ = """
import json, sys
import pyarrow.parquet as pq
file = pq.ParquetFile(sys.argv[1])
table = file.read()
print(json.dumps({
    "schema": str(table.schema),
    "row_groups": file.metadata.num_row_groups,
    "created_by": file.metadata.created_by,
    "metadata": {k.decode(): v.decode() for k, v in (file.schema_arrow.metadata or {}).items()},
    "labels": table.column("label").to_pylist(),
    "paths": [image["path"] for image in table.column("image").to_pylist()],
    "sizes": [len(image["bytes"]) for image in table.column("image").to_pylist()],
}))
"""


def test_same_samples_give_the_same_bytes(tmp_path):
    a, b = (tmp_path / d / "data" / "train-00000-of-00001.parquet" for d in "ab")
    first = FORMAT.write_shard(many(5), a, "", None, 1)
    assert first == FORMAT.write_shard(many(5), b, "", None, 1)
    assert a.read_bytes() == b.read_bytes()
    assert first["records"] == 5 and first["bytes"] == a.stat().st_size
    data = a.read_bytes()
    assert data[:4] == data[-4:] == b"PAR1"
    assert not list(a.parent.glob(".*"))  # no temp left beside it


@needs_hf
def test_pyarrow_reads_the_image_struct_and_the_labels(tmp_path):
    items = [*many(ROW_GROUP_ROWS + 1), sample(101, os.fsdecode(b"caf\xe9 x.y.jpg"), None)]
    shard = tmp_path / "train-00000-of-00001.parquet"
    FORMAT.write_shard(items, shard, "", None, 1)
    got = run_hf(_PYARROW_READ, shard)
    assert got["schema"].splitlines()[:4] == [
        "image: struct<bytes: binary, path: string>",
        "  child 0, bytes: binary",
        "  child 1, path: string",
        "label: int64",
    ]
    assert got["row_groups"] == 2  # ROW_GROUP_ROWS, then the rest
    assert got["created_by"] == "imgprep" and got["metadata"] == {}  # no versions, no clock
    assert got["labels"] == [i % 3 for i in range(ROW_GROUP_ROWS + 1)] + [-1]
    assert got["paths"][-1] == "caf\\xe9 x.y.jpg"  # Parquet strings are UTF-8: shown
    assert got["sizes"] == [len(s.data) for s in items]


@needs_hf
def test_an_empty_shard_is_a_parquet_file_of_no_rows(tmp_path):
    shard = tmp_path / "validation-00001-of-00002.parquet"
    assert FORMAT.write_shard([], shard, "", None, 1)["records"] == 0
    got = run_hf(_PYARROW_READ, shard)
    assert got["labels"] == [] and got["row_groups"] == 0
    assert verify(shard, {}) == ([], Counter(), 0)


def test_verification_maps_shown_names_back_and_checks_labels(tmp_path):
    items = [sample(0, "a.JPEG", 0), sample(1, os.fsdecode(b"caf\xe9.jpg"), 2)]
    shard = tmp_path / "train-00000-of-00001.parquet"
    FORMAT.write_shard(items, shard, "", None, 1)
    expected = expected_of(items)
    problems, names, count = verify(shard, expected)
    assert problems == [] and count == 2
    # the surrogate-escaped name, as the index has it
    assert names == Counter({n: len(r) for n, r in expected.items()})
    wrong = {**expected, "a.JPEG": [(7, "n7", "")]}
    assert verify(shard, wrong)[0] == [("wrong label", "record 0 (a.JPEG): 0, want 7")]


def test_a_cut_or_corrupted_file_is_an_unreadable_shard(tmp_path):
    shard = tmp_path / "train-00000-of-00001.parquet"
    FORMAT.write_shard(many(3), shard, "", None, 1)
    data = shard.read_bytes()
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableShard, match="footer"):
        verify(cut, {})
    # the footer's length pointing past the start
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(data[:-8] + struct.pack("<I", len(data)) + b"PAR1")
    with pytest.raises(UnreadableShard):
        verify(broken, {})
    # a JPEG that no longer decodes: found, reported
    bad = bytearray(data)
    at = data.index(many(3)[0].data[:64]) + 2
    bad[at : at + 600] = bytes(600)
    flipped = tmp_path / "flipped.parquet"
    flipped.write_bytes(bytes(bad))
    kinds = [kind for kind, _ in verify(flipped, expected_of(many(3)))[0]]
    assert kinds == ["image not a decodable JPEG"]


def test_the_dataset_card_declares_features_and_files():
    paths = {"train": ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"]}
    assert FORMAT.metadata_files(["train"], "") == ["README.md"]
    card = dataset_card(["n01", 'n02 "quoted"', "ünï"], paths)
    header = yaml.safe_load(card.split("---\n")[1])
    assert header["dataset_info"]["features"][1]["dtype"]["class_label"]["names"] == {
        "0": "n01",
        "1": 'n02 "quoted"',
        "2": "ünï",
    }
    assert header["configs"] == [
        {"config_name": "default", "data_files": [{"split": "train", "path": paths["train"]}]}
    ]


def test_shown_name_keeps_utf8_and_escapes_the_rest():
    assert shown_name("café ☕.jpg") == "café ☕.jpg"
    assert shown_name(os.fsdecode(b"a\xff.jpg")) == "a\\xff.jpg"


# -- the workflow, loaded by datasets -------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_odd_sample(tmp_path_factory.mktemp("parquet") / "work", "parquet")


_LOAD = """
import io, json
import numpy as np
{snippet}
out = {{"names": train.features["label"].names, "feature": type(train.features["image"]).__name__,
       "label_feature": type(train.features["label"]).__name__, "splits": {{}}}}
for split, part in dataset.items():
    rows = []
    raw = part.cast_column("image", datasets.Image(decode=False))
    for decoded, stored in zip(part, raw):
        image = decoded["image"]
        image.load()
        path, bands = stored["image"]["path"], len(image.getbands())
        rows.append([path, decoded["label"], list(image.size), bands])
    out["splits"][split] = rows
print(json.dumps(out))
"""


@needs_hf
def test_load_dataset_gives_image_and_classlabel_features_and_every_image(built):
    with dataset_folders(built, "imagenet"):
        got = run_hf(_LOAD.format(snippet=readme_snippet("parquet")), cwd=built)
    labels = (built / "results" / "index" / "labels.tsv").read_text().splitlines()[1:]
    assert got["names"] == [line.split("\t")[2] for line in labels]  # label order
    assert got["feature"] == "Image" and got["label_feature"] == "ClassLabel"
    assert sorted(got["splits"]) == ["train", "validation"]
    for split, rows in got["splits"].items():
        table = index_table(built, split)
        want = Counter(zip(table["filename"], table["cls"], strict=True))
        assert Counter((path, label) for path, label, _, _ in rows) == want, split
        assert all(size[0] > 0 and size[1] > 0 and bands == 3 for _, _, size, bands in rows)
    assert "x.y.z café ☕.JPEG" in {row[0] for row in got["splits"]["train"]}


def test_shards_follow_the_hugging_face_names(built):
    folder = built / FOLDER
    assert sorted(p.name for p in (folder / "data").glob("train-*")) == [
        f"train-{i:05d}-of-00003.parquet" for i in range(3)
    ]
    assert len(list((folder / "data").glob("validation-*-of-00012.parquet"))) == 12
    assert (folder / "README.md").is_file()
    report = json.loads((built / "results" / "verify" / "parquet.json").read_text())
    assert 0 in [shard["records"] for shard in report["splits"]["validation"]]
