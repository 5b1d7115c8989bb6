"""`snakemake -n` over an ImageNet-sized source (1.33M synthetic files, no pixels).

Targets (issue 2): < 15 s and < 1 GB RAM, never above 60 s / 2 GB; issue 15: warm and
touched <= 4 s, <= 20,000 stat calls. Runs, side by side:
  cold       first dry-run: scans the tree and writes 1024 + 128 shard lists
  warm       dry-run after a finished build (`--touch`): nothing to do
  rewritten  one image's mtime changed in place: the scan cache misses it (0 jobs),
             `source: {rescan: true}` sees it (its shard's resize job)
  touched    one image added (its folder's mtime changes): only its shard's jobs
and compares each with two floors: `snakemake --version` (interpreter + Snakemake start-up)
and "Snakemake alone": a generated workflow with the same jobs, the same files per job and
the same edges as the cold run's (one rule per imgprep rule, each job's inputs from a
table, `touch` as its command, no imgprep code), after its own finished build -- what
Snakemake needs to plan this DAG whatever the workflow does. The stat-family syscalls
(strace's class %%stat) of warm and touched, and of the floor, are counted with
`strace -f`, split into those on the source tree (imgprep's scan) and the rest.

--datasets (issue 13): the warm dry-run of a config of 4 datasets (`datasets:` tpu,
downsampled 64, tangler, and a 10 % per-class train subset with a minival holdout carved
from it) against a config of 1 (tpu), each after its own cold run and finished build.
Target: 4 datasets <= 1.3 x 1 dataset.

A finished build is faked: every output the cold dry-run plans becomes an empty file,
then `--touch` puts their mtimes in order (the layout is the rules' own, so it cannot
drift from them). The tree is made once per size and reused; --small (20,000 files: 100
classes of 190 + 10) is for development.

    .venv/bin/python benchmarks/bench_dryrun.py [--root DIR] [--small] [--datasets]
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
# classes, train and validation images per class
FULL = (1000, 1281, 50)  # 1,281,000 + 50,000
SMALL = (100, 190, 10)  # 20,000
SPLITS = {"train": 1024, "validation": 128}  # shards, as ImageNet's
TOUCHED = ("train", 7, 7)  # the image `touched` touches: split, class, number


def make_tree(root: Path, size: tuple[int, int, int]) -> int:
    """Empty files named like ImageNet's; created once and reused."""
    marker = root / ".complete"
    if marker.exists():
        return int(marker.read_text())
    classes, train_per_class, val_per_class = size
    count = 0
    for c in range(classes):
        wnid = f"n{c:08d}"
        for split, per_class in (("train", train_per_class), ("validation", val_per_class)):
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


def planned_outputs(dryrun_output: str) -> list[Path]:
    """Every output a dry-run's job listing names (its `output:` lines)."""
    paths = []
    for match in re.finditer(r"^\s+output: (.+)$", dryrun_output, re.M):
        paths += [Path(path) for path in match.group(1).split(", ")]
    return paths


def fake_outputs(work: Path, paths: list[Path]) -> dict[str, int]:
    """Empty stand-ins for the outputs of a finished build; files per top folder."""
    folders: dict[str, int] = {}
    for path in paths:
        path = work / path  # absolute paths stay as they are
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        top = "/".join(path.relative_to(work / "results").parts[:-1][:2]) or "."
        folders[top] = folders.get(top, 0) + 1
    return folders


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


def source_config(root: Path) -> dict:
    return {
        "results": "results",
        "source": {"root": str(root), "layout": "split-folders"},
        "splits": {split: {"shards": n} for split, n in SPLITS.items()},
    }


def dataset_configs(root: Path) -> dict[str, dict]:
    """The 1-dataset and the 4-dataset configuration of --datasets."""
    tpu = {"preset": "tpu"}
    four = {
        "imagenet": tpu,
        "small64": {"preset": "downsampled", "resize": {"size": 64}},
        "tangler": {"preset": "tangler"},
        "subset10": {
            "preset": "tpu",
            "splits": {
                "train": {"fraction": 0.10, "per_class": True, "shards": 128},
                "minival": {"from": "train", "holdout": True, "count": 10, "shards": 1},
                "validation": {"shards": 128},
            },
        },
    }
    return {
        "1 dataset": {**source_config(root), "datasets": {"imagenet": tpu}},
        "4 datasets": {**source_config(root), "datasets": four},
    }


def dryrun_jobs(dryrun_output: str) -> list[dict]:
    """The jobs of a dry-run's listing: rule, inputs, outputs, logs, benchmark."""
    jobs = []
    blocks = re.split(r"^(?:local)?rule (\w+):$", dryrun_output, flags=re.M)
    for name, block in zip(blocks[1::2], blocks[2::2], strict=True):
        job = {"rule": name}
        for key in ("input", "output", "log", "benchmark"):
            found = re.search(rf"^\s+{key}: (.+)$", block, re.M)
            job[key] = found.group(1).split(", ") if found else []
        jobs.append(job)
    return jobs


