"""Whole-workflow throughput at --cores 2 against the bare library loop, side by side.

Both build the same imagenet-schema shards from the same ImageNet-like photos (crops of
the embedded sample, ~500x375, JPEG q90): once by calling the imgprep package in one
process (index, resize with a pool of 2, records, split tables, verify, summary), once by
`snakemake --cores 2`.
The shards must come out byte-identical; the ratio of wall times is Snakemake's overhead
(job start-up, imports per job, scheduling). Target (issue 2): < 15 %.

    .venv/bin/python benchmarks/bench_workflow.py [--images 6000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from imgprep.config import validate_config  # noqa: E402

SHARD_SIZE = 1250  # images per shard, as ImageNet's 1.28M over 1024 shards


def make_photos(root: Path, count: int) -> None:
    """ImageNet-like JPEGs cut from the sample's photos; made once and reused."""
    from PIL import Image

    marker = root / f".complete-{count}"
    if marker.exists():
        return
    shutil.rmtree(root, ignore_errors=True)
    sources = sorted(
        p
        for p in (REPO / "resources" / "sample" / "train").glob("*/*.JPEG")
        if Image.open(p).mode == "RGB" and Image.open(p).format == "JPEG"
    )
    rng = random.Random(0)
    for i in range(count):
        src = sources[i % len(sources)]
        image = Image.open(src).convert("RGB")
        w, h = rng.choice([(500, 375), (500, 333), (375, 500), (450, 450), (640, 480)])
        x0 = rng.randint(0, max(0, image.width // 4))
        y0 = rng.randint(0, max(0, image.height // 4))
        crop = image.crop((x0, y0, image.width - x0 // 2, image.height - y0 // 2))
        split = "validation" if i % 10 == 0 else "train"
        cls = src.parent.name
        out = root / split / cls / f"{cls}_{i}.JPEG"
        out.parent.mkdir(parents=True, exist_ok=True)
        crop.resize((w, h), Image.Resampling.BICUBIC).save(out, "JPEG", quality=90)
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
        "threads": {"resize": 2, "records": 1, "verify": 2},
    }


def bare_loop(config: dict) -> float:
    """The library called directly: what the workflow does, minus Snakemake."""
    from imgprep.imaging import ResizeParams
    from imgprep.index import (
        ignored_path,
        labels_path,
        read_shard_index,
        shard_index_path,
        update_index,
        write_split_table,
    )
    from imgprep.records import write_shard
    from imgprep.resize import resize_shard
    from imgprep.summary import write_summary
    from imgprep.verify import verify_shards

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=6000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/imgprep-bench-workflow"))
    args = parser.parse_args()
    if args.images < 2000:
        raise SystemExit("use at least 2000 images")
    photos = args.work / f"photos-{args.images}"
    make_photos(photos, args.images)
    for path in photos.rglob("*.JPEG"):  # same warm page cache for both contenders
        path.read_bytes()

    bare_results = args.work / "bare" / "results"
    shutil.rmtree(bare_results.parent, ignore_errors=True)
    bare = subprocess.run(
        [
            sys.executable,
            __file__,
            "--bare",
            json.dumps(bench_config(photos, bare_results, args.images)),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    bare_seconds = float(bare.stdout.strip().splitlines()[-1])

    flow = args.work / "flow"
    shutil.rmtree(flow, ignore_errors=True)
    flow.mkdir(parents=True)
    config = bench_config(photos, flow / "results", args.images)
    (flow / "config.yaml").write_text(json.dumps(config))
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(flow),
         "--cores", "2", "--quiet"],
        check=True,
    )  # fmt: skip
    flow_seconds = time.perf_counter() - started

    identical = record_hashes(bare_results) == record_hashes(flow / "results")
    overhead = flow_seconds / bare_seconds - 1
    report = {
        "images": args.images,
        "shards": sum(s["shards"] for s in config["splits"].values()),
        "bare_seconds": bare_seconds,
        "workflow_seconds": flow_seconds,
        "bare_images_per_s": args.images / bare_seconds,
        "workflow_images_per_s": args.images / flow_seconds,
        "overhead": overhead,
        "identical_shards": identical,
    }
    print(f"{'':22} {'seconds':>8} {'images/s':>9}")
    print(f"{'bare library loop':22} {bare_seconds:8.2f} {args.images / bare_seconds:9.0f}")
    print(f"{'snakemake --cores 2':22} {flow_seconds:8.2f} {args.images / flow_seconds:9.0f}")
    print(f"overhead {overhead:+.1%} (target < 15 %), shards identical: {identical}")
    out = REPO / "benchmarks" / "out"
    out.mkdir(exist_ok=True)
    (out / "workflow.json").write_text(json.dumps(report, indent=1) + "\n")
    if not identical:
        raise SystemExit("FAILED: the workflow and the bare loop wrote different shards")
    if overhead > 0.15:
        raise SystemExit(f"FAILED: overhead {overhead:.1%} is above 15 %")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--bare":
        print(bare_loop(json.loads(sys.argv[2])))
    else:
        main()
