"""Datasets: three consumer-ready datasets in one run against three separate runs.

The same three datasets of the same source, built two ways with `snakemake --cores 2`:

  one run      one config whose `datasets:` holds all three (the source is scanned, and
               for a URL list downloaded, once)
  three runs   three configs of one dataset each, each under its own `results:` folder:
               what users did before issue 13 (three scans, three downloads)

  resnet    preset tpu, the source's small shard counts instead of 1024/128
  small64   preset downsampled (64 px box-filtered whole images, raw pixels)
  tangler   preset tangler with ravel.lines 600 instead of 6000: the string art costs
            the same on both sides and at 6000 lines would be most of both (--full-ravel
            keeps 6000), which says nothing about sharing the rest

Two sources: split-folders (train/validation) of --images synthetic JPEGs (crops of the
embedded sample's photos, 300..500 px a side, grain, q90, the sample's 4 classes; made
once under --root and reused), and the same files as a URL list (source.type urls,
fall11_urls.txt lines) served by a local HTTP server this script starts (127.0.0.1,
random port, --delay per request to stand in for the network, a bounded life; stopped
by its PID at the end). The record files of each dataset must come out byte-identical
both ways. Each run's wall and CPU seconds (Snakemake and every job it ran; the CPU is
less skewed by other work on the machine) and job seconds per rule (Snakemake's
benchmark files) are reported. Target: one run's wall <= 0.75 x the sum of the three.

    .venv/bin/python benchmarks/bench_datasets.py [--images 2000] [--root DIR] [--full-ravel]

Prints a table and writes benchmarks/out/datasets.json; exits 1 if a wall ratio misses
the target or the records differ.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

OUT = REPO / "benchmarks" / "out" / "datasets.json"
TARGET = 0.75
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]


# -- the source ---------------------------------------------------------------------


def make_source(root: Path, count: int) -> list[tuple[str, str, Path]]:
    """``count`` JPEGs under root/<split>/<class>/ (made once); (split, class, path) each."""
    import numpy as np
    from bench_resize import _grain, _sample_photos
    from PIL import Image

    marker = root / f".complete-{count}"
    if not marker.exists():
        shutil.rmtree(root, ignore_errors=True)
        sources = _sample_photos()
        if not sources:
            raise SystemExit("needs the sample photos of resources/sample")
        classes = sorted(p.name for p in (REPO / "resources" / "sample" / "train").iterdir())
        rng = np.random.default_rng(13)
        for i in range(count):
            width, height = (int(v) for v in rng.integers(300, 501, 2))
            source = sources[i % len(sources)]
            sw, sh = source.size
            scale = rng.uniform(0.5, 1.0)
            cw = min(sw, sh * width / height) * scale
            ch = cw * height / width
            x0, y0 = rng.uniform(0, sw - cw), rng.uniform(0, sh - ch)
            image = source.resize(
                (width, height), Image.Resampling.BICUBIC, box=(x0, y0, x0 + cw, y0 + ch)
            )
            pixels = np.asarray(image, np.float32) + _grain(rng, width, height)
            image = Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8))
            split = "validation" if i % 10 == 0 else "train"
            cls = classes[i % len(classes)]
            out = root / split / cls / f"{cls}_{i}.JPEG"
            out.parent.mkdir(parents=True, exist_ok=True)
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=90)
            out.write_bytes(buffer.getvalue())
        marker.write_text("ok")
    files = []
    for path in sorted(root.glob("*/*/*.JPEG")):
        files.append((path.parts[-3], path.parts[-2], path))
    return files


# -- the local "network" ----------------------------------------------------------------


def serve(root: Path, delay: float, life: float) -> None:
    """Serve root's files over HTTP, each after ``delay`` s; print the port; stop after
    ``life`` s (a server whose parent died does not linger)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, format, *args):
            pass

        def do_GET(self):
            time.sleep(delay)
            path = (root / self.path.lstrip("/").split("?")[0]).resolve()
            if root not in path.parents or not path.is_file():
                self.send_error(404)
                return
            body = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    root = root.resolve()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Timer(life, server.shutdown).start()
    print(server.server_address[1], flush=True)
    server.serve_forever()


