"""End to end: every source layout, as users download it, built by the real workflow.

Miniature fakes of each layout are made from the embedded sample: ILSVRC2012 tars with
box XMLs, Kaggle's localization folder with its CSVs, and a URL list served by a local
HTTP server. Records are parsed back with TensorFlow; boxes are checked against values
worked out by hand from the annotations (resize mode stretch keeps normalized boxes).
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import shutil
import tarfile
import threading
import time
from pathlib import Path

import pytest
import yaml
from helpers import SAMPLE
from PIL import Image
from test_workflow import new_workdir, outstanding, snakemake

BOX_FEATURES = ("xmin", "ymin", "xmax", "ymax")


def parse_records(files) -> list[dict]:
    """Every record of ``files`` as plain Python values."""
    import tensorflow as tf

    features = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/class/label": tf.io.FixedLenFeature([], tf.int64),
        "image/class/synset": tf.io.FixedLenFeature([], tf.string),
        "image/filename": tf.io.FixedLenFeature([], tf.string),
        "image/height": tf.io.FixedLenFeature([], tf.int64),
        "image/width": tf.io.FixedLenFeature([], tf.int64),
        **{f"image/object/bbox/{k}": tf.io.VarLenFeature(tf.float32) for k in BOX_FEATURES},
        "image/object/bbox/label": tf.io.VarLenFeature(tf.int64),
    }
    records = []
    for record in tf.data.TFRecordDataset([str(f) for f in files]):
        ex = tf.io.parse_single_example(record, features)
        image = tf.io.decode_jpeg(ex["image/encoded"])
        columns = [ex[f"image/object/bbox/{k}"].values.numpy().tolist() for k in BOX_FEATURES]
        boxes = list(zip(*columns, strict=True))
        records.append(
            {
                "filename": ex["image/filename"].numpy().decode(),
                "label": int(ex["image/class/label"]),
                "synset": ex["image/class/synset"].numpy().decode(),
                "shape": tuple(image.shape),
                "hw": (int(ex["image/height"]), int(ex["image/width"])),
                "boxes": boxes,
                "box_labels": ex["image/object/bbox/label"].values.numpy().tolist(),
            }
        )
    return records


def split_records(work: Path, split: str) -> list[dict]:
    files = sorted((work / "results" / "records" / "imagenet").glob(f"{split}-*"))
    assert files, f"no {split} shards"
    return parse_records(files)


def labels_of(work: Path) -> dict[str, int]:
    rows = (work / "results" / "index" / "labels.tsv").read_text().splitlines()[1:]
    return {row.split("\t")[2]: int(row.split("\t")[1]) for row in rows}


def set_config(work: Path, **sections) -> None:
    config = yaml.safe_load((work / "config.yaml").read_text())
    config.update(sections)
    config["records"]["schemas"] = ["imagenet"]
    config["resize"].update({"mode": "stretch", "size": 64})
    (work / "config.yaml").write_text(yaml.safe_dump(config))


def voc_xml(name: str, width: int, height: int, boxes) -> bytes:
    objects = "".join(
        f"<object><name>{wnid}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
        f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        for wnid, x1, y1, x2, y2 in boxes
    )
    return (
        f"<annotation><filename>{name}</filename><size><width>{width}</width>"
        f"<height>{height}</height><depth>3</depth></size>{objects}</annotation>"
    ).encode()


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def expected_box(x1, y1, x2, y2, width, height):
    """The rule by hand: normalize, order, clamp to [0, 1]."""
    xs = sorted((min(max(x1 / width, 0.0), 1.0), min(max(x2 / width, 0.0), 1.0)))
    ys = sorted((min(max(y1 / height, 0.0), 1.0), min(max(y2 / height, 0.0), 1.0)))
    return xs[0], ys[0], xs[1], ys[1]


def assert_boxes(got, want) -> None:
    assert len(got) == len(want), (got, want)
    for box, expected in zip(got, want, strict=True):
        assert box == pytest.approx(expected, abs=1e-6)


def sample_files(split: str) -> list[Path]:
    """The sample's JPEG-named photos of a split that become records (quirks.tsv says)."""
    rows = (SAMPLE / "quirks.tsv").read_text().splitlines()[1:]
    rejected = {row.split("\t")[0] for row in rows if row.split("\t")[2] == "reject"}
    return sorted(
        p
        for p in (SAMPLE / split).glob("*/*")
        if p.suffix == ".JPEG" and str(p.relative_to(SAMPLE)) not in rejected
    )


