"""Per-stage totals of a build, from the rules' ``benchmark:`` files: how long each stage
took, how fast it went, how much memory its largest job held.

Kept out of summary.json, which stays byte-identical between identical builds; a stage's
jobs shared with other datasets (one resize for two datasets) count in each of them.
"""

from __future__ import annotations

import math
import os

from imgprep.atomic import atomic_write

__all__ = ["STAGE_TOTAL_COLUMNS", "read_benchmark", "stage_totals", "write_stage_totals"]

STAGE_TOTAL_COLUMNS = (
    "stage",
    "jobs",
    "measured",
    "images",
    "wall_s",
    "cpu_s",
    "img_per_s",
    "slowest_job_s",
    "max_rss_mb",
)


def read_benchmark(path) -> dict:
    """One benchmark file's first run: {"s", "cpu_time", "max_rss"} (NaN where Snakemake
    measured nothing: "-")."""
    with open(path) as handle:
        header = handle.readline().rstrip("\n").split("\t")
        values = handle.readline().rstrip("\n").split("\t")
    row = dict(zip(header, values, strict=False))

    def number(key: str) -> float:
        try:
            return float(row.get(key, "nan"))
        except ValueError:
            return math.nan

    return {"s": number("s"), "cpu_time": number("cpu_time"), "max_rss": number("max_rss")}


def stage_totals(benchmarks: dict, images: dict) -> list[dict]:
    """One row per stage (in ``benchmarks``' order: stage -> benchmark files): its jobs and
    how many of them have a benchmark file (``measured``; a build from before a rule had
    one lacks them), the images it handled (``images``: stage -> count), summed job wall
    and CPU seconds, images per job-second (what one job slot does: the whole run is
    faster by its parallelism; from the measured jobs' share of the images), the slowest
    job and the largest resident memory (MB)."""
    rows = []
    for stage, paths in benchmarks.items():
        runs = [read_benchmark(path) for path in paths if os.path.isfile(path)]
        wall = sum(run["s"] for run in runs if not math.isnan(run["s"]))
        cpu = sum(run["cpu_time"] for run in runs if not math.isnan(run["cpu_time"]))
        rss = [run["max_rss"] for run in runs if not math.isnan(run["max_rss"])]
        count = images.get(stage, 0)
        measured_images = count * len(runs) / len(paths) if paths else 0
        rows.append(
            {
                "stage": stage,
                "jobs": len(paths),
                "measured": len(runs),
                "images": count,
                "wall_s": round(wall, 2),
                "cpu_s": round(cpu, 2),
                "img_per_s": round(measured_images / wall, 1) if wall > 0 else 0.0,
                "slowest_job_s": round(max((run["s"] for run in runs), default=0.0), 2),
                "max_rss_mb": round(max(rss, default=0.0), 1),
            }
        )
    return rows


def write_stage_totals(rows: list[dict], path) -> None:
    with atomic_write(path, "w", newline="") as handle:
        handle.write("\t".join(STAGE_TOTAL_COLUMNS) + "\n")
        for row in rows:
            handle.write("\t".join(str(row[column]) for column in STAGE_TOTAL_COLUMNS) + "\n")
