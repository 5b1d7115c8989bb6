"""Atomic file writes: a reader (or an interrupted run) never sees half a file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb", **kwargs):
    """Open a temp file beside ``path``; rename it over ``path`` only on success.

    The rename makes a killed or failed job leave either the old file or none. No fsync:
    it made writing the 1152 ImageNet shard lists 3x slower, and a power cut is what
    Snakemake's incomplete-job markers are for.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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


def reproducible_tar_info(name: str, size: int):
    """A tar member header with nothing from the machine or the clock in it, so the same
    members give byte-identical tars anywhere."""
    import tarfile

    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info
