"""`snakemake -n` over a fall11-sized URL list (14M synthetic `<wnid>_<n><TAB><url>` lines).

Target (issue 15): the warm dry-run <= 5 s and < 1.5 GB peak RSS. Runs, side by side:
  cold     first dry-run: parses the list, writes the shard lists and the parse cache
  warm     dry-run after a finished build (`--touch`): the cache, nothing to do
  appended one line appended to the list: parsed again, one download shard outstanding
and two floors: `snakemake --version` (interpreter + Snakemake start-up) and "Snakemake
alone" (bench_dryrun.mirror_workflow: the cold run's jobs, files and edges with no imgprep
code, after its own finished build), timed alternately with warm. Wall seconds and peak
RSS are bench_dryrun.timed's (ru_maxrss of the child's wait4).

The list is written once (streamed, ~1.2 GB under /tmp) and reused; the appended line is
cut off again at the end. --lines N (e.g. 200000) is for development.

    .venv/bin/python benchmarks/bench_urllist.py [--lines N] [--list FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_dryrun import (  # noqa: E402
    ALONE,
    REPO,
    SNAKEMAKE,
    against_alone,
    best_alternating,
    dryrun_jobs,
    fake_outputs,
    job_counts,
    mirror_workflow,
    planned_outputs,
    timed,
)

FALL11_LINES = 14_197_122  # fall11_urls.txt
WNIDS = 21_841  # its synsets
SPLITS = {"train": (0.98, 1024), "validation": (0.02, 128)}  # fraction, shards


def make_list(path: Path, lines: int) -> None:
    """fall11-like lines (wnid_n, a flickr-style URL of ~70 characters), written once."""
    marker = path.with_name(path.name + ".complete")
    if marker.exists() and marker.read_text() == str(lines):
        return
    per_wnid = -(-lines // WNIDS)
    with open(path, "w") as handle:
        written = 0
        for w in range(WNIDS):
            count = min(per_wnid, lines - written)
            if count <= 0:
                break
            wnid = f"n{w * 4099 % 99999989:08d}"
            handle.write(
                "".join(
                    f"{wnid}_{i}\thttp://farm{i % 9 + 1}.static.flickr.com/"
                    f"{(w * 31 + i) % 9000 + 1000}/{w * 100003 + i * 7919:010d}_"
                    f"{(w * i * 2654435761) % 16**10:010x}.jpg\n"
                    for i in range(count)
                )
            )
            written += count
    marker.write_text(str(lines))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=FALL11_LINES)
    parser.add_argument("--list", type=Path, help="the synthetic list (default: by size)")
    args = parser.parse_args()
    urls = args.list or Path(f"/tmp/imgprep-bench-fall11-{args.lines}.txt")
    started = time.perf_counter()
    make_list(urls, args.lines)
    size = urls.stat().st_size
    print(
        f"synthetic list: {args.lines} lines, {size / 1e9:.2f} GB, {urls} "
        f"({time.perf_counter() - started:.0f} s)"
    )
    work = urls.with_name(urls.stem + "-work")
    for stale in (work / "results", work / ".snakemake"):
        if stale.exists():
            os.system(f"rm -rf '{stale}'")
    work.mkdir(parents=True, exist_ok=True)
    config = {
        "results": "results",
        "source": {"type": "urls", "urls": str(urls)},
        "splits": {name: {"fraction": f, "shards": n} for name, (f, n) in SPLITS.items()},
    }
    configfile = work / "config.yaml"
    configfile.write_text(json.dumps(config))
    base = SNAKEMAKE + [
        "-s",
        str(REPO / "Snakefile"),
        "-d",
        str(work),
        "--configfile",
        str(configfile),
    ]
    runs = {"floor (snakemake --version)": timed(SNAKEMAKE + ["--version"], REPO)}
    runs["cold"] = timed(base + ["-n"], REPO)
    fake_outputs(work, planned_outputs(runs["cold"]["output"]))
    timed(base + ["--touch", "--cores", "1", "--quiet"], REPO)
    mirror = work.with_name(work.name + "-mirror")
    planned = mirror_workflow(mirror, dryrun_jobs(runs["cold"]["output"]))
    best_alternating(runs, ((ALONE, SNAKEMAKE + ["-n"], mirror), ("warm", base + ["-n"], REPO)), 2)
    with open(urls, "a") as handle:
        handle.write("n99999999_1\thttp://farm1.static.flickr.com/1/appended.jpg\n")
    try:
        runs["appended"] = timed(base + ["-n"], REPO)
        runs["appended, again"] = timed(base + ["-n"], REPO)
    finally:
        os.truncate(urls, size)
    floor = runs["floor (snakemake --version)"]["seconds"]
    print(f"\n{'run':34} {'seconds':>8} {'x floor':>8} {'peak RSS MB':>12}  jobs")
    report = {"lines": args.lines}
    for name, run in runs.items():
        jobs = job_counts(run["output"])
        scan = [line for line in run["output"].splitlines() if line.startswith("imgprep index:")]
        print(
            f"{name:34} {run['seconds']:8.2f} {run['seconds'] / floor:8.1f} "
            f"{run['max_rss_mb']:12.0f}  {jobs.get('total', '')}"
        )
        for line in scan:
            print(f"{'':34} {line}")
        report[name] = {"seconds": run["seconds"], "max_rss_mb": run["max_rss_mb"], "jobs": jobs}
    failures: list[str] = []
    against_alone(report, planned, failures)
    if report["warm"]["jobs"]:
        failures.append(f"after a finished build, a dry-run still has {report['warm']['jobs']}")
    if report["appended"]["jobs"].get("download_shard") != 1:
        failures.append(f"one appended URL: {report['appended']['jobs']} outstanding")
    if report["warm"]["seconds"] > 5 or report["warm"]["max_rss_mb"] > 1536:
        failures.append("the warm dry-run misses the 5 s / 1.5 GB target")
    out = REPO / "benchmarks" / "out"
    out.mkdir(exist_ok=True)
    (out / f"urllist-{args.lines}.json").write_text(json.dumps(report, indent=1) + "\n")
    if failures:
        raise SystemExit("FAILED: " + "; ".join(failures))


if __name__ == "__main__":
    main()
