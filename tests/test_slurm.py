"""The sample workflow on a real SLURM: profiles/slurm, a single-node cluster on this machine.

tools/slurm/start-slurm.sh installs and starts the cluster (root or passwordless sudo; the
test fails without either, as it does when the start fails or finds a SLURM configuration
of the machine's own, which it never overwrites: a skip would leave SLURM untested). The
run must submit its shard jobs to SLURM, which sacct must show as completed, and must write
the same bytes as a local run of the same configuration. The daemons the test started are
stopped after it, unless IMGPREP_KEEP_SLURM=1 (later runs then skip the 2-3 s start).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO, SAMPLE
from imgprep.formats import get_format
from imgprep.slurm import cpus_of_largest_node, job_cpu_limit

TOOLS = REPO / "tools" / "slurm"
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
# the source: train 2 + validation 1 shards. Two datasets: "full" takes the source's lists
# as they are (3 shards), "pair" two classes in its own planned lists (1 + 1 shards), which
# every cluster job must find without a scan: 5 resize, 5 records and 2 verify jobs (each
# ~5-10 s of Python start-up and work on a 2-core machine)
SHARDS = {"train": 2, "validation": 1}
SCHEMAS = ["imagenet"]
DATASETS = {
    "full": {"preset": "tfds"},
    "pair": {
        "preset": "tpu",
        "classes": ["n02123045", "n07920052"],
        "resize": {"size": 64},
        "splits": {"train": {"shards": 1}, "validation": {"shards": 1}},
    },
}
DATASET_SHARDS = 3 + 2
# resize asks for more CPUs than the test node has: the plain profile must still work
THREADS = {"resize": 64, "records": 1, "verify": 1}
# a hung run (a job SLURM never starts, a status poll that never ends) fails, not waits
RUN_LIMIT_S = 600


def can_be_root() -> bool:
    if os.geteuid() == 0:
        return True
    sudo = shutil.which("sudo")
    return bool(sudo) and subprocess.run([sudo, "-n", "true"], capture_output=True).returncode == 0


def started_daemons(start_output: str) -> list[str]:
    """The daemons start-slurm.sh started (not those it found running)."""
    return re.findall(r"^start-slurm: starting (\w+)", start_output, flags=re.MULTILINE)


@pytest.fixture(scope="module")
def cluster():
    if not can_be_root():
        pytest.fail("installing and starting SLURM needs root or passwordless sudo", pytrace=False)
    proc = subprocess.run(
        [str(TOOLS / "start-slurm.sh")], capture_output=True, text=True, timeout=900
    )
    if proc.returncode == 3:  # the machine's own SLURM: the script leaves it alone
        pytest.fail(
            f"{proc.stderr.strip()}; the test runs its own single-node cluster and never "
            "touches another's configuration: run it on a machine without one",
            pytrace=False,
        )
    started = started_daemons(proc.stdout)
    try:
        if proc.returncode != 0:
            pytest.fail(f"tools/slurm/start-slurm.sh failed:\n{proc.stdout}\n{proc.stderr}")
        yield
    finally:
        if started and os.environ.get("IMGPREP_KEEP_SLURM") != "1":
            subprocess.run([str(TOOLS / "stop-slurm.sh"), *started], timeout=300, check=True)


@pytest.fixture(scope="module")
def plugin_path() -> str:
    proc = subprocess.run(
        [str(TOOLS / "install-plugin.sh"), sys.executable],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        pytest.fail(f"tools/slurm/install-plugin.sh failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout.strip().splitlines()[-1]


def workdir(path: Path) -> Path:
    """A copy of the sample with the test's configuration, paths relative to it."""
    path.mkdir(parents=True)
    shutil.copytree(SAMPLE, path / "sample")
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["source"]["root"] = "sample"
    config["labels"]["synsets"] = "sample/synsets.txt"
    config["splits"] = {
        split: {**config["splits"][split], "shards": n} for split, n in SHARDS.items()
    }
    config["records"]["schemas"] = SCHEMAS
    config["datasets"] = DATASETS
    config["threads"] = THREADS
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    return path


def outputs(path: Path) -> dict[str, str]:
    """sha256 of every dataset's record shards and summary."""
    results = path / "results"
    files = [
        *(p for name in DATASETS for p in sorted((results / name / "records").rglob("*"))),
        *(results / name / "summary.json" for name in DATASETS),
    ]
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in files
        if p.is_file()
    }


def megabytes(amount: str) -> float:
    """sacct's ReqMem (4000M, 2G, ...) in MB."""
    number, unit = re.fullmatch(r"([\d.]+)([KMGT]?)", amount).groups()
    return float(number) * {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024**2}[unit]


def profile_memory(rule: str) -> tuple[str, int]:
    """The profile's memory request for a rule at its first attempt: (resource, MB)."""
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    resources = {**profile["default-resources"], **profile["set-resources"].get(rule, {})}
    name = "mem_mb_per_cpu" if "mem_mb_per_cpu" in resources else "mem_mb"
    return name, eval(str(resources[name]), {"attempt": 1})


