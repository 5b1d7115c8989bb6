"""The index folder's lock: a build holds it for its life, so that no other invocation
rewrites the shard lists its jobs read."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class IndexBusy(RuntimeError):
    """Another invocation builds from this index; its lists must not change under it."""


# index folder -> descriptor of its lock, held by this process for its life (a build)
_HELD_LOCKS: dict[str, int] = {}


def lock_index(folder: Path, role: str) -> int | None:
    """Take ``<folder>/.lock`` (flock, released by the kernel when the process ends, even
    after a SIGKILL); None while another process holds it. The file says who holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.path.realpath(folder) in _HELD_LOCKS:
        return _HELD_LOCKS[os.path.realpath(folder)]
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {role}\n".encode(), 0)
    return fd


def lock_holder(folder: Path) -> str:
    """ "<pid> <role>" of the lock's holder, as its file says ("?" when unreadable)."""
    try:
        return (folder / ".lock").read_text().strip() or "?"
    except OSError:
        return "?"


def keep_or_release(folder: Path, fd: int, held: bool) -> None:
    """A build keeps the lock until the process ends; a dry run lets go of it now."""
    key = os.path.realpath(folder)
    if held:
        _HELD_LOCKS[key] = fd
    elif _HELD_LOCKS.get(key) != fd:
        os.close(fd)  # closing releases the lock
