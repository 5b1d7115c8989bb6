"""Progress lines inside long jobs, `imgprep progress`, and the per-stage totals."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time

from helpers import REPO, jpeg_bytes
from imgprep.config import section_config
from imgprep.kernels.resize import ResizeParams
from imgprep.progress import PROGRESS_LINE, Progress, describe_states, job_states, tracked
from imgprep.stages.resize import resize_shard
from imgprep.stages.stage_totals import read_benchmark, stage_totals, write_stage_totals


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_lines_come_at_the_interval_with_rate_and_eta():
    clock, out = Clock(), io.StringIO()
    progress = Progress("resize", 100, interval_s=10, out=out, clock=clock)
    for _ in range(40):  # 4 s for 40 images: no line yet
        clock.now += 0.1
        progress.advance()
    assert len(out.getvalue().splitlines()) == 1  # the first line only
    for _ in range(60):
        clock.now += 0.1
        progress.advance()
        if progress.done == 60:
            clock.now += 4.0  # 10 s since the first line: the next advance prints
    lines = out.getvalue().splitlines()
    assert lines[0] == "progress resize: 0/100 images (0.0%), 0.0 img/s, elapsed 0s, ETA ?"
    # at 61 images after 10.1 s: 6.0 img/s, 39 images left -> 6 s
    assert lines[1] == "progress resize: 61/100 images (61.0%), 6.0 img/s, elapsed 10s, ETA 6s"
    progress.finish()
    progress.finish()  # once
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[2] == "progress resize: 100/100 images (100.0%), 7.1 img/s, elapsed 14s, done"
    assert all(PROGRESS_LINE.match(line) for line in lines)


def test_interval_zero_gives_first_and_last_and_cached_work_has_no_rate():
    clock, out = Clock(), io.StringIO()
    progress = Progress("download", 10, unit="URLs", interval_s=0, out=out, clock=clock, done=6)
    for item in tracked(range(4), progress):
        clock.now += 2.0
        assert item in range(4)
    lines = out.getvalue().splitlines()
    assert lines == [
        "progress download: 6/10 URLs (60.0%), 0.0 URLs/s, elapsed 0s, ETA ?",
        "progress download: 10/10 URLs (100.0%), 0.5 URLs/s, elapsed 8s, done",
    ]


def test_a_long_eta_reads_in_hours_and_a_detail_is_appended():
    clock, out = Clock(), io.StringIO()
    rejected = {"n": 0}
    progress = Progress(
        "resize",
        100_000,
        interval_s=60,
        out=out,
        clock=clock,
        detail=lambda: f"{rejected['n']} rejected",
    )
    clock.now += 60
    rejected["n"] = 3
    progress.advance(600)  # 10 img/s: 99,400 left -> 2 h 45 m
    assert out.getvalue().splitlines()[-1] == (
        "progress resize: 600/100000 images (0.6%), 10.0 img/s, elapsed 1m00s, ETA 2h45m; "
        "3 rejected"
    )


def test_resize_shard_logs_its_progress(tmp_path, capsys):
    sources = []
    for i in range(5):
        path = tmp_path / f"{i}.jpg"
        path.write_bytes(jpeg_bytes(80, 60, seed=i))
        sources.append(str(path))
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    sources.append(str(tmp_path / "bad.jpg"))
    params = ResizeParams.from_config({**section_config("resize"), "size": 32})
    resize_shard(sources, params, tmp_path / "o.tar", tmp_path / "o.tsv", tmp_path / "r.tsv")
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("progress")]
    assert lines[0].startswith("progress resize: 0/6 images (0.0%)")
    assert re.match(
        r"progress resize: 6/6 images \(100\.0%\), [\d.]+ img/s, elapsed \d+s, done; 1 rejected$",
        lines[-1],
    )


def _log(path, lines, age_s=0.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))


def test_job_states_finds_running_stalled_finished_and_failed_jobs(tmp_path):
    logs = tmp_path / "logs"
    start = "rule {} wildcards {{'split': 'train'}} threads 8 started 1796155789.679"
    _log(
        logs / "resize/train/00000.log",
        [
            start.format("resize_shard"),
            "progress resize: 0/9 images (0.0%)",
            "elapsed 1.2 s ended 1796155790.9",
        ],
    )
    _log(
        logs / "resize/train/00001.log",
        [
            start.format("resize_shard"),
            "progress resize: 0/1251 images (0.0%), 0.0 img/s, elapsed 0s, ETA ?",
            "progress resize: 412/1251 images (32.9%), 38.2 img/s, elapsed 10s, ETA 22s; 0 rej",
        ],
        age_s=2,
    )
    _log(
        logs / "ravel/train/00000.log",
        [start.format("ravel_shard"), "progress ravel: 3/1251 images (0.2%)"],
        age_s=3600,
    )
    _log(
        logs / "records/x.log",
        [
            start.format("records_shard"),
            "Traceback (most recent call last):",
            "ValueError: bad",
            "elapsed 0.3 s ended 1796155790.9",
        ],
    )
    _log(logs / "other/not-a-job.log", ["something else"])
    states = job_states(logs)
    assert states["finished"] == {"resize_shard": 1}
    assert states["failed"] == {"records_shard": 1}
    running = {
        os.path.relpath(path, logs): (last, changed) for path, last, changed in states["running"]
    }
    assert set(running) == {"resize/train/00001.log", "ravel/train/00000.log"}
    assert running["resize/train/00001.log"][0].startswith("progress resize: 412/1251")
    text = describe_states(states, stalled_after_s=300)
    assert re.search(r"^running .*00001\.log: resize: 412/1251 images .*ETA 22s", text, re.M)
    assert re.search(r"^stalled or killed .*ravel/train/00000\.log: ravel: 3/1251", text, re.M)
    assert "finished jobs: resize_shard 1" in text
    assert "failed jobs (their logs end in a traceback): records_shard 1" in text


def test_the_progress_command_reads_a_logs_folder(tmp_path):
    logs = tmp_path / "logs"
    _log(
        logs / "embed/a.log",
        [
            "rule embed_shard wildcards {} threads 4 started 1.0",
            "progress embed: 64/100 images (64.0%), 8.0 img/s, elapsed 8s, ETA 4s",
        ],
    )
    command = [sys.executable, "-m", "imgprep", "progress"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "scripts")}
    proc = subprocess.run(
        [*command, str(logs)], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "running" in proc.stdout and "embed: 64/100 images" in proc.stdout
    missing = subprocess.run(
        [*command, str(tmp_path / "none")], capture_output=True, text=True, env=env, timeout=60
    )
    assert missing.returncode == 1 and "no logs folder" in missing.stdout


def test_stage_totals_sum_the_benchmark_files(tmp_path):
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    paths = []
    for i, (seconds, rss, cpu) in enumerate(
        [(2.0, 100.5, 1.5), (6.0, 300.25, 5.0), (4.0, "-", "-")]
    ):
        path = tmp_path / f"{i}.tsv"
        path.write_text(
            header + f"{seconds}\t0:00:0{int(seconds)}\t{rss}\t1\t1\t1\t0\t0\t0\t{cpu}\n"
        )
        paths.append(path)
    assert read_benchmark(paths[2])["max_rss"] != read_benchmark(paths[2])["max_rss"]  # NaN
    missing = tmp_path / "a build from before the rule had a benchmark.tsv"
    rows = stage_totals(
        {"resize": paths, "verify dlbs": paths[:1], "records dlbs": [missing, paths[0]]},
        {"resize": 120, "verify dlbs": 40, "records dlbs": 40},
    )
    assert rows[0] == {
        "stage": "resize",
        "jobs": 3,
        "measured": 3,
        "images": 120,
        "wall_s": 12.0,
        "cpu_s": 6.5,
        "img_per_s": 10.0,
        "slowest_job_s": 6.0,
        "max_rss_mb": 300.2,
    }
    assert rows[1]["img_per_s"] == 20.0
    # one of two jobs measured: its half of the images in its 2 s
    assert (rows[2]["jobs"], rows[2]["measured"], rows[2]["img_per_s"]) == (2, 1, 10.0)
    write_stage_totals(rows, tmp_path / "stages.tsv")
    table = (tmp_path / "stages.tsv").read_text().splitlines()
    assert table[0].split("\t")[:4] == ["stage", "jobs", "measured", "images"]
    assert table[1].split("\t")[:5] == ["resize", "3", "3", "120", "12.0"]


def test_format_of_a_duration():
    from imgprep.progress import format_duration

    assert [format_duration(s) for s in (0, 59.4, 60, 245, 3599, 3600, 7620)] == [
        "0s",
        "59s",
        "1m00s",
        "4m05s",
        "59m59s",
        "1h00m",
        "2h07m",
    ]
