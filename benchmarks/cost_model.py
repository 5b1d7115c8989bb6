"""What a whole ImageNet costs: per-stage cost per image, measured, times ImageNet's counts.

Runs the workflow itself (`snakemake --cores 1`, one job at a time, so a job's CPU seconds
are its own) twice over bench_resize's photos (ImageNet's shape mix), 2 shards per split,
at two sizes; the stage totals (`results/<dataset>/stages.tsv`: Snakemake's `benchmark:`
CPU seconds per job) of the two give, per stage, a fixed cost per job (process start,
imports, model build) and a cost per image by a straight line through both. Three datasets
in one run: `tpu` (RGB 256 crop, TFRecords), `tangler` (gray 256 + string art at 256 pins,
6000 lines) and `koalarization` (InceptionResNetV2 299 px embeddings, random weights:
the same arithmetic as the ImageNet weights).

The projection: ImageNet's 1,281,167 + 50,000 images in 1024 + 128 shards per stage; each
stage's core-seconds = jobs x fixed + images x per image; wall on C cores = the sum over
stages / C (Snakemake keeps every core busy while shard jobs are ready), and never below
what the source disk allows resize (ImageNet's 147 GB of JPEGs, 110 KB on average, read
once). SLURM adds, per job, the submission rate of the profile (`max-jobs-per-second: 5`)
and a queue wait; with enough nodes submission is the bound.

    .venv/bin/python benchmarks/cost_model.py [--small N] [--large N] [--cores 32 200]
        [--disk-gbps 1.0] [--no-embed]

Prints the per-image table and the projections; writes benchmarks/out/cost_model.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_workflow import make_photos  # noqa: E402

IMAGENET = {"train": (1_281_167, 1024), "validation": (50_000, 128)}
SOURCE_BYTES = (147_897_477_120 + 6_744_924_160) / 1_331_167  # ILSVRC2012 train + val tars
SLURM_SUBMIT_PER_S = 5.0  # profiles/slurm/config.yaml max-jobs-per-second
# Snakemake samples a job's CPU time while it runs: differences under this are noise
RESOLUTION_S = 2.0
# bench_resize.py, RGB 256 centre crop q90, one core (README): the read-bandwidth bound
# when the runs cannot resolve resize's own cost per image
RESIZE_IMG_PER_S = 363.0


def config(photos: Path, results: Path, embed: bool) -> dict:
    # the presets' own shard counts are ImageNet's (1024 + 128): 2 + 2 here
    splits = {"train": {"shards": 2}, "validation": {"shards": 2}}
    datasets = {
        "tpu": {"preset": "tpu", "splits": splits},
        "tangler": {"preset": "tangler", "splits": splits},
    }
    if embed:
        datasets["koalarization"] = {
            "preset": "koalarization",
            "splits": splits,
            "embed": {"weights": None},
        }
    return {
        "results": str(results),
        "source": {"root": str(photos)},
        "splits": {"train": {"shards": 2}, "validation": {"shards": 2}},
        "datasets": datasets,
        # one core per job: CPU seconds per image as a core sees them
        "threads": {"resize": 1, "records": 1, "ravel": 1, "embed": 1, "verify": 1},
        "report": {"shards": 1, "per_shard": 1},
    }


def stage_rows(results: Path) -> dict[tuple[str, str], dict]:
    """(dataset, stage) -> its stages.tsv row."""
    rows = {}
    for table in sorted(results.glob("*/stages.tsv")):
        with open(table, newline="") as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                rows[(table.parent.name, row["stage"])] = row
    return rows


def run(work: Path, count: int, embed: bool) -> dict[tuple[str, str], dict]:
    photos = work / f"photos-{count}"
    make_photos(photos, count)
    flow = work / f"flow-{count}"
    shutil.rmtree(flow, ignore_errors=True)
    flow.mkdir(parents=True)
    (flow / "config.yaml").write_text(json.dumps(config(photos, flow / "results", embed)))
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(flow),
         "--cores", "1", "--quiet"],
        check=True, capture_output=True,
    )  # fmt: skip
    print(f"{count} photos: workflow {time.perf_counter() - started:.0f} s")
    return stage_rows(flow / "results")


def fit(small: dict, large: dict) -> list[dict]:
    """Fixed core-seconds per job and per image, per (dataset, stage), from two runs."""
    costs = []
    for key in sorted(set(small) & set(large)):
        a, b = small[key], large[key]
        images = int(b["images"]) - int(a["images"])
        cpu_a, cpu_b = float(a["cpu_s"]), float(b["cpu_s"])
        per_image = max(0.0, (cpu_b - cpu_a) / images) if images > 0 else 0.0
        fixed = max(0.0, (cpu_a - per_image * int(a["images"])) / int(a["jobs"]))
        costs.append(
            {
                "dataset": key[0],
                "stage": key[1],
                "jobs": int(b["jobs"]),
                "per_image_s": per_image,
                "per_job_s": fixed,
                # the larger run's extra images cost more than the sampling noise
                "resolved": cpu_b - cpu_a >= RESOLUTION_S,
            }
        )
    return costs


def projection(costs: list[dict], cores: int, disk_gbps: float) -> dict:
    images = sum(n for n, _ in IMAGENET.values())
    shards = sum(s for _, s in IMAGENET.values())
    stages = {}
    for cost in costs:
        # verify is one job per dataset and schema; the others one per shard
        jobs = 1 if cost["stage"].startswith("verify") else shards
        stages[f"{cost['dataset']}: {cost['stage']}"] = (
            jobs * cost["per_job_s"] + images * cost["per_image_s"]
        )
    core_s = sum(stages.values())
    compute = core_s / cores
    # resize reads each source once per dataset; its fastest dataset sets the pace
    resize_s = images / RESIZE_IMG_PER_S / cores
    disk = images * SOURCE_BYTES / (disk_gbps * 1e9)
    needed = images * SOURCE_BYTES / resize_s / 1e9
    return {
        "cores": cores,
        "core_hours": core_s / 3600,
        "wall_h_compute": compute / 3600,
        "wall_h_disk_floor": disk / 3600,
        "resize_read_gbps_needed": needed,
        "bound": "disk" if disk > resize_s else "CPU",
        "stages_core_h": {k: v / 3600 for k, v in stages.items()},
    }


def slurm(costs: list[dict], nodes: int, cores_per_node: int, queue_wait_s: float) -> dict:
    per_stage_jobs = sum(s for _, s in IMAGENET.values())
    jobs = sum(1 if c["stage"].startswith("verify") else per_stage_jobs for c in costs)
    compute = projection(costs, nodes * cores_per_node, disk_gbps=math.inf)["wall_h_compute"]
    submit_h = jobs / SLURM_SUBMIT_PER_S / 3600
    return {
        "nodes": nodes,
        "cores": nodes * cores_per_node,
        "jobs": jobs,
        "submission_h": submit_h,
        "wall_h": max(compute, submit_h) + queue_wait_s / 3600,
        "bound": "submission rate" if submit_h > compute else "CPU",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=80, help="photos of the first run")
    parser.add_argument("--large", type=int, default=400, help="photos of the second run")
    parser.add_argument("--cores", type=int, nargs="+", default=[32, 200])
    parser.add_argument("--disk-gbps", type=float, default=1.0, help="source read GB/s")
    parser.add_argument("--no-embed", action="store_true", help="leave koalarization out")
    parser.add_argument("--work", type=Path, default=Path("/tmp/imgprep-cost-model"))
    args = parser.parse_args()
    embed = not args.no_embed
    small = run(args.work, args.small, embed)
    large = run(args.work, args.large, embed)
    costs = fit(small, large)
    print(f"\n{'dataset: stage':38} {'s/image/core':>13} {'s/job':>7}")
    for cost in costs:
        name = f"{cost['dataset']}: {cost['stage']}"
        note = "" if cost["resolved"] else "  (below the runs' resolution)"
        print(f"{name:38} {cost['per_image_s']:13.4f} {cost['per_job_s']:7.2f}{note}")
    report = {"costs": costs, "projections": [], "slurm": []}
    print(f"\nImageNet ({sum(n for n, _ in IMAGENET.values()):,} images), all three datasets:")
    for cores in args.cores:
        p = projection(costs, cores, args.disk_gbps)
        report["projections"].append(p)
        print(
            f"{cores:4} cores: {p['core_hours']:7.0f} core-h -> {p['wall_h_compute']:6.1f} h "
            f"(resize at {RESIZE_IMG_PER_S:.0f} img/s/core reads "
            f"{p['resize_read_gbps_needed']:.2f} GB/s; a {args.disk_gbps} GB/s "
            f"disk alone takes {p['wall_h_disk_floor']:.2f} h; resize is {p['bound']}-bound)"
        )
        for name, hours in p["stages_core_h"].items():
            print(f"      {name:38} {hours:8.1f} core-h")
    for nodes in (8, 50):
        s = slurm(costs, nodes, 32, queue_wait_s=300)
        report["slurm"].append(s)
        print(
            f"SLURM {nodes} nodes x 32 cores: {s['jobs']} jobs, submission "
            f"{s['submission_h']:.2f} h at {SLURM_SUBMIT_PER_S}/s -> {s['wall_h']:.1f} h "
            f"(bound: {s['bound']})"
        )
    out = REPO / "benchmarks" / "out" / "cost_model.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
