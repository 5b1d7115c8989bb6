"""The ecosystem's loaders read what the workflow writes: TFDS through our metadata, the
PyTorch ``tfrecord`` package and DALI through our index files; the README's snippets are
the code run here."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import REPO, dataset_folders
from test_workflow import new_workdir, snakemake, write_config

TFDS_PLUGIN = REPO / ".plugins" / "tfds"
DALI_INSTALL = "pip install nvidia-dali-cuda120==2.4.0"
# DALI may live in a virtual environment of its own (≈ 1 GB): its interpreter
DALI_PYTHON = os.environ.get("IMGPREP_DALI_PYTHON", sys.executable)
TORCH_INSTALL = "pip install torch"
# the second configuration: gray square images, every other schema, labels from 0
GRAY = {
    "resize": {"mode": "center-crop", "size": 48, "upscale": True, "colorspace": "gray"},
    "records": {"schemas": ["imagenet", "tangler", "koalarization"]},
    "labels": {"base": 0},
    "ravel": {"pins": 32, "lines": 100},
    "embed": {"model": "MobileNetV2", "weights": None, "input_size": 96},
}
NAME_KEY = {
    "imagenet": "image/filename",
    "dlbs": "image/filename",
    "tangler": "record/name",
    "koalarization": "image_name",
}


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """The default configuration (imagenet + dlbs, labels.base 1) on the sample."""
    work = new_workdir(tmp_path_factory.mktemp("loaders") / "default")
    snakemake(work, "--cores", "2")
    return work


@pytest.fixture(scope="module")
def gray_run(tmp_path_factory):
    work = new_workdir(tmp_path_factory.mktemp("loaders") / "gray")
    write_config(work, **GRAY)
    snakemake(work, "--cores", "2")
    return work


@pytest.fixture(params=["default", "gray"])
def run(request):
    return request.getfixturevalue(f"{request.param}_run")


def schemas(work: Path) -> list[str]:
    return sorted(p.name for p in (work / "results" / "records").iterdir())


def shards(work: Path, schema: str) -> list[Path]:
    """Every shard of a schema, found the way consumers glob them (never the idx/ files)."""
    folder = work / "results" / "records" / schema
    if schema == "tangler":
        return sorted(folder.glob("*/tangle_*-of-*.tfrecord"))
    if schema == "koalarization":
        return sorted(folder.glob("*lab_images_*.tfrecord"))
    return sorted(folder.glob("*-*-of-*"))


def index_of(shard: Path) -> Path:
    return shard.parent / "idx" / f"{shard.name}.idx"


def expected_names(work: Path, split: str) -> Counter:
    """File names the split's records must hold: the index minus the rejects."""
    table = pd.read_csv(work / "results" / "index" / f"{split}.tsv", sep="\t", dtype=str)
    rejects = pd.read_csv(work / "results" / "rejects.tsv", sep="\t", dtype=str)
    rejected = set(rejects.loc[rejects["split"] == split, "path"])
    return Counter(table.loc[~table["path"].isin(rejected), "filename"])


def index_rows(work: Path, split: str) -> dict[str, dict]:
    table = pd.read_csv(work / "results" / "index" / f"{split}.tsv", sep="\t", dtype=str)
    return {row["filename"]: row for row in table.to_dict("records")}


def tensorflow_records(shard: Path) -> list[bytes]:
    import tensorflow as tf

    return [r.numpy() for r in tf.data.TFRecordDataset(str(shard))]


