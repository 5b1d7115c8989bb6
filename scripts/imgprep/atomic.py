"""Atomic file writes: a reader (or an interrupted run) never sees half a file."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from pathlib import Path

# A temp file is ".<name>.<token>.tmp" beside the file it becomes: the token is 16 hex
# digits (or the 8 characters tempfile.mkstemp used before), never a dot, so the temps of
# "a" and of "a.b" cannot be mistaken for each other.
_TEMP_TOKEN = r"(?:[0-9a-f]{16}|[a-z0-9_]{8})"


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb", **kwargs):
    """Open a temp file beside ``path``; rename it over ``path`` only on success.

    The rename makes a killed or failed job leave either the old file or none (a killed
    job's temp is removed by its next run: remove_stale_temps). The temp is created with
    mode 0666 less the umask, as open() would create ``path`` itself. No fsync: it made
    writing the 1152 ImageNet shard lists 3x slower, and a power cut is what Snakemake's
    incomplete-job markers are for.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = _temp_path(path)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            break
        except FileExistsError:  # 2**64 names: only a clash with a live writer's
            continue
    try:
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def remove_stale_temps(path) -> list[Path]:
    """Delete the temps atomic_write left beside ``path`` when its writer was killed.

    Only for paths no other process is writing now: a job's own outputs (Snakemake runs
    one job per output at a time), or the files of a folder that job alone writes.
    """
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.{_TEMP_TOKEN}\.tmp")
    return _remove_matching(path.parent, pattern)


def remove_stale_temps_in(folder) -> list[Path]:
    """Delete every atomic_write temp directly in ``folder`` (one that a single job owns)."""
    return _remove_matching(Path(folder), re.compile(rf"\..+\.{_TEMP_TOKEN}\.tmp"))


def _remove_matching(folder: Path, pattern: re.Pattern) -> list[Path]:
    removed = []
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        if pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def write_bytes_if_changed(path, data: bytes) -> bool:
    """Write ``data`` atomically unless the file already holds exactly it.

    Keeping the old file (and its mtime) is what lets Snakemake see an unchanged
    input as unchanged.
    """
    path = Path(path)
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    with atomic_write(path, "wb") as handle:
        handle.write(data)
    return True
