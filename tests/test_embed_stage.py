"""The embed stage and the Deep Koalarization records, end to end on the sample."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from test_workflow import new_workdir, outstanding, snakemake, write_config

# weights null: random (seeded) Keras weights, 1000 logits, so the records get slim's
# background entry; no download is possible here
EMBED = {"model": "MobileNetV2", "weights": None, "input_size": 96}
SETTINGS = {
    "records": {"schemas": ["koalarization", "imagenet"]},
    "embed": {**EMBED, "in_records": True},
    # a third split: named apart from both of Koalarization's globs
    "splits": {"test": {"dir": "validation", "shards": 1}},
}
SPLITS = {"train": 4, "validation": 2, "test": 1}


@pytest.fixture(scope="module")
def koalas(tmp_path_factory):
    work = new_workdir(tmp_path_factory.mktemp("koala") / "k")
    write_config(work, **SETTINGS)
    snakemake(work, "--cores", "2")
    return work


def read(files, features):
    import tensorflow as tf

    for record in tf.data.TFRecordDataset([str(f) for f in files]):
        parsed = tf.io.parse_single_example(record, features)
        yield {
            k: (v.values if isinstance(v, tf.SparseTensor) else v).numpy()
            for k, v in parsed.items()
        }


def koalarization_reader(pattern, folder):
    """Deep Koalarization's LabImageRecordReader, as published (lab_image_record.py and
    base/reader.py; TF1 names in their TF2 spelling): the glob joined to the folder,
    the FixedLen feature map, the two reshapes, batched with fixed shapes."""
    import os

    import tensorflow as tf

    width = height = 224
    embedding_size = 1001
    files = tf.io.gfile.glob(os.path.join(os.path.expanduser(folder), pattern))

    def read_operation(serialized):
        features = tf.io.parse_single_example(
            serialized,
            features={
                "image_name": tf.io.FixedLenFeature([], tf.string),
                "image_l": tf.io.FixedLenFeature([width * height], tf.float32),
                "image_ab": tf.io.FixedLenFeature([width * height * 2], tf.float32),
                "image_embedding": tf.io.FixedLenFeature([embedding_size], tf.float32),
            },
        )
        image_l = tf.reshape(features["image_l"], shape=[width, height, 1])
        image_ab = tf.reshape(features["image_ab"], shape=[width, height, 2])
        return {
            "image_name": features["image_name"],
            "image_l": image_l,
            "image_ab": image_ab,
            "image_embedding": features["image_embedding"],
        }

    dataset = tf.data.TFRecordDataset(sorted(files)).map(read_operation).batch(4)
    return sorted(files), dataset


def expected_names(results, split):
    """Image names per shard of ``split``: the index's rows less the rejects."""
    import pandas as pd

    table = pd.read_csv(results / "index" / f"{split}.tsv", sep="\t", dtype=str)
    names = {}
    for shard, rows in table.groupby("shard"):
        rejects = pd.read_csv(results / "rejects" / split / f"{shard}.tsv", sep="\t", dtype=str)
        kept = rows[~rows["position"].isin(rejects["position"])]
        names[int(shard)] = sorted(kept["filename"])
    return names


def test_koalarizations_reader_reads_every_record(koalas):
    """Its training glob finds train, its evaluation glob validation; every record
    parses with its FixedLen map; names match the index; values in its ranges."""
    import tensorflow as tf

    results = koalas / "results"
    folder = results / "records" / "koalarization"
    seen = {}
    # training_utils.py: training_pipeline and evaluation_pipeline
    for split, pattern in (
        ("train", "lab_images_*.tfrecord"),
        ("validation", "val_lab_images_*.tfrecord"),
    ):
        files, dataset = koalarization_reader(pattern, str(folder))
        want = expected_names(results, split)
        prefix = "val_" if split == "validation" else ""
        assert [f.rsplit("/", 1)[1] for f in files] == [
            f"{prefix}lab_images_{i}.tfrecord" for i in range(SPLITS[split])
        ]
        names = []
        for batch in dataset:
            assert batch["image_l"].shape[1:] == (224, 224, 1)
            assert batch["image_ab"].shape[1:] == (224, 224, 2)
            assert batch["image_embedding"].shape[1:] == (1001,)
            for key, values in batch.items():
                if key != "image_name":
                    assert bool(tf.reduce_all(tf.math.is_finite(values))), key
            assert float(tf.reduce_min(batch["image_l"])) >= -1
            assert float(tf.reduce_max(batch["image_l"])) <= 1
            assert float(tf.reduce_max(tf.abs(batch["image_ab"]))) <= 1
            embeddings = batch["image_embedding"].numpy()
            # the background entry (index 0) holds the least of the 1000 Keras logits
            np.testing.assert_array_equal(embeddings[:, 0], embeddings[:, 1:].min(axis=1))
            names += [name.decode() for name in batch["image_name"].numpy()]
            for name, embedding in zip(names[-len(embeddings) :], embeddings, strict=True):
                seen[(split, name)] = embedding
        assert sorted(names) == sorted(n for shard in want.values() for n in shard)
        # per file: exactly the shard's kept images
        for i, path in enumerate(files):
            in_file = [ex["image_name"].decode() for ex in read([path], _name_only())]
            assert sorted(in_file) == want[i]
    assert len([key for key in seen if key[0] == "train"]) == 43
    assert len([key for key in seen if key[0] == "validation"]) == 13


def _name_only():
    import tensorflow as tf

    return {"image_name": tf.io.FixedLenFeature([], tf.string)}