def sacct_jobs(run_id: str) -> list[dict[str, str]]:
    """The allocations of one Snakemake run (its jobs are all named by its run id)."""
    fields = ["JobID", "JobName", "Comment", "State", "ExitCode", "AllocCPUS", "ReqMem"]
    proc = subprocess.run(
        ["sacct", "-X", "-n", "-P", "--name", run_id, "-S", "now-1days", "-o", ",".join(fields)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [dict(zip(fields, line.split("|"), strict=True)) for line in proc.stdout.splitlines()]


def cancel_jobs_in(path: Path) -> None:
    """Cancel the queued or running jobs whose working directory is ``path``."""
    queue = subprocess.run(["squeue", "-h", "-o", "%i %Z"], capture_output=True, text=True)
    ids = [line.split()[0] for line in queue.stdout.splitlines() if line.endswith(f" {path}")]
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True)


def run_locally(path: Path) -> None:
    local_profile = REPO / "profiles" / "local"
    proc = subprocess.run(
        [*SNAKEMAKE, "-d", str(path), "--profile", str(local_profile), "--cores", "2"],
        capture_output=True,
        text=True,
        timeout=RUN_LIMIT_S,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]


def run_on_slurm(path: Path, plugin_path: str) -> str:
    """Snakemake's output of a run through profiles/slurm, as the README gives it."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [plugin_path, env.get("PYTHONPATH")]))
    command = [
        *SNAKEMAKE,
        "-d",
        str(path),
        "--profile",
        str(REPO / "profiles" / "slurm"),
        # jobs take seconds here, not the minutes the plugin's 40 s first poll is made for
        "--slurm-init-seconds-before-status-checks",
        "3",
    ]
    # timeout(1) sends SIGTERM, then SIGKILL: Snakemake, waiting on pending jobs, may
    # ignore the first, and the second leaves its jobs behind for cancel_jobs_in
    try:
        proc = subprocess.run(
            ["timeout", "-k", "30", str(RUN_LIMIT_S), *command],
            capture_output=True,
            text=True,
            env=env,
            timeout=RUN_LIMIT_S + 60,
        )
    finally:
        cancel_jobs_in(path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"exit {proc.returncode} (124: timed out)\n{output[-6000:]}"
    return output


def test_the_sample_runs_as_slurm_jobs_and_matches_a_local_run(cluster, plugin_path, tmp_path):
    local = workdir(tmp_path / "local")
    run_locally(local)
    remote = workdir(tmp_path / "slurm")
    node_cpus = int(subprocess.check_output(["sinfo", "-h", "-o", "%c"], text=True).split()[0])
    output = run_on_slurm(remote, plugin_path)
    assert f"threads.resize: {THREADS['resize']} lowered to {node_cpus}" in output

    run_id = re.search(r"SLURM run ID: (\S+)", output)[1]
    submitted = set(re.findall(r"has been submitted with SLURM jobid (\d+)", output))
    jobs = sacct_jobs(run_id)
    assert {job["JobID"] for job in jobs} == submitted
    assert all(job["State"] == "COMPLETED" and job["ExitCode"] == "0:0" for job in jobs), jobs
    by_rule: dict[str, list[dict[str, str]]] = {}
    for job in jobs:  # the plugin's comment: rule_<rule>_wildcards_<values>
        rule = re.match(r"rule_([a-z_]+?)(_wildcards_|$)", job["Comment"])[1]
        by_rule.setdefault(rule, []).append(job)
    shards = DATASET_SHARDS
    assert {rule: len(group) for rule, group in by_rule.items()} == {
        "resize_shard": shards,
        "records_shard": shards * len(SCHEMAS),
        "verify_records": len(DATASETS) * len(SCHEMAS),
    }, "index_table, summary, records_metadata, duplicates_audit, dataset_card and the report "
    "rules are local; every other job goes to SLURM"

    # threads become --cpus-per-task, and the profile's memory reaches sbatch (records_shard
    # asks for what its format declares: imgprep.formats, memory_mb)
    records_memory = ("mem_mb", get_format(SCHEMAS[0]).memory_mb)
    for rule, threads, (resource, mb) in [
        ("resize_shard", THREADS["resize"], profile_memory("resize_shard")),
        ("records_shard", 1, records_memory),
    ]:
        cpus = min(threads, node_cpus)
        for job in by_rule[rule]:
            assert int(job["AllocCPUS"]) == cpus, job
            assert megabytes(job["ReqMem"]) == (mb * cpus if resource == "mem_mb_per_cpu" else mb)

    assert outputs(remote) == outputs(local)
    record_shards = [name for name in outputs(local) if re.search(r"/records/\w+/[^/]+-of-", name)]
    assert len(record_shards) == shards * len(SCHEMAS)


def test_threads_are_capped_by_the_largest_node_or_the_jobs_cpus(monkeypatch):
    assert cpus_of_largest_node("2\n") == 2
    assert cpus_of_largest_node("8\n64+\n16\n") == 64  # 64+: a group of 64 or more
    assert cpus_of_largest_node("") is None
    assert job_cpu_limit("local", remote_job=False) is None
    assert job_cpu_limit(None, remote_job=True, environ={"SLURM_CPUS_PER_TASK": "3"}) == 3
    assert job_cpu_limit(None, remote_job=True, environ={}) is None  # AWS Batch, others
    monkeypatch.setattr("imgprep.slurm._largest_node", lambda: 12)
    assert job_cpu_limit("slurm", remote_job=False) == 12


def test_started_daemons_are_those_the_start_script_started():
    output = "start-slurm: starting munged (log: x)\nstart-slurm: slurmd is up\n"
    output += "start-slurm: starting slurmd (log: y)\n"
    assert started_daemons(output) == ["munged", "slurmd"]
