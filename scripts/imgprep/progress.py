"""``n/N images, img/s, ETA`` lines inside a long per-shard job, at a steady interval.

A job's log is where a user looks while it runs (``tail -f results/logs/resize/...``);
``imgprep progress`` collects the last such line of every unfinished job. Lines go to
stdout, which rule_log points at the job's log file; they never reach an output file.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator

__all__ = ["PROGRESS_LINE", "Progress", "configure", "format_duration", "tracked"]

# the interval every Progress of this process uses unless given one: rule_log sets the
# configuration's progress.interval_s (a config value, not a params one, so that changing
# it re-runs nothing)
_interval_s = 10.0

# what `imgprep progress` parses back: "progress <stage>: <n>/<N> <unit> ..."
PROGRESS_LINE = re.compile(
    r"^progress (?P<stage>[^:]+): (?P<done>\d+)/(?P<total>\d+) (?P<unit>\w+)"
)


def configure(interval_s: float | None) -> None:
    """Set this process's interval (None keeps it); 0 logs only the first and last lines."""
    global _interval_s
    if interval_s is not None:
        _interval_s = float(interval_s)


def format_duration(seconds: float) -> str:
    """3s, 4m05s, 2h07m: short enough for a log line, exact enough for an ETA."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Progress:
    """Counts work done and prints a line when ``interval_s`` has passed since the last one
    (time-based, so a log stays short whatever the shard's size), plus one at the start
    and one at the end. ``detail`` adds the stage's own counts (rejects, bytes) to a line.
    """

    def __init__(
        self,
        stage: str,
        total: int,
        unit: str = "images",
        interval_s: float | None = None,
        out=None,
        done: int = 0,
        detail: Callable[[], str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.stage, self.total, self.unit = stage, int(total), unit
        self.interval_s = _interval_s if interval_s is None else float(interval_s)
        self.out, self.detail, self.clock = out, detail, clock
        self.done = self.first = int(done)  # work found done already (a cache) has no rate
        self.started = self.last = clock()
        self.finished = False
        self._print(self.started)

    def advance(self, count: int = 1) -> None:
        self.done += count
        now = self.clock()
        if self.interval_s > 0 and now - self.last >= self.interval_s:
            self._print(now)

    def finish(self) -> None:
        """The last line (once): what was done, the rate, the time it took."""
        if not self.finished:
            self.finished = True
            self._print(self.clock())

    def line(self, now: float) -> str:
        elapsed = now - self.started
        worked = self.done - self.first
        rate = worked / elapsed if elapsed > 0 else 0.0
        share = f" ({100 * self.done / self.total:.1f}%)" if self.total else ""
        text = f"progress {self.stage}: {self.done}/{self.total} {self.unit}{share}"
        text += f", {rate:.1f} {_per(self.unit)}, elapsed {format_duration(elapsed)}"
        if self.finished:
            text += ", done"
        elif rate > 0:
            text += f", ETA {format_duration((self.total - self.done) / rate)}"
        else:
            text += ", ETA ?"
        if self.detail is not None:
            text += f"; {self.detail()}"
        return text

    def _print(self, now: float) -> None:
        self.last = now
        print(self.line(now), file=self.out or sys.stdout, flush=True)


def _per(unit: str) -> str:
    """images -> img/s, the rest by their first letters (URLs/s, shards/s)."""
    return "img/s" if unit == "images" else f"{unit}/s"


def tracked(items: Iterable, progress: Progress) -> Iterator:
    """``items`` unchanged, advancing ``progress`` by one per item, finished at the end."""
    for item in items:
        yield item
        progress.advance()
    progress.finish()


# -- where a run stands: the jobs' logs read back (`imgprep progress`) -------------------

_STARTED = re.compile(r"^rule (?P<rule>\w+) .* started (?P<at>[\d.]+)$")
_ENDED = re.compile(r"^elapsed [\d.]+ s ended [\d.]+$")


def job_states(logs_dir, now: float | None = None, stalled_after_s: float = 300.0) -> dict:
    """Every job log under ``logs_dir`` (rule_log's: a first line with ``started``, a last
    with ``ended``): {"finished": {rule: count}, "failed": {rule: count}, "running": [(log
    path, last progress line or "", seconds since the log last changed)]}. A log that has
    not changed for ``stalled_after_s`` while unfinished is listed as running all the same
    (the caller says "stalled": a killed job looks exactly like that)."""
    import os
    from collections import Counter
    from pathlib import Path

    now = time.time() if now is None else now
    finished, failed, running = Counter(), Counter(), []
    for path in sorted(Path(logs_dir).rglob("*.log")):
        try:
            if not path.is_file():
                continue
            with open(path, "rb") as handle:
                head = handle.readline(4096).decode("utf-8", "replace").strip()
                size = os.fstat(handle.fileno()).st_size
                handle.seek(max(0, size - 65536))
                tail = handle.read().decode("utf-8", "replace").splitlines()
            changed = now - path.stat().st_mtime
        except OSError:
            continue
        started = _STARTED.match(head)
        if not started:
            continue
        rule = started["rule"]
        if tail and _ENDED.match(tail[-1].strip()):
            if any(line.startswith("Traceback") for line in tail):
                failed[rule] += 1
            else:
                finished[rule] += 1
            continue
        last = next((line for line in reversed(tail) if PROGRESS_LINE.match(line)), "")
        running.append((str(path), last, changed))
    return {"finished": dict(finished), "failed": dict(failed), "running": running}


def describe_states(states: dict, stalled_after_s: float = 300.0) -> str:
    """The text `imgprep progress` prints."""
    lines = []
    for path, last, changed in states["running"]:
        state = "stalled or killed" if changed > stalled_after_s else "running"
        shown = last.removeprefix("progress ") if last else "(no progress line yet)"
        lines.append(f"{state:<17} {path}: {shown} (log changed {format_duration(changed)} ago)")
    done = ", ".join(f"{rule} {n}" for rule, n in sorted(states["finished"].items())) or "none"
    lines.append(f"finished jobs: {done}")
    if states["failed"]:
        failed = ", ".join(f"{rule} {n}" for rule, n in sorted(states["failed"].items()))
        lines.append(f"failed jobs (their logs end in a traceback): {failed}")
    return "\n".join(lines)