# -- ILSVRC2012 tars ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def ilsvrc(tmp_path_factory):
    """The three image tars, the validation labels and the box archives, built once."""
    work = new_workdir(tmp_path_factory.mktemp("ilsvrc") / "w")
    data = work / "imagenet"
    data.mkdir()
    train = {}
    with tarfile.open(data / "ILSVRC2012_img_train.tar", "w", format=tarfile.GNU_FORMAT) as outer:
        for folder in sorted((SAMPLE / "train").iterdir()):
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as inner:
                for image in sorted(folder.iterdir()):
                    if image.suffix.lower() in (".jpeg", ".jpg", ".png"):
                        inner.add(image, arcname=image.name)
                        train[image.name] = (folder.name, image)
            add_bytes(outer, f"{folder.name}.tar", buffer.getvalue())
    val_names, val_classes = [], []
    val_images = sorted((SAMPLE / "validation").glob("*/*.JPEG"))
    with tarfile.open(data / "ILSVRC2012_img_val.tar", "w") as tar:
        for number, image in enumerate(val_images, 1):
            name = f"ILSVRC2012_val_{number:08d}.JPEG"
            tar.add(image, arcname=name)
            val_names.append(name)
            val_classes.append(image.parent.name)
    (data / "imagenet_2012_validation_synset_labels.txt").write_text("\n".join(val_classes) + "\n")
    test_names = []
    with tarfile.open(data / "ILSVRC2012_img_test.tar", "w") as tar:
        for number, image in enumerate(sample_files("train")[:5], 1):
            name = f"ILSVRC2012_test_{number:08d}.JPEG"
            tar.add(image, arcname=name)
            test_names.append(name)

    # boxes: the train archive with an inverted and an out-of-range box and a degenerate
    # one; the validation boxes as a folder of XMLs (Kaggle's Annotations layout)
    train_boxes = {}
    photos = [n for n, (_, p) in sorted(train.items()) if p in sample_files("train")]
    with tarfile.open(data / "ILSVRC2012_bbox_train_v2.tar.gz", "w:gz") as tar:
        for i, name in enumerate(photos[:6]):
            wnid = train[name][0]
            with Image.open(train[name][1]) as image:
                width, height = image.size
            boxes = [(wnid, 10, 5, width // 2, height // 2)]
            if i == 1:
                boxes = [(wnid, width - 4, height - 3, 3, 2)]  # inverted
            if i == 2:
                boxes.append((wnid, -20, 10, width + 50, height - 10))  # out of range
            if i == 3:
                boxes.append((wnid, 7, 7, 7, 30))  # zero width: dropped
            stem = name.rsplit(".", 1)[0]
            add_bytes(tar, f"{wnid}/{stem}.xml", voc_xml(stem, width, height, boxes))
            train_boxes[name] = [
                expected_box(*box[1:], width, height) for box in boxes if box[1] != box[3]
            ]
    val_boxes = {}
    (data / "val_boxes" / "val").mkdir(parents=True)
    photos = set(sample_files("validation"))
    boxed = [
        (name, wnid)
        for name, wnid, image in zip(val_names, val_classes, val_images, strict=True)
        if image in photos
    ]
    for name, wnid in boxed[:4]:
        stem = name.rsplit(".", 1)[0]
        xml = voc_xml(stem, 200, 100, [(wnid, 20, 10, 120, 90)])
        (data / "val_boxes" / "val" / f"{stem}.xml").write_bytes(xml)
        val_boxes[name] = [expected_box(20, 10, 120, 90, 200, 100)]
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in data.glob("*.tar")}

    set_config(
        work,
        source={"type": "tars", "root": "imagenet"},
        splits={
            "train": {
                "shards": 2,
                "tar": "ILSVRC2012_img_train.tar",
                "boxes": "imagenet/ILSVRC2012_bbox_train_v2.tar.gz",
            },
            "validation": {
                "shards": 1,
                "tar": "ILSVRC2012_img_val.tar",
                "labels": "imagenet_2012_validation_synset_labels.txt",
                "boxes": "imagenet/val_boxes",
            },
            "test": {"shards": 1, "tar": "ILSVRC2012_img_test.tar"},
        },
    )
    snakemake(work, "--cores", "2")
    return {
        "work": work,
        "train": train,
        "val": dict(zip(val_names, val_classes, strict=True)),
        "test": test_names,
        "train_boxes": train_boxes,
        "val_boxes": val_boxes,
        "digests": digests,
    }


def test_ilsvrc_tars_are_read_in_place_and_left_untouched(ilsvrc):
    work = ilsvrc["work"]
    data = work / "imagenet"
    now = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in data.glob("*.tar")}
    assert now == ilsvrc["digests"]
    unpacked = [
        p for p in work.rglob("*") if p.suffix.upper() == ".JPEG" and "sample" not in p.parts
    ]
    assert unpacked == [], "images were unpacked"
    summary = json.loads((work / "results" / "summary.json").read_text())
    images = {split: entry["images"] for split, entry in summary["splits"].items()}
    assert images == {"train": len(ilsvrc["train"]), "validation": len(ilsvrc["val"]), "test": 5}
    for entry in summary["splits"].values():
        assert entry["schemas"]["imagenet"]["records"] + entry["rejects"] == entry["images"]
    assert outstanding(work) == {}