def mirror_workflow(folder: Path, jobs: list[dict]) -> int:
    """The "Snakemake alone" floor: per imgprep rule a rule with the same number of
    outputs, logs and benchmark per job, outputs named mirror/<rule>/<job>.<k>, inputs
    from a table (the same edges, renamed; source files kept as they are and created
    empty); a finished build of it (empty outputs, then --touch). Returns its jobs."""
    renamed, rules = {}, {}
    for job in jobs:
        if job["rule"] == "all":
            continue
        shape = rules.setdefault(job["rule"], {"jobs": 0})
        i = shape["jobs"]
        shape["jobs"] += 1
        for key in ("output", "log", "benchmark"):
            shape[key] = max(shape.get(key, 0), len(job[key]))
        for k, path in enumerate(job["output"]):
            renamed[path] = f"mirror/{job['rule']}/{i}.{k}"
    inputs = {name: [] for name in rules}
    targets = []
    for job in jobs:
        mapped = [renamed.get(path, path) for path in job["input"]]
        (targets if job["rule"] == "all" else inputs[job["rule"]]).append(mapped)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in ("mirror", ".snakemake"):
        subprocess.run(["rm", "-rf", str(folder / stale)], check=True)
    (folder / "inputs.json").write_text(json.dumps(inputs))
    text = ["import json", 'INPUTS = json.load(open("inputs.json"))', ""]
    text += ["rule all:", f"    input: {json.dumps(targets[0] if targets else [])}", ""]
    for name, shape in rules.items():
        where = f"mirror/{name}/{{i}}"
        text += [f"rule {name}:", f'    input: lambda w: INPUTS["{name}"][int(w.i)]']
        text += [f"    output: {', '.join(repr(f'{where}.{k}') for k in range(shape['output']))}"]
        if shape["log"]:
            text += [f"    log: {', '.join(repr(f'{where}.log{k}') for k in range(shape['log']))}"]
        if shape["benchmark"]:
            text += [f"    benchmark: {f'{where}.bench'!r}"]
        text += ['    wildcard_constraints: i=r"\\d+"', '    shell: "touch {output}"', ""]
    (folder / "Snakefile").write_text("\n".join(text))
    for listed in inputs.values():
        for paths in listed:
            for path in paths:
                if not path.startswith("mirror/"):
                    (folder / path).parent.mkdir(parents=True, exist_ok=True)
                    (folder / path).touch()
    for name, shape in rules.items():
        (folder / "mirror" / name).mkdir(parents=True, exist_ok=True)
        for i in range(shape["jobs"]):
            for k in range(shape["output"]):
                (folder / f"mirror/{name}/{i}.{k}").touch()
    timed(SNAKEMAKE + ["-d", str(folder), "--touch", "--cores", "1", "--quiet"], folder)
    return len(jobs)


ALONE = "floor (Snakemake alone, same DAG)"


def best_alternating(runs: dict, commands, rounds: int) -> None:
    """Time each (name, command, cwd) in turn, ``rounds`` times, keeping each one's
    fastest run in ``runs``: the machine is shared, and alternating loads both alike."""
    for _ in range(rounds):
        for name, cmd, cwd in commands:
            run = timed(cmd, cwd)
            if name not in runs or run["seconds"] < runs[name]["seconds"]:
                runs[name] = run


def against_alone(report: dict, planned: int, failures: list[str]) -> None:
    """Warm against the "Snakemake alone" floor: the ratio and imgprep's share, printed
    and kept in ``report``; a floor whose finished build still plans jobs is a failure."""
    warm, alone = report["warm"]["seconds"], report[ALONE]["seconds"]
    report["warm_to_snakemake_alone"] = warm / alone
    print(
        f"warm / Snakemake alone ({planned} jobs planned, the same DAG): {warm / alone:.2f}; "
        f"imgprep's share {warm - alone:.2f} s"
    )
    if report[ALONE]["jobs"]:
        failures.append(f"Snakemake alone: its finished build still has {report[ALONE]['jobs']}")


