"""The embed stage and the Deep Koalarization records, end to end on the sample."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from test_workflow import new_workdir, outstanding, snakemake, write_config

EMBED = {"model": "MobileNetV2", "weights": None, "input_size": 96, "lab_size": 32}
SETTINGS = {
    "records": {"schemas": ["koalarization", "imagenet"]},
    "embed": {**EMBED, "in_records": True},
}


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


def test_koalarization_records_pair_lab_targets_with_embeddings(koalas):
    import tensorflow as tf
    from imgprep.lab import lab_targets

    folder = koalas / "results" / "records" / "koalarization"
    names = sorted(p.name for p in folder.glob("*lab_images_*.tfrecord"))  # its readers' globs
    assert names == [f"lab_images_{i}.tfrecord" for i in range(4)] + [
        f"val_lab_images_{i}.tfrecord" for i in range(2)
    ]
    koala = {
        ex["image_name"].decode(): ex
        for ex in read(
            sorted(folder.glob("*lab_images_*.tfrecord")),
            {
                "image_name": tf.io.FixedLenFeature([], tf.string),
                "image_l": tf.io.FixedLenFeature([32 * 32], tf.float32),
                "image_ab": tf.io.FixedLenFeature([32 * 32 * 2], tf.float32),
                "image_embedding": tf.io.VarLenFeature(tf.float32),
            },
        )
    }
    imagenet = {
        ex["image/filename"].decode(): ex
        for ex in read(
            sorted((koalas / "results" / "records" / "imagenet").glob("*-of-*")),
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
        assert embedding.shape == (1000,) and np.isfinite(embedding).all()
        # one embedding matrix serves both schemas
        assert np.array_equal(embedding, imagenet[name]["image/embedding"])
        # the Lab targets are those of the stored JPEG
        lab_l, lab_ab = lab_targets(imagenet[name]["image/encoded"], 32)
        assert np.array_equal(ex["image_l"], lab_l.ravel())
        assert np.array_equal(ex["image_ab"], lab_ab.ravel())
    assert len({koala[n]["image_embedding"].tobytes() for n in koala}) > 1


def test_record_settings_do_not_recompute_embeddings(koalas, tmp_path):
    work = tmp_path / "w"
    shutil.copytree(koalas, work, symlinks=True)
    assert outstanding(work) == {}
    write_config(work, **{**SETTINGS, "embed": {**EMBED, "in_records": True, "lab_size": 24}})
    assert outstanding(work) == {
        "records_koalarization": 6,
        "verify_records": 1,
        "tfds_metadata_unlabelled": 1,
        "summary": 1,
        "all": 1,
    }
    write_config(
        work,
        records={"schemas": ["koalarization", "imagenet", "dlbs"]},
        embed={**EMBED, "in_records": True},
    )
    jobs = outstanding(work)
    assert "embed_shard" not in jobs and "resize_shard" not in jobs
    assert jobs["records_shard"] == 6


def test_embeddings_are_deterministic(koalas, tmp_path):
    other = new_workdir(tmp_path / "o")
    write_config(other, **SETTINGS)
    embeddings = sorted((koalas / "results" / "embed").rglob("*.npy"))
    assert len(embeddings) == 6
    snakemake(other, "--cores", "1", *[str(p.relative_to(koalas)) for p in embeddings])
    for path in embeddings:
        twin = other / path.relative_to(koalas)
        assert np.array_equal(np.load(path), np.load(twin)), path.name
