"""How many CPUs one SLURM job can get, so a rule's ``threads`` never asks for more.

A job asking ``--cpus-per-task`` beyond the largest node is refused at submission ("More
processors requested than permitted") or, where the partition does not enforce its
limits, pends forever. The planning process lowers each rule's threads to the CPUs of
the largest node ``sinfo`` lists; inside a job, to the CPUs SLURM gave it
(``SLURM_CPUS_PER_TASK``), so the job's pool matches its allocation.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

__all__ = ["cpus_of_largest_node", "job_cpu_limit"]

SINFO_TIMEOUT_S = 30


def cpus_of_largest_node(sinfo_output: str) -> int | None:
    """The largest CPU count in ``sinfo -h -o %c`` output (``4``, ``4+`` for mixed
    groups, whose smallest node has 4), or None when it names none."""
    counts = [int(word.rstrip("+")) for word in sinfo_output.split() if word.rstrip("+").isdigit()]
    return max(counts, default=None)


@functools.cache
def _largest_node() -> int | None:
    sinfo = shutil.which("sinfo")
    if sinfo is None:
        return None
    try:
        proc = subprocess.run(
            [sinfo, "-h", "-o", "%c"],
            capture_output=True,
            text=True,
            timeout=SINFO_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return cpus_of_largest_node(proc.stdout) if proc.returncode == 0 else None


def job_cpu_limit(executor: str | None, remote_job: bool, environ=os.environ) -> int | None:
    """The most threads a job may use under this Snakemake process, or None for no limit.

    ``executor`` is the name of the executor plugin of the planning process (``slurm``
    submits jobs); ``remote_job`` is true in the Snakemake that runs inside a job.
    """
    if remote_job:
        cpus = environ.get("SLURM_CPUS_PER_TASK", "")
        return int(cpus) if cpus.isdigit() and int(cpus) > 0 else None
    if executor == "slurm":
        return _largest_node()
    return None