def test_koalarization_records_pair_lab_targets_with_embeddings(koalas):
    import tensorflow as tf
    from imgprep.kernels.lab import lab_targets

    folder = koalas / "results" / "records" / "koalarization"
    names = sorted(p.name for p in folder.glob("*lab_images_*.tfrecord"))  # its readers' globs
    assert names == sorted(
        [f"lab_images_{i}.tfrecord" for i in range(4)]
        + [f"val_lab_images_{i}.tfrecord" for i in range(2)]
        + ["test_lab_images_0.tfrecord"]
    )
    files = [folder / name for name in names if not name.startswith("test_")]
    koala = {
        ex["image_name"].decode(): ex
        for ex in read(
            files,
            {
                "image_name": tf.io.FixedLenFeature([], tf.string),
                "image_l": tf.io.FixedLenFeature([224 * 224], tf.float32),
                "image_ab": tf.io.FixedLenFeature([224 * 224 * 2], tf.float32),
                "image_embedding": tf.io.VarLenFeature(tf.float32),
            },
        )
    }
    imagenet = {
        ex["image/filename"].decode(): ex
        for ex in read(
            sorted(
                p
                for p in (koalas / "results" / "records" / "imagenet").glob("*-of-*")
                if not p.name.startswith("test-")
            ),
            {
                "image/filename": tf.io.FixedLenFeature([], tf.string),
                "image/encoded": tf.io.FixedLenFeature([], tf.string),
                "image/embedding": tf.io.VarLenFeature(tf.float32),
            },
        )
    }
    assert len(koala) == 56 and set(koala) == set(imagenet)
    for name, ex in koala.items():
        embedding = ex["image_embedding"]
        assert embedding.shape == (1001,) and np.isfinite(embedding).all()
        # one embedding matrix serves both schemas: Keras' 1000 in imagenet, the same
        # after slim's background entry in koalarization
        keras = imagenet[name]["image/embedding"]
        assert keras.shape == (1000,)
        assert np.array_equal(embedding[1:], keras) and embedding[0] == keras.min()
        # the Lab targets are those of the stored JPEG
        lab_l, lab_ab = lab_targets(imagenet[name]["image/encoded"], 224)
        assert np.array_equal(ex["image_l"], lab_l.ravel())
        assert np.array_equal(ex["image_ab"], lab_ab.ravel())
    assert len({koala[n]["image_embedding"].tobytes() for n in koala}) > 1
    test = list(read([folder / "test_lab_images_0.tfrecord"], _name_only()))
    assert len(test) == 13  # the test split (validation's images again), its own file


def test_record_settings_do_not_recompute_embeddings(koalas, tmp_path):
    work = tmp_path / "w"
    shutil.copytree(koalas, work, symlinks=True)
    assert outstanding(work) == {}
    write_config(work, **{**SETTINGS, "records": {**SETTINGS["records"], "compression": "gzip"}})
    assert outstanding(work) == {
        "records_shard": 14,
        "verify_records": 2,
        "summary": 1,
        "dataset_card": 1,
        "report_sheet": 6,  # 2 schemas x 3 splits: the sheets show the records
        "report_split": 3,
        "report_dataset": 1,
        "all": 1,
    }
    write_config(
        work,
        **{**SETTINGS, "records": {"schemas": ["koalarization", "imagenet", "dlbs"]}},
    )
    jobs = outstanding(work)
    assert "embed_shard" not in jobs and "resize_shard" not in jobs
    assert jobs["records_shard"] == 7


def test_embeddings_are_deterministic(koalas, tmp_path):
    other = new_workdir(tmp_path / "o")
    write_config(other, **SETTINGS)
    embeddings = sorted((koalas / "results" / "embed").rglob("*.npy"))
    assert len(embeddings) == 7
    snakemake(other, "--cores", "1", *[str(p.relative_to(koalas)) for p in embeddings])
    for path in embeddings:
        twin = other / path.relative_to(koalas)
        assert np.array_equal(np.load(path), np.load(twin)), path.name


def test_the_readmes_koalarization_snippet(koalas, monkeypatch):
    """README, Loading / Deep Koalarization: the TF2 snippet, run as it stands."""
    import re

    import tensorflow as tf
    from helpers import REPO, dataset_folders

    text = (REPO / "README.md").read_text()
    section = text.split("### Deep Koalarization", 1)[1]
    snippet = next(
        block for block in re.findall(r"```python\n(.*?)```", section, re.S) if "gfile" in block
    )
    monkeypatch.chdir(koalas)
    scope = {"tf": tf}
    count = 0
    with dataset_folders(koalas, "koalarization"):
        exec(snippet, scope)  # noqa: S102 - the documented code itself
        for image_l, image_ab, embedding in scope["dataset"]:
            assert image_l.shape[1:] == (224, 224, 1) and image_ab.shape[1:] == (224, 224, 2)
            assert embedding.shape[1:] == (1001,)
            count += len(embedding)
    assert count == 43  # every train image


def test_splits_named_alike_fail_naming_the_key(tmp_path):
    work = new_workdir(tmp_path / "w")
    write_config(work, **{**SETTINGS, "splits": {"val": {"dir": "validation", "shards": 1}}})
    proc = snakemake(work, "-n", check=False)
    assert proc.returncode != 0
    message = (
        "config key 'splits.validation': schema koalarization names splits val and "
        "validation alike (val_lab_images_0.tfrecord)"
    )
    assert message in proc.stdout + proc.stderr
