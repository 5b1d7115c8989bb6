"""What a finished ``snakemake`` call prints last: the result, not just "100% done"."""

from __future__ import annotations

from pathlib import Path

__all__ = ["failure_report", "success_report"]

# file systems with coarse timestamps (and NFS clocks) may stamp a fresh file a little early
_MTIME_SLACK_S = 2.0


def success_report(folders, started: float) -> str:
    """The summary table of each dataset folder whose summary this run (started at
    ``started``, epoch seconds) wrote, aligned; "" if none (a run of other targets leaves
    older summaries alone)."""
    parts = []
    for folder in folders:
        folder = Path(folder)
        table = folder / "summary.tsv"
        try:
            if table.stat().st_mtime < started - _MTIME_SLACK_S:
                continue
            rows = [line.split("\t") for line in table.read_text().splitlines() if line]
        except (FileNotFoundError, NotADirectoryError):
            continue
        if not rows:
            continue
        parts += [
            f"imgprep: finished; {table}:",
            *_aligned(rows),
            f"rejected images and their reasons: {folder / 'rejects.tsv'}",
        ]
        stages = _rows(folder / "stages.tsv")
        if len(stages) > 1:
            parts += [f"per stage (job seconds summed; img/s per job): {folder / 'stages.tsv'}"]
            parts += [f"  {line}" for line in _aligned(stages)]
    return "\n".join(parts)


def _rows(table: Path) -> list[list[str]]:
    try:
        return [line.split("\t") for line in table.read_text().splitlines() if line]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _aligned(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip()
        for row in rows
    ]


def failure_report(results, snakemake_log) -> str:
    """Where to look after a failed run."""
    where = f"the failed job's log is named above (all job logs: {Path(results) / 'logs'}/)"
    if snakemake_log:
        where += f"; Snakemake's own log: {snakemake_log}"
    return f"imgprep: the run failed: {where}"
