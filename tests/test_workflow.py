"""End to end: the real workflow on a copy of the embedded sample, run by Snakemake."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO, SAMPLE

SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]


def write_config(workdir: Path, datasets: bool = False, **overrides) -> Path:
    """config.yaml for the sample copied into ``workdir``. Without ``datasets``: as one
    dataset (imagenet + dlbs records in results/records/, the layout of a config without
    `datasets:`), whose records are byte for byte those of config.yaml's imagenet and dlbs
    datasets (tests/test_datasets.py checks that); ``overrides`` set its sections."""
    with open(REPO / "config.yaml") as handle:
        config = yaml.safe_load(handle)
    # relative to the working directory: a copied workdir is an exact clone
    config["source"]["root"] = "sample"
    config["labels"]["synsets"] = "sample/synsets.txt"
    if not datasets:
        del config["datasets"]
        config["records"]["schemas"] = ["imagenet", "dlbs"]
    for section, values in overrides.items():
        config.setdefault(section, {}).update(values)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def snakemake(workdir: Path, *args, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [*SNAKEMAKE, "-d", str(workdir), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


def outstanding(workdir: Path, *args) -> dict[str, int]:
    """Jobs a dry-run would run, by rule."""
    proc = snakemake(workdir, "-n", "--quiet", "rules", *args)
    text = proc.stdout + proc.stderr
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:", 1)[1]
    return {m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s+(\d+)$", table, re.M) if m[0] != "total"}


def record_hashes(workdir: Path) -> dict[str, str]:
    return {
        str(p.relative_to(workdir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((workdir / "results" / "records").rglob("*"))
        if p.is_file()
    }


def new_workdir(base: Path, datasets: bool = False) -> Path:
    base.mkdir(parents=True)
    shutil.copytree(SAMPLE, base / "sample")
    write_config(base, datasets=datasets)
    return base


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    workdir = new_workdir(tmp_path_factory.mktemp("run") / "a")
    snakemake(workdir, "--cores", "2")
    return workdir


def load_quirks() -> dict[str, dict]:
    with open(SAMPLE / "quirks.tsv") as handle:
        header, *rows = [line.rstrip("\n").split("\t") for line in handle]
    return {row[0]: dict(zip(header, row, strict=False)) for row in rows}


def sample_images() -> dict[str, str]:
    """Every indexable file of the sample: relative path -> split."""
    return {
        str(p.relative_to(SAMPLE)): p.relative_to(SAMPLE).parts[0]
        for p in SAMPLE.glob("*/*/*")
        if p.suffix.lower() in {".jpeg", ".jpg", ".png"}
    }


def test_every_image_is_a_record_or_a_reject(built):
    import tensorflow as tf

    quirks = load_quirks()
    labels = {
        line.split("\t")[2]: int(line.split("\t")[1])
        for line in (built / "results" / "index" / "labels.tsv").read_text().splitlines()[1:]
    }
    feature_map = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/class/label": tf.io.FixedLenFeature([], tf.int64),
        "image/class/synset": tf.io.FixedLenFeature([], tf.string),
        "image/filename": tf.io.FixedLenFeature([], tf.string),
        "image/height": tf.io.FixedLenFeature([], tf.int64),
        "image/width": tf.io.FixedLenFeature([], tf.int64),
        "image/channels": tf.io.FixedLenFeature([], tf.int64),
        "image/colorspace": tf.io.FixedLenFeature([], tf.string),
    }
    seen: dict[str, str] = {}
    for split in ("train", "validation"):
        files = sorted((built / "results" / "records" / "imagenet").glob(f"{split}-*-of-*"))
        assert [f.name for f in files] == [
            f"{split}-{i:05d}-of-{len(files):05d}" for i in range(len(files))
        ]
        for record in tf.data.TFRecordDataset([str(f) for f in files]):
            ex = tf.io.parse_single_example(record, feature_map)
            image = tf.io.decode_jpeg(ex["image/encoded"]).numpy()
            synset = ex["image/class/synset"].numpy().decode()
            assert image.shape == (ex["image/height"], ex["image/width"], ex["image/channels"])
            assert image.shape[2] == 3 and ex["image/colorspace"].numpy() == b"RGB"
            assert max(image.shape[:2]) <= 256 and image.shape[0] == image.shape[1]
            assert ex["image/class/label"].numpy() == labels[synset]
            seen[ex["image/filename"].numpy().decode()] = split
    rejects = (built / "results" / "rejects.tsv").read_text().splitlines()[1:]
    rejected = {line.split("\t")[3].rsplit("/", 1)[1]: line.split("\t")[4] for line in rejects}
    expected = {Path(rel).name: split for rel, split in sample_images().items()}
    assert set(seen) | set(rejected) == set(expected)
    assert not set(seen) & set(rejected)
    for rel, quirk in quirks.items():
        name = Path(rel).name
        if quirk["expect"] == "record":
            assert name in seen, quirk
        elif quirk["expect"] == "reject":
            assert name in rejected and rejected[name], quirk
    summary = json.loads((built / "results" / "summary.json").read_text())
    assert summary["ignored_files"] == 1
    for split in ("train", "validation"):
        entry = summary["splits"][split]
        assert entry["images"] == sum(1 for s in expected.values() if s == split)
        assert entry["schemas"]["imagenet"]["records"] + entry["rejects"] == entry["images"]
        assert entry["schemas"]["dlbs"]["records"] == entry["schemas"]["imagenet"]["records"]
        assert entry["classes"] == 4


def test_dlbs_shards_hold_raw_tensors_with_zero_based_labels(built):
    import tensorflow as tf

    feature_map = {
        "image/height": tf.io.FixedLenFeature([], tf.int64),
        "image/width": tf.io.FixedLenFeature([], tf.int64),
        "image/channels": tf.io.FixedLenFeature([], tf.int64),
        "image/class/label": tf.io.FixedLenFeature([], tf.int64),
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/format": tf.io.FixedLenFeature([], tf.string),
    }
    files = sorted(str(p) for p in (built / "results" / "records" / "dlbs").glob("validation-*"))
    labels = []
    for record in tf.data.TFRecordDataset(files):
        ex = tf.io.parse_single_example(record, feature_map)
        image = tf.io.decode_raw(ex["image/encoded"], tf.uint8)
        shape = tf.stack([ex["image/height"], ex["image/width"], ex["image/channels"]])
        assert tf.reshape(image, tf.cast(shape, tf.int32)).shape[2] == 3
        assert ex["image/format"].numpy() == b"tensor"
        labels.append(int(ex["image/class/label"]))
    assert labels and min(labels) >= 0 and max(labels) <= 3


def test_nothing_outstanding_after_a_run(built):
    assert outstanding(built) == {}


def test_jobs_log_progress_and_the_summary_has_per_stage_totals(built):
    from imgprep.progress import describe_states, job_states

    results = built / "results"
    for log in [*results.glob("logs/resize/*/*.log"), *results.glob("logs/records/*/*.log")]:
        lines = [line for line in log.read_text().splitlines() if line.startswith("progress")]
        assert lines and lines[-1].endswith(("done", "rejected")), log
        assert re.search(r": (\d+)/\1 images \(100\.0%\)", lines[-1]), lines[-1]
    states = job_states(results / "logs")
    assert states["running"] == [] and states["failed"] == {}
    assert states["finished"]["resize_shard"] == 6
    assert "finished jobs: " in describe_states(states)
    with open(results / "stages.tsv") as handle:
        header, *rows = [line.rstrip("\n").split("\t") for line in handle]
    stages = {row[0]: dict(zip(header, row, strict=True)) for row in rows}
    summary = json.loads((results / "summary.json").read_text())
    assert "stages" not in summary  # timings would break its byte identity
    assert list(stages) == [
        "resize",
        "records imagenet",
        "verify imagenet",
        "records dlbs",
        "verify dlbs",
    ]
    assert stages["resize"]["jobs"] == "6"
    assert int(stages["resize"]["images"]) == summary["totals"]["images"]
    records = sum(split["schemas"]["dlbs"]["records"] for split in summary["splits"].values())
    assert int(stages["records dlbs"]["images"]) == records
    assert float(stages["resize"]["wall_s"]) > 0 and float(stages["resize"]["max_rss_mb"]) > 0


def test_touching_one_image_reruns_only_its_shard(built, tmp_path):
    work = tmp_path / "w"
    shutil.copytree(built, work, symlinks=True)  # keeps mtimes
    assert outstanding(work) == {}
    image = work / "sample" / "train" / "n02123045" / "n02123045_3.JPEG"
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    # touched in place: only a rescan sees it (README "Fast dry-runs: the scan cache")
    config = yaml.safe_load((work / "config.yaml").read_text())
    config["source"]["rescan"] = True
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    jobs = outstanding(work)
    assert jobs["resize_shard"] == 1
    assert jobs["records_shard"] == 2  # imagenet + dlbs for that shard
    assert jobs["verify_records"] == 2  # one per schema
    assert "index_table" in jobs and jobs["index_table"] == 1


def test_changing_a_resize_parameter_reruns_resize_and_downstream_only(built, tmp_path):
    work = tmp_path / "w"
    shutil.copytree(built, work, symlinks=True)
    write_config(work, resize={"quality": 80})
    jobs = outstanding(work)
    assert jobs == {
        "resize_shard": 6,
        "records_shard": 12,
        "verify_records": 2,
        "records_metadata": 6,
        "summary": 1,
        "dataset_card": 1,
        "duplicates_audit": 1,  # its meta tables changed
        "report_sheet": 4,  # the report: its figures follow what they show
        "report_split": 2,
        "report_dataset": 1,
        "report_duplicates": 1,
        "all": 1,
    }


def test_a_changed_setting_is_seen_after_the_intermediates_are_gone(built, tmp_path):
    """Records carry a digest of every upstream setting: with resized/ removed (what
    Snakemake does to a failed job's outputs), the records of another resize are still
    outdated, not hidden behind the missing tars."""
    work = tmp_path / "w"
    shutil.copytree(built, work, symlinks=True)
    # what Snakemake does to a failed resize_shard: its outputs and their metadata go
    outputs = [p for kind in ("resized", "rejects") for p in (work / "results" / kind).rglob("*.*")]
    for path in outputs:
        path.unlink()
    snakemake(work, "--cleanup-metadata", *(str(p.relative_to(work)) for p in outputs))
    assert outstanding(work) == {}  # same config: a missing intermediate is not needed
    write_config(work, resize={"mode": "pad", "size": 299})
    assert outstanding(work) == {
        "resize_shard": 6,
        "records_shard": 12,
        "verify_records": 2,
        "summary": 1,
        "dataset_card": 1,
        "records_metadata": 6,
        "duplicates_audit": 1,  # its meta tables changed
        "report_sheet": 4,  # the report: its figures follow what they show
        "report_split": 2,
        "report_dataset": 1,
        "report_duplicates": 1,
        "all": 1,
    }


def test_same_inputs_give_byte_identical_shards_whatever_cores(built, tmp_path):
    other = new_workdir(tmp_path / "b")
    write_config(other, threads={"resize": 1, "records": 1, "verify": 1})
    snakemake(other, "--cores", "1")
    assert record_hashes(other) == record_hashes(built)
    assert (other / "results" / "summary.json").read_text() == (
        built / "results" / "summary.json"
    ).read_text()


def test_removed_output_is_rebuilt_alone_and_no_temp_files_are_left(built, tmp_path):
    work = tmp_path / "w"
    shutil.copytree(built, work, symlinks=True)
    (work / "results" / "records" / "imagenet" / "train-00001-of-00004").unlink()
    assert outstanding(work) == {
        "records_shard": 1,
        "verify_records": 1,
        "records_metadata": 3,
        "summary": 1,
        "dataset_card": 1,
        "report_sheet": 2,  # the schema's sheets (its verification changed), not dlbs'
        "report_split": 2,
        "report_dataset": 1,
        "all": 1,
    }
    before = record_hashes(built)
    snakemake(work, "--cores", "2")
    assert record_hashes(work) == before
    assert not [p for p in (work / "results").rglob("*") if p.name.endswith(".tmp")]


def flip_a_byte(path: Path, keep_mtime: bool) -> None:
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    if keep_mtime:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_failed_verification_is_never_forgotten(built, tmp_path):
    """The corrupt shard fails; the next run must not say "Nothing to be done" over the
    old summary: the shard is rebuilt and checked again."""
    work = tmp_path / "w"
    shutil.copytree(built, work, symlinks=True)
    shard = work / "results" / "records" / "imagenet" / "train-00001-of-00004"
    flip_a_byte(shard, keep_mtime=False)
    failed = snakemake(work, "--cores", "2", check=False)
    assert failed.returncode != 0
    assert "train-00001-of-00004" in failed.stdout + failed.stderr
    assert not shard.exists(), "the shard that failed stays outstanding"
    assert not (work / "results" / "summary.json").exists(), "no summary vouches for it"
    assert outstanding(work) == {
        "records_shard": 1,
        "verify_records": 1,
        "summary": 1,
        "dataset_card": 1,
        "records_metadata": 3,
        "report_sheet": 2,
        "report_split": 2,
        "report_dataset": 1,
        "all": 1,
    }
    snakemake(work, "--cores", "2")
    assert record_hashes(work) == record_hashes(built)
    assert (work / "results" / "summary.json").read_text() == (
        built / "results" / "summary.json"
    ).read_text()


def test_full_verification_catches_a_change_that_keeps_size_and_mtime(built, tmp_path):
    work = tmp_path / "w"
    shutil.copytree(built, work, symlinks=True)
    shard = work / "results" / "records" / "dlbs" / "validation-00000-of-00002"
    checksum = work / "results" / "checksums" / "records" / "dlbs" / shard.name
    recorded = checksum.with_name(shard.name + ".sha256").read_text().split()[0]
    assert recorded == hashlib.sha256(shard.read_bytes()).hexdigest()  # recorded when written
    flip_a_byte(shard, keep_mtime=True)
    assert outstanding(work) == {}  # size and mtime are all Snakemake and the cache look at
    write_config(work, verify={"full": True})
    failed = snakemake(work, "--cores", "2", check=False)
    assert failed.returncode != 0
    assert not shard.exists()
    write_config(work)
    snakemake(work, "--cores", "2")
    assert record_hashes(work) == record_hashes(built)
    (work / "full.yaml").write_text("verify: {full: true}\n")
    layered = ["--configfile", str(work / "config.yaml"), str(work / "full.yaml")]
    for _ in range(2):  # while verify.full is set, every run reads every shard again
        assert outstanding(work, *layered)["verify_records"] == 2
        snakemake(work, "--cores", "2", *layered)


def test_bad_config_fails_before_any_job_naming_the_key(tmp_path):
    work = new_workdir(tmp_path / "c")
    write_config(work, resize={"mode": "squash"})
    proc = snakemake(work, "--cores", "1", check=False)
    assert proc.returncode != 0
    assert "'resize.mode'" in proc.stdout + proc.stderr
    assert not (work / "results").exists()


def test_a_killed_run_resumes_without_redoing_finished_shards(built, tmp_path):
    import signal
    import time

    work = new_workdir(tmp_path / "k")
    resized = work / "results" / "resized"
    proc = subprocess.Popen(
        [*SNAKEMAKE, "-d", str(work), "--cores", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while len(list(resized.glob("*/*.meta.tsv"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # no clean-up at all, as on a lost node
    proc.wait()

    snakemake(work, "--unlock")  # what Snakemake asks for after a hard kill
    plan = snakemake(work, "-n", "--rerun-incomplete").stdout
    redo = set(re.findall(r"output: (results/resized/\w+/\d+\.tar)", plan))
    kept = {p: p.stat().st_mtime_ns for p in resized.glob("*/*.tar")}
    kept = {p: t for p, t in kept.items() if str(p.relative_to(work)) not in redo}
    assert kept, "some shards finished before the kill"
    assert len(redo) + len(kept) == 6

    snakemake(work, "--cores", "2", "--rerun-incomplete")
    assert {p: p.stat().st_mtime_ns for p in kept} == kept, "finished shards were redone"
    assert record_hashes(work) == record_hashes(built)


def test_a_dry_run_during_a_build_leaves_it_intact_and_sees_the_new_work(tmp_path):
    """`snakemake -n` while a build runs, after an image was added: the build's shard
    lists stay as they are (it completes, verification passes), the dry run still reports
    the added image's shard, and a second build is refused with a clear message."""
    import time

    from imgprep.sources.common import placer as _placer

    work = new_workdir(tmp_path / "c")
    write_config(work, threads={"resize": 1, "records": 1, "verify": 1})
    build = subprocess.Popen(
        [*SNAKEMAKE, "-d", str(work), "--cores", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        resized = work / "results" / "resized" / "train"
        deadline = time.monotonic() + 300
        while not list(resized.glob("*.meta.tsv")) and time.monotonic() < deadline:
            time.sleep(0.05)
        shard = int(sorted(resized.glob("*.meta.tsv"))[0].name[:5])  # already resized
        name = next(
            f"n02123045/added_{n}.JPEG"
            for n in range(1000)
            if _placer(0)(f"n02123045/added_{n}.JPEG", (("train", 1.0),))[1] % 4 == shard
        )
        shutil.copy2(
            work / "sample" / "train" / "n02123045" / "n02123045_3.JPEG",
            work / "sample" / "train" / name,
        )
        listed = work / "results" / "index" / "train" / f"{shard:05d}.tsv"
        before = listed.read_bytes()

        # --rerun-incomplete as in profiles/local: the running jobs' outputs are incomplete
        dry = snakemake(work, "-n", "--rerun-incomplete")
        dry_overlapped = build.poll() is None
        during = listed.read_bytes()
        second = snakemake(work, "--cores", "1", check=False)
        second_overlapped = build.poll() is None
    finally:
        log = build.communicate(timeout=600)[0]
    assert dry_overlapped and second_overlapped, "the build ended too soon for this test"
    # the running build is intact: its lists unchanged, and it passed verification
    assert during == before, "the dry run rewrote the shard list under the build"
    assert build.returncode == 0, log[-4000:]
    assert listed.read_bytes() == before
    assert json.loads((work / "results" / "summary.json").read_text())["totals"]["rejects"] == 2
    # the dry run answered for the files on disk: it planned the added image's shard
    planned = [line for line in dry.stdout.splitlines() if "imgprep-index-" in line]
    assert any(f"train/{shard:05d}.tsv" in line for line in planned), dry.stdout[-3000:]
    assert f"resized/train/{shard:05d}.tar" in dry.stdout
    assert second.returncode != 0 and "is building from" in second.stdout + second.stderr
    assert outstanding(work)["resize_shard"] == 1  # the next invocation takes the image in
    assert name in listed.read_text()


def test_a_manifest_source_accounts_for_every_listed_file(tmp_path):
    work = new_workdir(tmp_path / "m")
    listed = sorted(p for p in sample_images() if not p.endswith(".txt"))
    lines = ["path,label,split"]
    lines += [f"{rel},{rel.split('/')[1]},{rel.split('/')[0]}" for rel in listed]
    lines.append("train/n02123045/missing.JPEG,n02123045,train")
    (work / "sample" / "list.csv").write_text("\n".join(lines) + "\n")
    config = yaml.safe_load((work / "config.yaml").read_text())
    config["source"] = {"type": "manifest", "manifest": "sample/list.csv"}
    config["splits"] = {"train": {"shards": 4}, "validation": {"shards": 2}}
    config["records"]["schemas"] = ["imagenet"]
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    snakemake(work, "--cores", "2")
    summary = json.loads((work / "results" / "summary.json").read_text())
    total = sum(s["images"] for s in summary["splits"].values())
    records = sum(s["schemas"]["imagenet"]["records"] for s in summary["splits"].values())
    rejects = (work / "results" / "rejects.tsv").read_text()
    assert total == len(listed) + 1 == records + summary["totals"]["rejects"]
    assert "missing.JPEG" in rejects and "FileNotFoundError" in rejects


def test_the_kaggle_layout_builds_as_downloaded(tmp_path):
    """Kaggle's download, untouched: train synset folders, a flat val/ and its CSV."""
    import tensorflow as tf

    work = new_workdir(tmp_path / "g")
    data = work / "kaggle" / "ILSVRC" / "Data" / "CLS-LOC"
    shutil.copytree(work / "sample" / "train", data / "train")
    (data / "val").mkdir()
    solution = ["ImageId,PredictionString"]
    for image in sorted((work / "sample" / "validation").glob("*/*")):
        shutil.copy2(image, data / "val" / image.name)
        solution.append(f"{image.stem},{image.parent.name} 0 0 10 10")
    (work / "kaggle" / "LOC_val_solution.csv").write_text("\n".join(solution) + "\n")
    shutil.copy2(work / "sample" / "synsets.txt", work / "kaggle" / "LOC_synset_mapping.txt")
    config = yaml.safe_load((work / "config.yaml").read_text())
    config["source"] = {"type": "kaggle", "root": "kaggle"}
    config["labels"] = {"base": 1}
    config["splits"] = {"train": {"shards": 2}, "validation": {"shards": 1}}
    config["records"]["schemas"] = ["imagenet"]
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    snakemake(work, "--cores", "2")

    summary = json.loads((work / "results" / "summary.json").read_text())
    assert {s: v["images"] for s, v in summary["splits"].items()} == {"train": 43, "validation": 15}
    features = {
        "image/class/synset": tf.io.FixedLenFeature([], tf.string),
        "image/class/text": tf.io.FixedLenFeature([], tf.string),
        "image/filename": tf.io.FixedLenFeature([], tf.string),
    }
    shard = work / "results" / "records" / "imagenet" / "validation-00000-of-00001"
    truth = {line.split(",")[0]: line.split(",")[1].split()[0] for line in solution[1:]}
    seen = 0
    for record in tf.data.TFRecordDataset(str(shard)):
        ex = tf.io.parse_single_example(record, features)
        name = ex["image/filename"].numpy().decode()
        assert ex["image/class/synset"].numpy().decode() == truth[name.rsplit(".", 1)[0]]
        assert ex["image/class/text"].numpy()  # from LOC_synset_mapping.txt
        seen += 1
    assert seen == 13  # 15 minus the truncated and the empty file
