"""The ravel stage, the tangler records built on it, and the command line."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO, base_config
from imgprep.config import ConfigError, validate_config
from imgprep.kernels.stringart import adjacency_indices, ravel
from test_workflow import new_workdir, outstanding, snakemake, write_config

RAVEL = {"pins": 32, "lines": 100}
RESIZE = {"mode": "center-crop", "size": 48, "upscale": True, "colorspace": "gray"}


@pytest.fixture(scope="module")
def tangled(tmp_path_factory):
    work = new_workdir(tmp_path_factory.mktemp("tangler") / "t")
    write_config(
        work,
        resize={**RESIZE, "gray_matrix": "rec709"},
        records={"schemas": ["tangler", "imagenet"]},
        ravel=RAVEL,
    )
    snakemake(work, "--cores", "2")
    return work


def test_tangler_targets_match_the_stored_images(tangled):
    import tensorflow as tf

    features = {
        "record/version": tf.io.FixedLenFeature([], tf.int64),
        "record/name": tf.io.FixedLenFeature([], tf.string),
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/res": tf.io.FixedLenFeature([], tf.int64),
        "target/n_pins": tf.io.FixedLenFeature([], tf.int64),
        "target/sparsity": tf.io.FixedLenFeature([], tf.int64),
        "target/indices": tf.io.FixedLenFeature([], tf.string),
        "target/path": tf.io.VarLenFeature(tf.int64),
    }
    names = []
    for split, shards in (("train", 4), ("validation", 2)):
        folder = tangled / "results" / "records" / "tangler" / split
        files = sorted(p.name for p in folder.glob("*tfrecord"))  # Tangler's train glob
        assert files == [f"tangle_{i:05d}-of-{shards:05d}.tfrecord" for i in range(1, shards + 1)]
        assert sorted(p.name for p in folder.iterdir()) == ["idx", *files]  # index files
        for record in tf.data.TFRecordDataset([str(folder / f) for f in files]):
            ex = tf.io.parse_single_example(record, features)
            # libjpeg's accurate integer IDCT, as djpeg and Pillow decode (TF's default is
            # the fast IDCT, a gray level off here and there)
            image = tf.io.decode_jpeg(ex["image/encoded"], dct_method="INTEGER_ACCURATE").numpy()
            path = tf.sparse.to_dense(ex["target/path"]).numpy()
            assert ex["record/version"] == 6 and ex["image/res"] == 48
            assert image.shape == (48, 48, 1)
            assert ex["target/n_pins"] == 32 and len(path) == 101
            # the target was computed from exactly the image the record stores
            assert np.array_equal(path, ravel(image[:, :, 0], **RAVEL))
            indices = tf.io.parse_tensor(ex["target/indices"], tf.uint8).numpy()
            assert np.array_equal(indices, adjacency_indices(path, 32).reshape(-1))
            assert len(indices) == 2 * ex["target/sparsity"]
            names.append(ex["record/name"].numpy().decode())
    assert len(names) == 56 and len(set(names)) == 56


def test_a_ravel_parameter_reruns_ravel_and_tangler_records_only(tangled, tmp_path):
    import shutil

    work = tmp_path / "w"
    shutil.copytree(tangled, work, symlinks=True)
    assert outstanding(work) == {}
    write_config(
        work,
        resize={**RESIZE, "gray_matrix": "rec709"},
        records={"schemas": ["tangler", "imagenet"]},
        ravel={**RAVEL, "lines": 120},
    )
    assert outstanding(work) == {
        "ravel_shard": 6,
        "records_shard": 6,
        "verify_records": 1,
        "records_metadata": 2,
        "summary": 1,
        "dataset_card": 1,
        "report_sheet": 2,  # tangler's sheets; imagenet's records are unchanged
        "report_split": 2,
        "report_dataset": 1,
        "all": 1,
    }


def test_where_ravel_runs_reruns_no_ravel_or_records_job(tangled, tmp_path):
    import shutil

    work = tmp_path / "w"
    shutil.copytree(tangled, work, symlinks=True)
    write_config(
        work,
        resize={**RESIZE, "gray_matrix": "rec709"},
        records={"schemas": ["tangler", "imagenet"]},
        ravel=RAVEL,
        device={"ravel": "cpu"},  # a config value, not a param: the same bytes
    )
    # only the dataset card, which quotes the whole configuration
    assert outstanding(work) == {"dataset_card": 1, "all": 1}


def test_tangler_needs_square_gray_full_size_images(tmp_path):
    (tmp_path / "src" / "train").mkdir(parents=True)
    config = base_config(tmp_path / "src", tmp_path / "r", records={"schemas": ["tangler"]})
    with pytest.raises(ConfigError, match="'resize.colorspace'"):
        validate_config({**config, "resize": {"upscale": True}})
    with pytest.raises(ConfigError, match="'resize.upscale'"):
        validate_config({**config, "resize": {"colorspace": "gray"}})
    with pytest.raises(ConfigError, match="'resize.size'"):
        validate_config({**config, "resize": {**RESIZE, "size": [48, 32]}})
    with pytest.raises(ConfigError, match="'resize.mode'"):
        validate_config({**config, "resize": {**RESIZE, "mode": "keep"}})
    assert validate_config({**config, "resize": RESIZE})["ravel"]["pins"] == 256


def run_cli(*args, stdin=b""):
    env = {**os.environ, "PYTHONPATH": str(REPO / "scripts")}
    return subprocess.run(
        [sys.executable, "-m", "imgprep", "ravel", *args],
        input=stdin,
        capture_output=True,
        env=env,
        check=True,
    )


def test_cli_reads_raw_gray_bytes_from_stdin():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, size=(40, 40), dtype=np.uint8)
    out = run_cli("--pins", "24", "--lines", "30", "-", stdin=image.tobytes())
    pins = [int(line) for line in out.stdout.decode().split()]
    assert pins == list(ravel(image, pins=24, lines=30))


def test_cli_ravels_an_image_file_and_renders_it(tmp_path):
    from PIL import Image

    photo = REPO / "resources" / "sample" / "train" / "n02123045" / "n02123045_1.JPEG"
    svg, png = tmp_path / "art.svg", tmp_path / "art.png"
    out = run_cli(
        "--pins",
        "32",
        "--lines",
        "50",
        "--res",
        "64",
        "--svg",
        str(svg),
        "--png",
        str(png),
        str(photo),
    )
    assert out.stdout == b""  # files asked for: 6001 pins on the terminal would drown them
    assert svg.read_text().startswith("<svg")
    with Image.open(png) as image:
        assert image.size == (64, 64)
    args = ["--pins", "32", "--lines", "50", "--res", "64", "--svg", str(svg)]
    out = run_cli(*args, "--pins-out", "-", str(photo))
    pins = [int(line) for line in out.stdout.decode().split()]
    assert len(pins) == 51 and pins[0] == 0 and all(0 <= p < 32 for p in pins)
    run_cli(*args, "--pins-out", str(tmp_path / "pins.txt"), str(photo))
    assert [int(line) for line in (tmp_path / "pins.txt").read_text().split()] == pins


def test_cli_help_is_plain_text():
    env = {**os.environ, "PYTHONPATH": str(REPO / "scripts")}
    for args in (["--help"], ["ravel", "--help"]):
        out = subprocess.run(
            [sys.executable, "-m", "imgprep", *args], capture_output=True, env=env, check=True
        ).stdout.decode()
        assert "``" not in out
        assert "ravel" in out
    assert "--pins-out" in out
