"""Whole-workflow throughput at --cores 2 against the bare library loop, side by side.

Both build the same imagenet-schema shards from the same ImageNet-like photos (crops of
the embedded sample, ~500x375, JPEG q90): once by calling the imgprep package in one
process (index, resize with a pool of 2, records, split tables, verify, summary), once by
`snakemake --cores 2`.
The shards must come out byte-identical; the ratio of wall times is Snakemake's overhead
(job start-up, imports per job, scheduling). Target (issue 2): < 15 %.

It runs at N and 2N images and reports both the plain ratio at each size and the
steady-state ratio over the extra N images, which separates the per-shard overhead (what
matters for ImageNet's 1152 shards) from the fixed cost of one `snakemake` call (start-up,
Snakemake's 1 s exit timer, the TensorFlow import of verification).

    .venv/bin/python benchmarks/bench_workflow.py [--images 5000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "benchmarks"))

from imgprep.config import validate_config  # noqa: E402

SHARD_SIZE = 1250  # images per shard, as ImageNet's 1.28M over 1024 shards


def make_photos(root: Path, count: int) -> None:
    """ImageNet-like JPEGs (bench_resize's shape mix and photos); made once and reused."""
    from bench_resize import build_photos

    marker = root / f".complete-{count}"
    if marker.exists():
        return
    shutil.rmtree(root, ignore_errors=True)
    classes = sorted(p.name for p in (REPO / "resources" / "sample" / "train").iterdir())
    photos, _ = build_photos(count, seed=1)
    for i, data in enumerate(photos):
        split = "validation" if i % 10 == 0 else "train"
        cls = classes[i % len(classes)]
        out = root / split / cls / f"{cls}_{i}.JPEG"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
    marker.write_text("ok")


def bench_config(photos: Path, results: Path, count: int) -> dict:
    train = max(1, round(count * 0.9 / SHARD_SIZE))
    validation = max(1, round(count * 0.1 / SHARD_SIZE))
    return {
        "results": str(results),
        "source": {"root": str(photos)},
        "labels": {"base": 1},
        "splits": {"train": {"shards": train}, "validation": {"shards": validation}},
        "records": {"schemas": ["imagenet"]},
        # single-process resize jobs: two run at once and hide each other's start-up
        "threads": {"resize": 1, "records": 1, "verify": 2},
    }


def bare_loop(config: dict) -> float:
    """The library called directly: what the workflow does, minus Snakemake."""
    from imgprep.index import (
        ignored_path,
        labels_path,
        read_shard_index,
        shard_index_path,
        update_index,
        write_split_table,
    )
    from imgprep.kernels.resize import ResizeParams
    from imgprep.stages.records import write_shard
    from imgprep.stages.resize import resize_shard
    from imgprep.stages.summary import write_summary
    from imgprep.stages.verify import verify_shards

    started = time.perf_counter()
    config = validate_config(config)
    results = Path(config["results"])
    update_index(config)
    params = ResizeParams.from_config(config["resize"])
    shards = []
    for split, spec in config["splits"].items():
        for i in range(spec["shards"]):
            index = shard_index_path(results, split, i)
            stem = results / "resized" / split / f"{i:05d}"
            rejects = results / "rejects" / split / f"{i:05d}.tsv"
            paths = list(read_shard_index(index)["path"])
            resize_shard(paths, params, f"{stem}.tar", f"{stem}.meta.tsv", rejects, threads=2)
            record = results / "records" / "imagenet" / f"{split}-{i:05d}-of-{spec['shards']:05d}"
            write_shard(
                "imagenet",
                index,
                labels_path(results),
                f"{stem}.meta.tsv",
                f"{stem}.tar",
                record,
                label_base=1,
            )
            shards.append({"split": split, "record": record, "index": index, "rejects": rejects})
    for split, spec in config["splits"].items():
        indexes = [shard_index_path(results, split, i) for i in range(spec["shards"])]
        write_split_table(indexes, labels_path(results), results / "index" / f"{split}.tsv")
    verified = verify_shards("imagenet", shards, labels_path(results), label_base=1, threads=2)
    report = {"schema": "imagenet", "splits": {}}
    for shard, result in zip(shards, verified, strict=True):
        report["splits"].setdefault(shard["split"], []).append(result)
    (results / "verify").mkdir()
    (results / "verify" / "imagenet.json").write_text(json.dumps(report))
    write_summary(
        verified=[results / "verify" / "imagenet.json"],
        tables=[results / "index" / f"{split}.tsv" for split in config["splits"]],
        rejects=[shard["rejects"] for shard in shards],
        ignored=ignored_path(results),
        json_path=results / "summary.json",
        tsv_path=results / "summary.tsv",
        rejects_path=results / "rejects.tsv",
    )
    return time.perf_counter() - started


def record_hashes(results: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((results / "records" / "imagenet").iterdir())
    }


def run_both(work: Path, count: int) -> dict:
    """Bare loop and workflow on the same ``count`` photos; both must write the same shards."""
    photos = work / f"photos-{count}"
    make_photos(photos, count)
    for path in photos.rglob("*.JPEG"):  # same warm page cache for both contenders
        path.read_bytes()
    bare_results = work / "bare" / "results"
    shutil.rmtree(bare_results.parent, ignore_errors=True)
    config = json.dumps(bench_config(photos, bare_results, count))
    bare = subprocess.run(
        [sys.executable, __file__, "--bare", config], check=True, capture_output=True, text=True
    )
    bare_seconds = float(bare.stdout.strip().splitlines()[-1])

    flow = work / "flow"
    shutil.rmtree(flow, ignore_errors=True)
    flow.mkdir(parents=True)
    config = bench_config(photos, flow / "results", count)
    (flow / "config.yaml").write_text(json.dumps(config))
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(flow),
         "--cores", "2", "--quiet"],
        check=True, capture_output=True,
    )  # fmt: skip
    flow_seconds = time.perf_counter() - started
    return {
        "images": count,
        "shards": sum(s["shards"] for s in config["splits"].values()),
        "bare_seconds": bare_seconds,
        "workflow_seconds": flow_seconds,
        "overhead": flow_seconds / bare_seconds - 1,
        "identical_shards": record_hashes(bare_results) == record_hashes(flow / "results"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/imgprep-bench-workflow"))
    args = parser.parse_args()
    if args.images < 2000:
        raise SystemExit("use at least 2000 images")
    runs = [run_both(args.work, args.images), run_both(args.work, 2 * args.images)]
    small, large = runs
    extra = large["images"] - small["images"]
    bare_rate = extra / (large["bare_seconds"] - small["bare_seconds"])
    flow_rate = extra / (large["workflow_seconds"] - small["workflow_seconds"])
    marginal = bare_rate / flow_rate - 1
    # what one snakemake call costs on top, whatever its size
    fixed = (small["workflow_seconds"] - small["bare_seconds"]) - small["images"] * (
        1 / flow_rate - 1 / bare_rate
    )
    print(f"{'images':>7} {'shards':>6} {'bare s':>8} {'workflow s':>11} {'overhead':>9} identical")
    for run in runs:
        print(
            f"{run['images']:7d} {run['shards']:6d} {run['bare_seconds']:8.2f} "
            f"{run['workflow_seconds']:11.2f} {run['overhead']:+9.1%} {run['identical_shards']}"
        )
    print(
        f"steady state (the extra {extra} images): bare {bare_rate:.0f} img/s, "
        f"workflow {flow_rate:.0f} img/s, overhead {marginal:+.1%} (target < 15 %); "
        f"fixed overhead of one snakemake call ~{fixed:.1f} s"
    )
    report = {"runs": runs, "marginal_overhead": marginal, "fixed_seconds": fixed}
    out = REPO / "benchmarks" / "out"
    out.mkdir(exist_ok=True)
    (out / "workflow.json").write_text(json.dumps(report, indent=1) + "\n")
    if not all(run["identical_shards"] for run in runs):
        raise SystemExit("FAILED: the workflow and the bare loop wrote different shards")
    if marginal > 0.15:
        raise SystemExit(f"FAILED: steady-state overhead {marginal:.1%} is above 15 %")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--bare":
        print(bare_loop(json.loads(sys.argv[2])))
    else:
        main()