def finished_build(work: Path, config: dict) -> tuple[list[str], dict, dict[str, int]]:
    """A fresh folder, its cold dry-run, then a faked finished build; (command, cold run,
    fake outputs per folder)."""
    work.mkdir(parents=True, exist_ok=True)
    for stale in (work / "results", work / ".snakemake"):
        if stale.exists():
            subprocess.run(["rm", "-rf", str(stale)], check=True)
    configfile = work / "config.yaml"
    configfile.write_text(json.dumps(config))
    base = SNAKEMAKE + ["-s", str(REPO / "Snakefile"), "-d", str(work)]
    base += ["--configfile", str(configfile)]
    cold = timed(base + ["-n"], REPO)
    # pretend the build finished: empty outputs, then --touch puts their mtimes in order
    folders = fake_outputs(work, planned_outputs(cold["output"]))
    timed(base + ["--touch", "--cores", "1", "--quiet"], REPO)
    return base, cold, folders


def print_runs(runs: dict, floor: float) -> dict:
    print(f"\n{'run':34} {'seconds':>8} {'x floor':>8} {'peak RSS MB':>12}  jobs")
    report = {}
    for name, run in runs.items():
        jobs = job_counts(run["output"])
        scan = re.search(r"imgprep index: .*", run["output"])
        print(
            f"{name:34} {run['seconds']:8.2f} {run['seconds'] / floor:8.1f} "
            f"{run['max_rss_mb']:12.0f}  {jobs.get('total', '')}"
        )
        if scan:
            print(f"{'':34} {scan.group(0)}")
        report[name] = {"seconds": run["seconds"], "max_rss_mb": run["max_rss_mb"], "jobs": jobs}
    return report


def limits(report: dict, names, failures: list[str]) -> None:
    for name in names:
        if report[name]["seconds"] > 60 or report[name]["max_rss_mb"] > 2048:
            failures.append(f"{name}: above the 60 s / 2 GB limit")
        elif report[name]["seconds"] > 15 or report[name]["max_rss_mb"] > 1024:
            print(f"warning: {name} misses the 15 s / 1 GB target")


def stat_calls(cmd, cwd, root: Path, work: Path) -> dict:
    """Stat-family syscalls of a run (strace -f, the %%stat class: stat, lstat, newfstatat,
    statx, fstat...): on paths under the source ``root`` (imgprep's scan), in the working
    folder ``work`` (relative paths too: Snakemake's inputs and outputs, the index files)
    and the rest (Python's imports, fstat of open files)."""
    log = Path(f"/tmp/bench-dryrun-strace.{os.getpid()}")
    strace = ["strace", "-f", "-qq", "-e", "trace=%%stat", "-o", str(log)]
    counts = {"scan": 0, "workdir": 0, "other": 0}
    under = {"scan": f"{root}/", "workdir": f"{work}/"}
    try:
        subprocess.run(strace + cmd, cwd=cwd, check=True, capture_output=True)
        with open(log, errors="replace") as handle:
            for line in handle:
                if "resumed>" in line:
                    continue
                path = re.search(r'"([^"]*)"', line)
                where = "other"
                if path and path.group(1) and not path.group(1).startswith("/"):
                    where = "workdir"  # Snakemake runs in the working folder (-d)
                for name, prefix in under.items():
                    if path and (path.group(1) + "/").startswith(prefix):
                        where = name
                counts[where] += 1
    finally:
        log.unlink(missing_ok=True)
    return {**counts, "total": sum(counts.values())}


def image_path(root: Path, split: str, c: int, i: int) -> Path:
    name = f"n{c:08d}"
    return root / split / name / f"{name}_{i}.JPEG"


