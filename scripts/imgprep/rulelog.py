"""Send a rule script's output, native libraries' included, to the rule's log file."""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback


@contextlib.contextmanager
def rule_log(snakemake):
    """Point stdout/stderr (the file descriptors, so TensorFlow's C++ logging too) at
    ``snakemake.log[0]``; log the traceback before re-raising."""
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
