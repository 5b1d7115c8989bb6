"""`snakemake -n` over an ImageNet-sized source (1.28M synthetic files, no pixels).

Targets (issue 2): < 15 s and < 1 GB RAM, never above 60 s / 2 GB. Runs, side by side:
  cold     first dry-run: scans the tree and writes 1024 + 128 shard lists
  warm     dry-run after a finished build (`--touch`): nothing to do
  touched  one image touched: only its shard's jobs are outstanding
and compares each with `snakemake --version` (interpreter + Snakemake start-up) as a floor.

    .venv/bin/python benchmarks/bench_dryrun.py [--root /tmp/imagenet-synthetic]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
TRAIN_PER_CLASS, VAL_PER_CLASS, CLASSES = 1281, 50, 1000  # 1,281,000 + 50,000


def make_tree(root: Path) -> int:
    """Empty files named like ImageNet's; created once and reused."""
    marker = root / ".complete"
    if marker.exists():
        return int(marker.read_text())
    count = 0
    for c in range(CLASSES):
        wnid = f"n{c:08d}"
        for split, per_class in (("train", TRAIN_PER_CLASS), ("validation", VAL_PER_CLASS)):
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                name = (
                    f"{wnid}_{i}.JPEG"
                    if split == "train"
                    else f"ILSVRC2012_val_{c:04d}{i:04d}.JPEG"
                )
                with open(folder / name, "wb"):
                    pass
                count += 1
    marker.write_text(str(count))
    return count


def fake_outputs(results: Path, splits: dict[str, int]) -> None:
    """Empty stand-ins for every output of a finished imagenet-schema build."""
    paths = [results / name for name in ("summary.json", "summary.tsv", "rejects.tsv")]
    for split, n in splits.items():
        paths += [results / "index" / f"{split}.tsv", results / "verify/imagenet" / f"{split}.json"]
        for i in range(n):
            shard = f"{i:05d}"
            paths += [
                results / "resized" / split / f"{shard}.tar",
                results / "resized" / split / f"{shard}.meta.tsv",
                results / "rejects" / split / f"{shard}.tsv",
                results / "records" / "imagenet" / f"{split}-{shard}-of-{n:05d}",
            ]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def timed(cmd, cwd) -> dict:
    """Wall time and peak RSS of the child (ru_maxrss of a fresh wait4)."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    out = proc.stdout.read()  # drain first: a full pipe would block the child
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{out[-3000:]}")
    return {"seconds": seconds, "max_rss_mb": usage.ru_maxrss / 1024, "output": out}


def job_counts(output: str) -> dict[str, int]:
    if "Job stats:" not in output:
        return {}
    table = output.split("Job stats:", 1)[-1]
    return {m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s+(\d+)$", table, re.M)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--root", type=Path, default=Path("/tmp/imgprep-bench-imagenet"))
    args = parser.parse_args()
    started = time.perf_counter()
    images = make_tree(args.root)
    print(
        f"synthetic source: {images} files under {args.root} "
        f"({time.perf_counter() - started:.0f} s)"
    )
    work = args.root.with_name(args.root.name + "-work")
    work.mkdir(exist_ok=True)
    config = work / "config.yaml"
    config.write_text(
        json.dumps(
            {
                "results": "results",
                "source": {"root": str(args.root), "layout": "split-folders"},
                "splits": {"train": {"shards": 1024}, "validation": {"shards": 128}},
                "records": {"schemas": ["imagenet"]},
            }
        )
    )
    for stale in (work / "results", work / ".snakemake"):
        if stale.exists():
            subprocess.run(["rm", "-rf", str(stale)], check=True)
    base = SNAKEMAKE + ["-s", str(REPO / "Snakefile"), "-d", str(work), "--configfile", str(config)]
    runs = {"floor (snakemake --version)": timed(SNAKEMAKE + ["--version"], REPO)}
    runs["cold"] = timed(base + ["-n"], REPO)
    # pretend the build finished: empty outputs, then --touch puts their mtimes in order
    fake_outputs(work / "results", {"train": 1024, "validation": 128})
    timed(base + ["--touch", "--cores", "1", "--quiet"], REPO)
    runs["warm"] = timed(base + ["-n"], REPO)
    os.utime(args.root / "train" / "n00000007" / "n00000007_7.JPEG")
    runs["touched"] = timed(base + ["-n"], REPO)

    floor = runs["floor (snakemake --version)"]["seconds"]
    print(f"\n{'run':30} {'seconds':>8} {'x floor':>8} {'peak RSS MB':>12}  jobs")
    report = {}
    for name, run in runs.items():
        jobs = job_counts(run["output"]) if name != "floor (snakemake --version)" else {}
        scan = re.search(r"imgprep index: .*", run["output"])
        print(
            f"{name:30} {run['seconds']:8.2f} {run['seconds'] / floor:8.1f} "
            f"{run['max_rss_mb']:12.0f}  {jobs.get('total', '')}"
        )
        if scan:
            print(f"{'':30} {scan.group(0)}")
        report[name] = {"seconds": run["seconds"], "max_rss_mb": run["max_rss_mb"], "jobs": jobs}
    out = REPO / "benchmarks" / "out"
    out.mkdir(exist_ok=True)
    (out / "dryrun.json").write_text(json.dumps(report, indent=1) + "\n")

    touched = report["touched"]["jobs"]
    failures = []
    if report["warm"]["jobs"]:
        failures.append(f"after a finished build, a dry-run still has {report['warm']['jobs']}")
    if touched.get("resize_shard") != 1:
        failures.append(
            f"touching one image made {touched.get('resize_shard')} resize jobs outstanding"
        )
    for name in ("cold", "warm", "touched"):
        if report[name]["seconds"] > 60 or report[name]["max_rss_mb"] > 2048:
            failures.append(f"{name}: above the 60 s / 2 GB limit")
        elif report[name]["seconds"] > 15 or report[name]["max_rss_mb"] > 1024:
            print(f"warning: {name} misses the 15 s / 1 GB target")
    if failures:
        raise SystemExit("FAILED: " + "; ".join(failures))


if __name__ == "__main__":
    main()