def run_without_tensorflow(code: str, *args, cwd=None, python=sys.executable) -> dict:
    """Run ``code`` in a fresh interpreter (the tfrecord package's protobufs and
    TensorFlow's register the same names: one process cannot import both); it prints
    one JSON document."""
    proc = subprocess.run(
        [python, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def readme_snippet(name: str) -> str:
    """The python block after ``<!-- tested: NAME -->`` in the README."""
    text = (REPO / "README.md").read_text()
    match = re.search(rf"<!-- tested: {name} -->\s*```python\n(.*?)```", text, re.S)
    assert match, f"README has no snippet marked {name}"
    return match.group(1)


# -- index files: DALI / tfrecord ------------------------------------------------------


_TFRECORD2IDX = """
import json, sys
from tfrecord.tools.tfrecord2idx import create_index
pairs = json.loads(sys.argv[1])
for shard, out in pairs:
    create_index(shard, out)
print(json.dumps(len(pairs)))
"""


def test_index_files_are_what_tfrecord2idx_computes(run, tmp_path):
    pairs, ours = [], []
    for schema in schemas(run):
        found = shards(run, schema)
        assert found, schema
        for number, shard in enumerate(found):
            pairs.append((str(shard), str(tmp_path / f"{schema}-{number}.idx")))
            ours.append(index_of(shard))
    assert run_without_tensorflow(_TFRECORD2IDX, json.dumps(pairs)) == len(pairs)
    for (_, theirs), mine in zip(pairs, ours, strict=True):
        assert mine.read_bytes() == Path(theirs).read_bytes(), mine


def test_index_files_stay_out_of_the_consumers_globs(default_run):
    folder = default_run / "results" / "records" / "imagenet"
    for pattern in ("train-*", "validation-*", "train-*-of-*"):  # TPU, slim, DLBS
        assert all(p.parent == folder and p.is_file() for p in folder.glob(pattern))
        assert not [p for p in folder.glob(pattern) if p.suffix in (".idx", ".json", ".txt")]


_TFRECORD_READ = """
import hashlib, json, sys
from tfrecord.reader import tfrecord_iterator, tfrecord_loader, multi_tfrecord_loader
shard, index, name_key, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
raw, names = [], []
for worker in range(workers):  # what each DataLoader worker reads: its part of the index
    part = (worker, workers)
    raw += [hashlib.sha256(r).hexdigest() for r in tfrecord_iterator(shard, index, part)]
    names += [e[name_key].decode("utf-8", "surrogateescape")
              for e in tfrecord_loader(shard, index, {name_key: "byte"}, part)]
# MultiTFRecordDataset's loader, over this one shard, no worker split (random start)
folder, name = shard.rsplit("/", 1)
multi = [e[name_key].decode("utf-8", "surrogateescape") for e in multi_tfrecord_loader(
    folder + "/{}", folder + "/idx/{}.idx", {name: 1.0}, {name_key: "byte"}, infinite=False)]
print(json.dumps({"raw": raw, "names": names, "multi": multi}))
"""


def test_tfrecord_package_reads_the_records_tensorflow_reads(run):
    import tensorflow as tf

    for schema in schemas(run):
        feature = {NAME_KEY[schema]: tf.io.FixedLenFeature([], tf.string)}
        for shard in shards(run, schema):
            records = tensorflow_records(shard)
            if len(records) < 2:
                continue  # tfrecord 1.14.6 cannot load a 0- or 1-line index (README)
            names = [
                tf.io.parse_single_example(r, feature)[NAME_KEY[schema]]
                .numpy()
                .decode("utf-8", "surrogateescape")
                for r in records
            ]
            got = run_without_tensorflow(
                _TFRECORD_READ, shard, index_of(shard), NAME_KEY[schema], 3
            )
            assert got["raw"] == [hashlib.sha256(r).hexdigest() for r in records], shard
            assert got["names"] == names
            assert Counter(got["multi"]) == Counter(names)


@pytest.mark.optional_extra
def test_pytorch_snippet(default_run):
    if subprocess.run([sys.executable, "-c", "import torch"], capture_output=True).returncode:
        pytest.skip(f"optional extra: PyTorch is not installed ({TORCH_INSTALL})")
    with dataset_folders(default_run, "imagenet"):
        got = run_without_tensorflow(
            readme_snippet("pytorch") + "\nimport json\nprint(json.dumps(list(images.shape)))",
            cwd=default_run,
        )
    assert got == [8, 224, 224, 3]


@pytest.mark.optional_extra
def test_dali_snippet(default_run):
    probe = subprocess.run([DALI_PYTHON, "-c", "import nvidia.dali"], capture_output=True)
    if probe.returncode:
        pytest.skip(
            f"optional extra: DALI is not installed ({DALI_INSTALL}; or set "
            "IMGPREP_DALI_PYTHON to the python of an environment that has it)"
        )
    code = readme_snippet("dali") + (
        "\nimport json\nprint(json.dumps({'shape': list(images.as_array().shape),"
        " 'labels': labels.as_array().ravel().tolist()}))"
    )
    with dataset_folders(default_run, "imagenet"):
        got = run_without_tensorflow(code, cwd=default_run, python=DALI_PYTHON)
    assert got["shape"] == [8, 224, 224, 3]
    labels = pd.read_csv(default_run / "results" / "index" / "train.tsv", sep="\t")["label"]
    assert set(got["labels"]) <= set(labels)


# -- TFDS ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tfds():
    if TFDS_PLUGIN.exists() and str(TFDS_PLUGIN) not in sys.path:
        sys.path.append(str(TFDS_PLUGIN))
    try:
        import tensorflow_datasets
    except ImportError as error:
        pytest.fail(
            f"{error}: make test installs TFDS into .plugins/tfds (see requirements-tfds.txt)",
            pytrace=False,
        )
    return tensorflow_datasets


def verify_report(work: Path, schema: str) -> dict:
    return json.loads((work / "results" / "verify" / f"{schema}.json").read_text())


def tfds_splits(builder, schema: str, split: str) -> list[str]:
    """TFDS splits holding ``split``: itself, or one per file where no template fits."""
    if schema in ("imagenet", "dlbs"):
        return [split]
    if schema == "tangler":
        return [s for s in builder.info.splits if s.startswith(f"{split}-tangle_")]
    prefix = {"train": "lab_images_", "validation": "val_lab_images_"}[split]
    return [s for s in builder.info.splits if s.startswith(prefix)]


def test_tfds_loads_every_split(run, tfds):
    import tensorflow as tf

    labels = pd.read_csv(run / "results" / "index" / "labels.tsv", sep="\t")
    base = 1 if (labels["label"] - labels["index"]).eq(1).all() else 0
    for schema in schemas(run):
        builder = tfds.builder_from_directory(str(run / "results" / "records" / schema))
        report = verify_report(run, schema)
        if schema in ("imagenet", "dlbs"):
            names = builder.info.features["image"]["class"]["label"].names
            synsets = labels["synset"].tolist()
            assert names == (["background", *synsets] if base and schema == "imagenet" else synsets)
        for split, verified in report["splits"].items():
            chosen = tfds_splits(builder, schema, split)
            lengths = [n for s in chosen for n in builder.info.splits[s].shard_lengths]
            assert lengths == [shard["records"] for shard in verified]
            rows = index_rows(run, split)
            seen = Counter()
            for example in builder.as_dataset(split="+".join(chosen)):
                check = {
                    "imagenet": _check_tfds_imagenet,
                    "dlbs": _check_tfds_dlbs,
                    "tangler": _check_tfds_tangler,
                    "koalarization": _check_tfds_koalarization,
                }[schema]
                name = check(tf, example, rows, base, builder)
                seen[name] += 1
            assert seen == expected_names(run, split), (schema, split)


def _image_row(example, rows, base, builder, zero_based):
    image = example["image"]
    name = image["filename"].numpy().decode("utf-8", "surrogateescape")
    row = rows[name]
    label = int(image["class"]["label"])
    assert label == int(row["label"]) - (base if zero_based else 0)
    names = builder.info.features["image"]["class"]["label"]
    assert names.int2str(label) == row["class"]
    assert image["class"]["text"].numpy().decode() == row["text"]
    return name, row


def _check_tfds_imagenet(tf, example, rows, base, builder):
    name, _ = _image_row(example, rows, base, builder, zero_based=False)
    image = example["image"]
    decoded = image["encoded"].numpy()
    assert decoded.dtype == np.uint8
    assert decoded.shape == (int(image["height"]), int(image["width"]), int(image["channels"]))
    boxes = [image["object"]["bbox"][k].numpy() for k in ("xmin", "ymin", "xmax", "ymax")]
    assert len({len(b) for b in boxes}) == 1
    assert len(image["object"]["bbox"]["label"]) == len(boxes[0])
    return name


def _check_tfds_dlbs(tf, example, rows, base, builder):
    name, _ = _image_row(example, rows, base, builder, zero_based=True)
    image = example["image"]
    hwc = (int(image["height"]), int(image["width"]), int(image["channels"]))
    pixels = tf.io.decode_raw(image["encoded"], tf.uint8)
    assert tf.reshape(pixels, hwc).shape == hwc
    return name


def _check_tfds_tangler(tf, example, rows, base, builder):
    assert example["image"]["encoded"].shape == (48, 48, 1)
    assert int(example["image"]["res"]) == 48
    assert len(example["target"]["path"]) == GRAY["ravel"]["lines"] + 1
    indices = tf.io.parse_tensor(example["target"]["indices"], tf.uint8)
    assert int(tf.size(indices)) == 2 * int(example["target"]["sparsity"])
    return example["record"]["name"].numpy().decode("utf-8", "surrogateescape")


def _check_tfds_koalarization(tf, example, rows, base, builder):
    assert example["image_l"].shape == (224 * 224,)
    assert example["image_ab"].shape == (224 * 224 * 2,)
    assert example["image_embedding"].shape[0] > 0
    return example["image_name"].numpy().decode("utf-8", "surrogateescape")


def test_tfds_images_are_the_stored_jpegs(default_run, tfds):
    """TFDS decodes each record's own JPEG: pixel for pixel what TensorFlow decodes."""
    import tensorflow as tf

    folder = default_run / "results" / "records" / "imagenet"
    builder = tfds.builder_from_directory(str(folder))
    features = {
        "image/filename": tf.io.FixedLenFeature([], tf.string),
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
    }
    stored = {}
    for shard in shards(default_run, "imagenet"):
        for record in tensorflow_records(shard):
            example = tf.io.parse_single_example(record, features)
            stored[example["image/filename"].numpy()] = example["image/encoded"]
    count = 0
    for example in builder.as_dataset(split="train+validation"):
        jpeg = stored[example["image"]["filename"].numpy()]
        decoded = tf.io.decode_jpeg(jpeg, channels=3).numpy()
        assert np.array_equal(example["image"]["encoded"].numpy(), decoded)
        count += 1
    assert count == len(stored)


def test_tfds_metadata_is_what_tfds_writes(default_run, tfds, tmp_path):
    """TFDS' own write_metadata, over copies of the shards with our features and split
    infos it computes itself, writes the same three files byte for byte."""
    from tensorflow_datasets.core import naming

    for schema in ("imagenet", "dlbs"):
        ours = default_run / "results" / "records" / schema
        theirs = tmp_path / schema
        theirs.mkdir()
        for shard in shards(default_run, schema):
            shutil.copy(shard, theirs / shard.name)
        template = naming.ShardedFileTemplate(
            data_dir=theirs, template="{SPLIT}-{SHARD_X_OF_Y}", filetype_suffix="tfrecord"
        )
        infos = tfds.folder_dataset.compute_split_info(filename_template=template, out_dir=None)
        info = json.loads((ours / "dataset_info.json").read_text())
        order = [split["name"] for split in info["splits"]]
        tfds.folder_dataset.write_metadata(
            data_dir=theirs,
            features=tfds.features.FeaturesDict.from_config(str(ours)),
            split_infos=sorted(infos, key=lambda split: order.index(split.name)),
            filename_template=template,
            description=info["description"],
            check_data=False,
        )
        for name in ("dataset_info.json", "features.json", "image-class-label.labels.txt"):
            assert (ours / name).read_bytes() == (theirs / name).read_bytes(), (schema, name)


def test_tfds_readme_snippets(default_run, gray_run, tfds, monkeypatch):
    monkeypatch.chdir(default_run)
    names: dict = {}
    with dataset_folders(default_run, "imagenet"):
        exec(readme_snippet("tfds"), names)
    assert names["image"].shape[-1] == 3
    assert names["labels"].names[0] == "background"
    monkeypatch.chdir(gray_run)
    names = {}
    with dataset_folders(gray_run, "koalarization"):
        exec(readme_snippet("tfds-per-file"), names)
        count = sum(1 for _ in names["koala_train"])
    assert count == sum(expected_names(gray_run, "train").values())


def test_compressed_shards_get_no_index_and_no_tfds_metadata(tmp_path):
    work = new_workdir(tmp_path / "gzip")
    write_config(work, records={"schemas": ["imagenet"], "compression": "gzip"})
    plan = snakemake(work, "-n")
    text = plan.stdout + plan.stderr
    assert "records_shard" in text
    assert ".idx" not in text
    assert "records_metadata" not in text and "dataset_info.json" not in text