def bench_single(root: Path, work: Path, floor_run: dict) -> tuple[dict, list[str]]:
    """cold, warm, rewritten in place (missed; seen with source.rescan), touched (an image
    added) of one imagenet-schema dataset, with the stat calls of warm and touched."""
    config = {**source_config(root), "records": {"schemas": ["imagenet"]}}
    base, cold, _ = finished_build(work, config)
    rescan_file = work / "rescan.yaml"
    rescan_file.write_text(json.dumps({"source": {"rescan": True}}))
    rescan = base[:-1] + [base[-1], str(rescan_file)]  # --configfile config.yaml rescan.yaml
    runs = {"floor (snakemake --version)": floor_run, "cold": cold}
    mirror = work.with_name(work.name + "-mirror")
    planned = mirror_workflow(mirror, dryrun_jobs(cold["output"]))
    pair = ((ALONE, SNAKEMAKE + ["-n"], mirror), ("warm", base + ["-n"], REPO))
    best_alternating(runs, pair, 3)  # the two are compared as a ratio
    stats = {"warm": stat_calls(base + ["-n"], REPO, root, work)}
    stats[ALONE] = stat_calls(SNAKEMAKE + ["-n"], mirror, root, mirror)
    split, c, i = TOUCHED
    rewritten = image_path(root, split, c + 1, i)
    os.utime(rewritten)  # in place: its folder's mtime stays
    runs["rewritten in place"] = timed(base + ["-n"], REPO)
    runs["rewritten, source.rescan"] = timed(rescan + ["-n"], REPO)
    timed(base + ["--touch", "--cores", "1", "--quiet"], REPO)  # the build, finished again
    added = [image_path(root, split, c, 10_000), image_path(root, split, c + 2, 10_000)]
    try:
        added[0].touch()
        runs["touched (image added)"] = timed(base + ["-n"], REPO)
        added[1].touch()  # another folder: the counted run sees a change too
        stats["touched (image added)"] = stat_calls(base + ["-n"], REPO, root, work)
    finally:
        for path in added:
            path.unlink(missing_ok=True)
    report = print_runs(runs, floor_run["seconds"])
    failures: list[str] = []
    against_alone(report, planned, failures)
    for name, count in stats.items():
        report[name]["stat_calls"] = count
        print(
            f"{name:34} stat calls: {count['scan']} scan (source tree) + "
            f"{count['workdir']} working folder (Snakemake's files, index) + "
            f"{count['other']} other (imports...)"
        )
    expected = {
        "warm": None,
        "rewritten in place": None,  # the documented miss of the scan cache
        "rewritten, source.rescan": 1,
        "touched (image added)": 1,
    }
    for name, resize_jobs in expected.items():
        jobs = report[name]["jobs"]
        if jobs.get("resize_shard") != resize_jobs:
            failures.append(f"{name}: {jobs.get('resize_shard')} resize jobs, not {resize_jobs}")
    for name, count in stats.items():
        if name != ALONE and count["total"] > 20_000:
            failures.append(f"{name}: {count['total']} stat calls (target 20,000)")
    for name in ("warm", "touched (image added)"):
        if report[name]["seconds"] > 4 or report[name]["max_rss_mb"] > 1024:
            print(f"warning: {name} misses the 4 s / 1 GB target")
    limits(report, ("cold", "warm", "touched (image added)"), failures)
    return report, failures


def bench_datasets(root: Path, work: Path, floor_run: dict) -> tuple[dict, list[str]]:
    """Warm dry-runs of 1 and of 4 datasets, best of two each (alternating)."""
    runs = {"floor (snakemake --version)": floor_run}
    commands = {}
    for label, config in dataset_configs(root).items():
        folder = work.with_name(f"{work.name}-{label.replace(' ', '')}")
        commands[label], runs[f"cold, {label}"], folders = finished_build(folder, config)
        layout = ", ".join(f"{top} {n}" for top, n in sorted(folders.items()))
        print(f"{label}: fake outputs per folder under results/: {layout}")
    warm = [(f"warm, {label}", base + ["-n"], REPO) for label, base in commands.items()]
    best_alternating(runs, warm, 2)
    report = print_runs(runs, floor_run["seconds"])
    failures = []
    for label in commands:
        if report[f"warm, {label}"]["jobs"]:
            jobs = report[f"warm, {label}"]["jobs"]
            failures.append(f"{label}: after a finished build, a dry-run still has {jobs}")
    one, four = (report[f"warm, {label}"]["seconds"] for label in commands)
    ratio = four / one
    report["ratio_4_to_1"] = ratio
    verdict = "meets" if ratio <= 1.3 else "MISSES"
    print(f"warm dry-run, 4 datasets / 1 dataset: {ratio:.2f} ({verdict} the target <= 1.3)")
    if ratio > 1.3:
        failures.append(f"4 datasets take {ratio:.2f} x the warm dry-run of 1 (target 1.3)")
    limits(report, [name for name in runs if not name.startswith("floor")], failures)
    return report, failures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--root", type=Path, help="the synthetic tree (default: by size)")
    parser.add_argument("--small", action="store_true", help="20,000 files, for development")
    parser.add_argument("--datasets", action="store_true", help="4 datasets against 1")
    args = parser.parse_args()
    size = SMALL if args.small else FULL
    root = args.root or Path("/tmp/imgprep-bench-imagenet" + ("-small" if args.small else ""))
    started = time.perf_counter()
    images = make_tree(root, size)
    print(f"synthetic source: {images} files under {root} ({time.perf_counter() - started:.0f} s)")
    work = root.with_name(root.name + "-work")
    floor = timed(SNAKEMAKE + ["--version"], REPO)
    bench = bench_datasets if args.datasets else bench_single
    report, failures = bench(root, work, floor)
    report["files"] = images
    out = REPO / "benchmarks" / "out"
    out.mkdir(exist_ok=True)
    name = "dryrun-datasets" if args.datasets else "dryrun"
    (out / f"{name}{'-small' if args.small else ''}.json").write_text(
        json.dumps(report, indent=1) + "\n"
    )
    if failures:
        raise SystemExit("FAILED: " + "; ".join(failures))


if __name__ == "__main__":
    main()