def test_ilsvrc_train_labels_come_from_the_inner_tars(ilsvrc):
    labels = labels_of(ilsvrc["work"])
    records = split_records(ilsvrc["work"], "train")
    assert len(records) >= len(ilsvrc["train"]) - 2  # the sample's truncated and empty files
    for record in records:
        wnid = ilsvrc["train"][record["filename"]][0]
        assert (record["synset"], record["label"]) == (wnid, labels[wnid])
        assert record["shape"][:2] == record["hw"] == (64, 64)


def test_ilsvrc_validation_labels_follow_sorted_file_names(ilsvrc):
    labels = labels_of(ilsvrc["work"])
    records = split_records(ilsvrc["work"], "validation")
    assert {r["filename"] for r in records} <= set(ilsvrc["val"])
    for record in records:
        wnid = ilsvrc["val"][record["filename"]]
        assert (record["synset"], record["label"]) == (wnid, labels[wnid])


def test_ilsvrc_test_split_is_unlabelled(ilsvrc):
    records = split_records(ilsvrc["work"], "test")
    assert sorted(r["filename"] for r in records) == ilsvrc["test"]
    assert {(r["label"], r["synset"]) for r in records} == {(-1, "")}


def test_voc_boxes_are_normalized_ordered_clamped_and_degenerate_ones_dropped(ilsvrc):
    train = {r["filename"]: r for r in split_records(ilsvrc["work"], "train")}
    labels = labels_of(ilsvrc["work"])
    assert ilsvrc["train_boxes"]
    for name, want in ilsvrc["train_boxes"].items():
        record = train[name]
        assert_boxes(record["boxes"], want)
        assert record["box_labels"] == [labels[ilsvrc["train"][name][0]]] * len(want)
    boxed = sum(1 for r in train.values() if r["boxes"])
    assert boxed == len(ilsvrc["train_boxes"])
    validation = {r["filename"]: r for r in split_records(ilsvrc["work"], "validation")}
    for name, want in ilsvrc["val_boxes"].items():
        assert_boxes(validation[name]["boxes"], want)


# -- Kaggle ------------------------------------------------------------------------------


