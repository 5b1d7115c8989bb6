"""Send a rule script's output and any traceback to the rule's log file."""

from __future__ import annotations

import contextlib
import time
import traceback


@contextlib.contextmanager
def rule_log(snakemake):
    """Redirect stdout/stderr to ``snakemake.log[0]``; log the traceback before re-raising."""
    path = snakemake.log[0] if snakemake.log else None
    if path is None:
        yield
        return
    started = time.perf_counter()
    with (
        open(path, "w", buffering=1) as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
    ):
        print(
            f"rule {snakemake.rule} wildcards {dict(snakemake.wildcards)}",
            f"threads {snakemake.threads}",
        )
        try:
            yield
        except BaseException:
            traceback.print_exc()
            raise
        finally:
            print(f"elapsed {time.perf_counter() - started:.3f} s")
