"""What a run leaves and says: file modes from the umask, no temps of a killed run, the
summary table at the end."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
import types

import pytest
import yaml
from helpers import REPO, SAMPLE
from imgprep.atomic import atomic_write, remove_stale_temps, remove_stale_temps_in
from imgprep.report import failure_report, success_report
from imgprep.rulelog import rule_log


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


def test_atomic_write_follows_the_umask(tmp_path, umask_027):
    with atomic_write(tmp_path / "a", "wb") as handle:
        handle.write(b"x")
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o640
    os.umask(0o002)
    with atomic_write(tmp_path / "b", "w") as handle:
        handle.write("x")
    assert stat.S_IMODE((tmp_path / "b").stat().st_mode) == 0o664
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_stale_temps_of_a_path_and_only_theirs_are_removed(tmp_path):
    mine = [".shard.tar.0123456789abcdef.tmp", ".shard.tar.k2j_a9z0.tmp"]  # new, mkstemp's
    others = [
        ".shard.tar.meta.0123456789abcdef.tmp",  # the temp of shard.tar.meta
        ".shard.0123456789abcdef.tmp",
        "shard.tar.0123456789abcdef.tmp",  # not hidden: not ours
        "shard.tar",
    ]
    for name in mine + others:
        (tmp_path / name).write_bytes(b"")
    removed = remove_stale_temps(tmp_path / "shard.tar")
    assert sorted(p.name for p in removed) == sorted(mine)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(others)
    assert {p.name for p in remove_stale_temps_in(tmp_path)} == set(others[:2])
    assert remove_stale_temps(tmp_path / "missing" / "x") == []


def test_a_job_removes_the_temps_a_killed_run_of_it_left(tmp_path):
    out, log = tmp_path / "out" / "00000.tar", tmp_path / "logs" / "00000.log"
    out.parent.mkdir()
    log.parent.mkdir()
    # what atomic_write leaves when the process is killed inside it
    stale = out.parent / ".00000.tar.0123456789abcdef.tmp"
    stale.write_bytes(b"half a tar")
    neighbour = out.parent / ".00001.tar.0123456789abcdef.tmp"  # another job's, running
    neighbour.write_bytes(b"")
    job = types.SimpleNamespace(
        output=[str(out)], log=[str(log)], rule="resize_shard", wildcards={}, threads=1
    )
    with rule_log(job):
        pass
    assert not stale.exists()
    assert neighbour.exists()
    assert "removed 1 temp files of a killed run" in log.read_text()


def test_success_report_is_the_aligned_summary_of_this_run(tmp_path):
    (tmp_path / "summary.tsv").write_text("schema\tsplit\timages\nimagenet\ttrain\t43\n")
    report = success_report([tmp_path], started=time.time() - 5)
    assert report.splitlines()[1:3] == ["schema    split  images", "imagenet  train  43"]
    assert str(tmp_path / "rejects.tsv") in report
    assert success_report([tmp_path], started=time.time() + 60) == ""  # an older summary
    assert success_report([tmp_path / "none"], started=0) == ""


def test_success_report_shows_each_dataset(tmp_path):
    for name, images in (("a", 43), ("b", 7)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.tsv").write_text(f"schema\tsplit\timages\nx\ttrain\t{images}\n")
    report = success_report([tmp_path / "a", tmp_path / "b"], started=time.time() - 5)
    assert report.count("imgprep: finished;") == 2
    assert "x       train  43" in report and "x       train  7" in report
    assert report.index(str(tmp_path / "a")) < report.index(str(tmp_path / "b"))


def test_failure_report_points_at_the_logs(tmp_path):
    report = failure_report(tmp_path, "/x/.snakemake/log/run.snakemake.log")
    assert "failed" in report and str(tmp_path / "logs") in report
    assert "/x/.snakemake/log/run.snakemake.log" in report


def test_a_run_prints_its_summary_leaves_no_temps_and_follows_the_umask(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    (work / "sample").symlink_to(SAMPLE)
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["source"]["root"] = "sample"
    config["labels"]["synsets"] = "sample/synsets.txt"
    config["splits"] = {"train": {"shards": 2}, "validation": {"shards": 1}}
    config["records"]["schemas"] = ["imagenet"]
    del config["datasets"]  # one dataset: the layout of results/ these paths name
    config["threads"] = {"resize": 2, "records": 1, "verify": 1}
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    # temps of a run killed while writing (names as atomic_write makes them)
    results = work / "results"
    planted = [
        results / "resized" / "train" / ".00000.tar.0123456789abcdef.tmp",
        results / "records" / "imagenet" / ".train-00001-of-00002.0123456789abcdef.tmp",
        results / "verify" / "imagenet.cache" / ".train-00000-of-00002.json.abcdefabcdef0123.tmp",
        results / ".summary.tsv.abcdefabcdef0123.tmp",
    ]
    for path in planted:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half written")
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(work)]
        + ["--cores", "2"],
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=lambda: os.umask(0o027),
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = proc.stdout[proc.stdout.index("imgprep: finished") :].splitlines()
    assert report[1].split() == (results / "summary.tsv").read_text().splitlines()[0].split("\t")
    assert report[2].split()[:4] == ["imagenet", "train", "43", "43"]
    assert not [p for p in results.rglob("*") if p.name.endswith(".tmp")]
    files = [p for p in results.rglob("*") if p.is_file()]
    assert len(files) > 20
    loose = [p for p in files if stat.S_IMODE(p.stat().st_mode) & 0o027]
    assert loose == [], "umask 027: nothing group-writable or readable by others"
    shard = results / "records" / "imagenet" / "train-00000-of-00002"
    assert stat.S_IMODE(shard.stat().st_mode) == 0o640