def test_kaggle_layout_with_test_split_and_csv_boxes(tmp_path):
    work = new_workdir(tmp_path / "k")
    root = work / "kaggle"
    data = root / "ILSVRC" / "Data" / "CLS-LOC"
    shutil.copytree(work / "sample" / "train", data / "train")
    (data / "val").mkdir()
    (data / "test").mkdir()
    val_rows, train_rows, sizes = ["ImageId,PredictionString"], ["ImageId,PredictionString"], {}
    for image in sample_files("validation"):
        shutil.copy2(image, data / "val" / image.name)
        with Image.open(image) as opened:
            sizes[image.name] = opened.size
        w, h = sizes[image.name]
        val_rows.append(f"{image.stem},{image.parent.name} 0 0 {w // 2} {h // 2}")
    for image in sample_files("train")[:4]:
        with Image.open(image) as opened:
            sizes[image.name] = opened.size
        w, h = sizes[image.name]
        wnid = image.parent.name
        train_rows.append(f"{image.stem},{wnid} {w // 4} 0 {w} {h // 3} {wnid} 1 1 2 2")
    for image in sample_files("train")[-3:]:
        shutil.copy2(image, data / "test" / f"ILSVRC2012_test_{image.name}")
    (root / "LOC_val_solution.csv").write_text("\n".join(val_rows) + "\n")
    (root / "LOC_train_solution.csv").write_text("\n".join(train_rows) + "\n")
    shutil.copy2(work / "sample" / "synsets.txt", root / "LOC_synset_mapping.txt")
    set_config(
        work,
        source={"type": "kaggle", "root": "kaggle"},
        splits={"train": {"shards": 2}, "validation": {"shards": 1}, "test": {"shards": 1}},
    )
    snakemake(work, "--cores", "2")

    validation = split_records(work, "validation")
    assert len(validation) == len(val_rows) - 1
    for record in validation:
        w, h = sizes[record["filename"]]
        assert_boxes(record["boxes"], [(0.0, 0.0, (w // 2) / w, (h // 2) / h)])
    train = {r["filename"]: r for r in split_records(work, "train")}
    for row in train_rows[1:]:
        name = row.split(",")[0] + ".JPEG"
        w, h = sizes[name]
        want = [((w // 4) / w, 0.0, 1.0, (h // 3) / h), (1 / w, 1 / h, 2 / w, 2 / h)]
        assert_boxes(train[name]["boxes"], want)
    assert sum(1 for r in train.values() if r["boxes"]) == len(train_rows) - 1
    test = split_records(work, "test")
    assert len(test) == 3 and {(r["label"], r["synset"], len(r["boxes"])) for r in test} == {
        (-1, "", 0)
    }


# -- URL lists --------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    """Good images, dead links and the ways servers misbehave."""

    files: dict[str, bytes] = {}
    requests: list[str] = []

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802 (http.server's name)
        type(self).requests.append(self.path)
        name = self.path.rsplit("/", 1)[-1]
        if self.path.startswith("/img/") and name in self.files:
            self._send(200, self.files[name], "image/jpeg")
        elif self.path.startswith("/moved/"):
            self.send_response(302)
            self.send_header("Location", f"/img/{name}")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path.startswith("/html/"):
            self._send(200, b"<html><body>photo unavailable</body></html>", "text/html")
        elif self.path.startswith("/slow/"):
            time.sleep(3)
            self._send(200, self.files[name], "image/jpeg")
        elif self.path.startswith("/cut/"):
            data = self.files[name]
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
        else:
            self._send(404, b"not found", "text/plain")

    def _send(self, status, body, content_type):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # clients that hang up on the slow and cut-off routes are the point


@pytest.fixture
def image_server():
    photos = sample_files("train") + sample_files("validation")
    _Handler.files = {p.name: p.read_bytes() for p in photos}
    _Handler.requests = []
    server = _QuietServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", photos
    server.shutdown()
    server.server_close()


def test_a_url_list_downloads_records_and_accounts_for_dead_links(tmp_path, image_server):
    base, photos = image_server
    work = new_workdir(tmp_path / "u")
    lines, good = [], {}
    for number, photo in enumerate(photos[:20]):
        key = f"{photo.parent.name}_{number}"
        route = "moved" if number % 7 == 3 else "img"
        lines.append(f"{key}\t{base}/{route}/{photo.name}")
        good[photo.name] = photo.parent.name
    bad = {
        "n02123045_900": (f"{base}/gone/x.jpg", "HTTP 404"),
        "n02123045_901": (f"{base}/html/x.jpg", "not an image"),
        "n02123045_902": (f"{base}/slow/{photos[0].name}", "timeout"),
        "n02123045_903": (f"{base}/cut/{photos[1].name}", "truncated"),
    }
    lines += [f"{key}\t{url}" for key, (url, _) in bad.items()]
    (work / "urls.txt").write_text("\n".join(lines) + "\n")
    set_config(
        work,
        source={"type": "urls", "urls": "urls.txt"},
        splits={
            "train": {"shards": 2, "fraction": 0.75},
            "validation": {"shards": 1, "fraction": 0.25},
        },
        download={
            "timeout": 1,
            "total_timeout": 10,
            "retries": 1,
            "backoff": 0.05,
            "allow_private": True,  # the image server listens on 127.0.0.1
        },
    )
    snakemake(work, "--cores", "2")

    summary = json.loads((work / "results" / "summary.json").read_text())
    assert sum(s["images"] for s in summary["splits"].values()) == len(lines)
    records = split_records(work, "train") + split_records(work, "validation")
    labels = labels_of(work)
    assert len(records) == len(good)
    for record in records:
        assert record["label"] == labels[record["synset"]]
    rejects = (work / "results" / "rejects.tsv").read_text()
    for url, reason in bad.values():
        row = next(line for line in rejects.splitlines() if url in line)
        assert reason in row, row

    # resumable: downloading the shards again fetches nothing again
    fetched = len(_Handler.requests)
    snakemake(work, "--cores", "2", "--forcerun", "download_shard")
    assert len(_Handler.requests) == fetched
    assert outstanding(work) == {}
