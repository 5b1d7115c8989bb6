"""What a finished ``snakemake`` call prints last: the result, not just "100% done"."""

from __future__ import annotations

from pathlib import Path

__all__ = ["failure_report", "success_report"]

# file systems with coarse timestamps (and NFS clocks) may stamp a fresh file a little early
_MTIME_SLACK_S = 2.0


def success_report(results, started: float) -> str:
    """The summary table, aligned, if this run (started at ``started``, epoch seconds)
    wrote it; "" otherwise (a run of other targets leaves an older summary alone)."""
    results = Path(results)
    table = results / "summary.tsv"
    try:
        if table.stat().st_mtime < started - _MTIME_SLACK_S:
            return ""
        rows = [line.split("\t") for line in table.read_text().splitlines() if line]
    except (FileNotFoundError, NotADirectoryError):
        return ""
    if not rows:
        return ""
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip()
        for row in rows
    ]
    return "\n".join(
        [
            f"imgprep: finished; {table}:",
            *lines,
            f"rejected images and their reasons: {results / 'rejects.tsv'}",
        ]
    )


def failure_report(results, snakemake_log) -> str:
    """Where to look after a failed run."""
    where = f"the failed job's log is named above (all job logs: {Path(results) / 'logs'}/)"
    if snakemake_log:
        where += f"; Snakemake's own log: {snakemake_log}"
    return f"imgprep: the run failed: {where}"