def start_server(root: Path, delay: float, life: float) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(root), str(delay), str(life)],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    if not line.strip().isdigit():
        proc.kill()
        raise SystemExit("the HTTP server did not start")
    return proc, int(line)


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- configs and runs -----------------------------------------------------------------


def datasets(train: int, validation: int, full_ravel: bool) -> dict:
    tangler = {"preset": "tangler"}
    if not full_ravel:
        tangler["ravel"] = {"lines": 600}
    return {
        "resnet": {
            "preset": "tpu",
            "splits": {"train": {"shards": train}, "validation": {"shards": validation}},
        },
        "small64": {"preset": "downsampled"},
        "tangler": tangler,
    }


def base_config(variant: str, root: Path, urls: Path | None, train: int, validation: int):
    if variant == "folders":
        return {
            "source": {"type": "folders", "root": str(root), "layout": "split-folders"},
            "splits": {
                "train": {"dir": "train", "shards": train},
                "validation": {"dir": "validation", "shards": validation},
            },
        }
    return {
        "source": {"type": "urls", "urls": str(urls)},
        "splits": {
            "train": {"fraction": 0.9, "shards": train},
            "validation": {"fraction": 0.1, "shards": validation},
        },
        "download": {"allow_private": True},
    }


def run_snakemake(folder: Path, config: dict) -> tuple[float, float]:
    """`snakemake --cores 2 --configfile` in a fresh folder; (wall, CPU) seconds.

    CPU: user + system of Snakemake and every job it ran (wait4's rusage of the child
    counts its reaped descendants), less sensitive than the wall to other work on the
    machine."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    configfile = folder / "config.yaml"
    configfile.write_text(json.dumps(config, indent=1))
    cmd = SNAKEMAKE + ["-d", str(folder), "--configfile", str(configfile), "--cores", "2"]
    log = folder / "snakemake.log"
    started = time.perf_counter()
    with open(log, "w") as handle:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"FAILED ({code}): {' '.join(cmd)}\n{log.read_text()[-4000:]}")
    return seconds, usage.ru_utime + usage.ru_stime


def stage_seconds(results: Path) -> dict[str, float]:
    """Job seconds per rule, from the benchmark files Snakemake wrote (if any)."""
    totals: dict[str, float] = {}
    for path in (
        (results / "benchmarks").rglob("*.tsv") if (results / "benchmarks").is_dir() else ()
    ):
        stage = path.relative_to(results / "benchmarks").parts[0]
        with open(path) as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                totals[stage] = totals.get(stage, 0.0) + float(row["s"])
    return {stage: round(s, 1) for stage, s in sorted(totals.items())}


def record_hashes(folder: Path) -> dict[str, str]:
    """sha256 of each record shard under folder (metadata JSON/txt left out)."""
    if not folder.is_dir():
        return {}
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.suffix not in (".json", ".txt", ".idx")
    }


def bench_variant(variant, work, root, files, args) -> dict:
    urls = None
    server = None
    if variant == "urls":
        server, port = start_server(root, args.delay, life=3600)
        urls = work / "urls.txt"
        with open(urls, "w") as handle:
            for i, (_, cls, path) in enumerate(files):
                rel = path.relative_to(root).as_posix()
                handle.write(f"{cls}_{i}\thttp://127.0.0.1:{port}/{rel}\n")
    try:
        named = datasets(args.train_shards, args.validation_shards, args.full_ravel)
        base = base_config(variant, root, urls, args.train_shards, args.validation_shards)
        one = work / variant / "one"
        config = {**base, "results": str(one / "results"), "datasets": named}
        seconds, cpu = {}, {}
        seconds["one run"], cpu["one run"] = run_snakemake(one, config)
        stages = {"one run": stage_seconds(one / "results")}
        identical = {}
        for name, dataset in named.items():
            folder = work / variant / name
            config = {**base, "results": str(folder / "results"), "datasets": {name: dataset}}
            seconds[name], cpu[name] = run_snakemake(folder, config)
            stages[name] = stage_seconds(folder / "results")
            mine = record_hashes(folder / "results" / name / "records")
            shared = record_hashes(one / "results" / name / "records")
            identical[name] = bool(mine) and mine == shared
    finally:
        if server is not None:
            stop_server(server)
    three = sum(seconds[name] for name in named)
    three_cpu = sum(cpu[name] for name in named)
    return {
        "variant": variant,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "three_runs_seconds": three,
        "three_runs_cpu_seconds": three_cpu,
        "ratio": seconds["one run"] / three,
        "cpu_ratio": cpu["one run"] / three_cpu,
        "identical_records": identical,
        "job_seconds": stages,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--root", type=Path, default=Path("/tmp/imgprep-bench-datasets"))
    parser.add_argument("--work", type=Path, help="results folders (default: a temporary one)")
    parser.add_argument("--train-shards", type=int, default=2)
    parser.add_argument("--validation-shards", type=int, default=1)
    parser.add_argument("--delay", type=float, default=0.02, help="seconds per HTTP request")
    parser.add_argument("--full-ravel", action="store_true", help="tangler at 6000 lines")
    parser.add_argument("--variants", default="folders,urls")
    args = parser.parse_args()
    if args.images < 2000:
        print("warning: fewer than 2000 images, a development run")
    started = time.perf_counter()
    source = args.root / f"source-{args.images}"
    files = make_source(source, args.images)
    print(f"{len(files)} JPEGs under {source} ({time.perf_counter() - started:.0f} s)")
    for _, _, path in files:  # the same warm page cache for every run
        path.read_bytes()
    work = args.work or Path(tempfile.mkdtemp(prefix="imgprep-bench-datasets-"))
    try:
        rows = [bench_variant(v, work, source, files, args) for v in args.variants.split(",")]
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)

    names = [name for name in rows[0]["seconds"] if name != "one run"]
    header = f"{'source':<9}{'':5}{'one run':>9}" + "".join(f"{n:>9}" for n in names)
    print(f"\n{header}{'sum of 3':>10}{'ratio':>7}  identical records")
    failures = []
    for row in rows:
        for unit, key, total, ratio in (
            ("wall", "seconds", "three_runs_seconds", "ratio"),
            ("CPU", "cpu_seconds", "three_runs_cpu_seconds", "cpu_ratio"),
        ):
            s = row[key]
            same = ", ".join(n for n, same in row["identical_records"].items() if same)
            print(
                f"{row['variant'] if unit == 'wall' else '':<9}{unit + ' s':<5}"
                f"{s['one run']:>9.1f}"
                + "".join(f"{s[n]:>9.1f}" for n in names)
                + f"{row[total]:>10.1f}{row[ratio]:>7.2f}  {same if unit == 'wall' else ''}"
            )
        verdict = "meets" if row["ratio"] <= TARGET else "MISSES"
        print(f"{'':9}wall ratio {row['ratio']:.2f} {verdict} the target {TARGET}")
        if row["ratio"] > TARGET:
            failures.append(f"{row['variant']}: ratio {row['ratio']:.2f} > {TARGET}")
        if not all(row["identical_records"].values()):
            failures.append(f"{row['variant']}: records differ {row['identical_records']}")
    for row in rows:
        for run, stages in row["job_seconds"].items():
            if stages:
                parts = ", ".join(f"{stage} {s:.0f}" for stage, s in stages.items())
                print(f"job seconds, {row['variant']} {run}: {parts}")
    report = {
        "images": len(files),
        "ravel_lines": 6000 if args.full_ravel else 600,
        "delay_s": args.delay,
        "shards": {"train": args.train_shards, "validation": args.validation_shards},
        "target": TARGET,
        "variants": rows,
    }
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {OUT}")
    if failures:
        print("FAILED: " + "; ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--serve":
        serve(Path(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]))
    else:
        sys.exit(main())
