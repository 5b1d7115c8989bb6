"""Send a rule script's output, native libraries' included, to the rule's log file."""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback

from imgprep import progress
from imgprep.atomic import remove_stale_temps


@contextlib.contextmanager
def rule_log(snakemake):
    """Point stdout/stderr (the file descriptors, so TensorFlow's C++ logging too) at
    ``snakemake.log[0]``; log the traceback before re-raising.

    Sets the interval of the job's progress lines (``progress.interval_s``, read from
    the configuration, not params: changing it re-runs nothing). First removes the temps
    a killed earlier run of this job left beside its outputs: no other job writes them,
    and nothing else would ever delete them.
    """
    settings = getattr(snakemake, "config", None) or {}
    progress.configure(settings.get("progress", {}).get("interval_s"))
    stale = [
        temp for path in [*snakemake.output, *snakemake.log] for temp in remove_stale_temps(path)
    ]
    if not snakemake.log:
        yield
        return
    started = time.perf_counter()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(snakemake.log[0], "w", buffering=1) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                print(f"rule {snakemake.rule} wildcards {dict(snakemake.wildcards)}", end=" ")
                print(f"threads {snakemake.threads} started {time.time():.3f}")
                if stale:
                    print(f"removed {len(stale)} temp files of a killed run: {stale[0]} …")
                try:
                    yield
                except BaseException:
                    traceback.print_exc()
                    raise
                finally:
                    print(f"elapsed {time.perf_counter() - started:.3f} s ended {time.time():.3f}")
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
