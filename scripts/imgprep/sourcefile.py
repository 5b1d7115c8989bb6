"""Reading source files without trusting them: regular files only, never blocking, bounded.

A source tree is not ours. A FIFO named ``x.JPEG`` blocks ``open()`` until a writer comes
(forever), a symlink to ``/dev/zero`` never ends, a sparse 2 GB file costs 2 GB to read.
So every reader of source bytes (images, box XMLs, the tars read in place, the lists a
config names) opens through here: ``stat`` first (a device or FIFO is never even
opened), ``open`` with ``O_NONBLOCK`` (a FIFO swapped in after the ``stat`` cannot
block), ``fstat`` the descriptor (what was opened is what is read), and at most
``source.max_file_bytes`` read per image or annotation. Each refusal is an OSError with
a short reason, which the resize stage records as the image's reject reason.

Only the standard library: the scan imports this at workflow parse time.
"""

from __future__ import annotations

import errno
import os
import stat as stat_module
from dataclasses import dataclass

from imgprep.files.tables import clean

# ImageNet's biggest JPEG is ~15 MB; a file past this is a mistake or an attack.
DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024

# Reasons an entry is listed in index/ignored.tsv, the same for the local and S3 scans.
HIDDEN = "hidden file"
TAB_OR_NEWLINE = "tab or newline in name"
NOT_AN_IMAGE_EXTENSION = "not an image extension"
NOT_UTF8 = "name is not valid UTF-8 (shown with \\x escapes)"
SYMLINK_NOT_FOLLOWED = "symlink, not followed"


class UnsafeSourceError(OSError):
    """A source file that is not read: not a regular file, or too large. ``str()`` is the
    reason, without the path (the reject tables have their own path column)."""


class NotRegularFileError(UnsafeSourceError):
    pass


class FileTooLargeError(UnsafeSourceError):
    pass


class TruncatedReadError(OSError):
    """Fewer bytes than the index promised: the file shrank, or a tar member runs past
    its end."""


class SourceChangedError(Exception):
    """A source file differs from its index row (size or mtime): the index is stale.

    Not an OSError, so the resize stage fails the job instead of recording a reject: the
    fix is a rescan, after which the image is resized from its new bytes."""


RESCAN_HINT = (
    "the index is stale (the scan cache does not see a file rewritten in place): "
    "run again with `source: {rescan: true}` in a second --configfile, or delete "
    "<results>/index/cache/folders"
)


def check_unchanged(path, opened: os.stat_result, size: int, mtime_ns: int) -> None:
    """SourceChangedError when the opened file's size or mtime is not the index row's."""
    if (opened.st_size, opened.st_mtime_ns) != (size, mtime_ns):
        what = []
        if opened.st_size != size:
            what.append(f"size {size} -> {opened.st_size}")
        if opened.st_mtime_ns != mtime_ns:
            what.append(f"mtime_ns {mtime_ns} -> {opened.st_mtime_ns}")
        raise SourceChangedError(
            f"{shown(os.fspath(path))}: changed since it was indexed ({', '.join(what)}); "
            + RESCAN_HINT
        )


@dataclass(frozen=True)
class ReadLimits:
    """How a job reads source files: the byte cap and whether a path's last component may
    be a symlink (only sources that name their files, a manifest, follow them)."""

    max_bytes: int = DEFAULT_MAX_FILE_BYTES
    follow_symlinks: bool = True

    @classmethod
    def from_config(cls, cfg: dict | None) -> ReadLimits:
        cfg = cfg or {}
        return cls(
            int(cfg.get("max_file_bytes", DEFAULT_MAX_FILE_BYTES)),
            bool(cfg.get("follow_symlinks", True)),
        )


def file_kind(mode: int) -> str:
    """What a stat mode is, in words."""
    for test, kind in (
        (stat_module.S_ISREG, "regular file"),
        (stat_module.S_ISDIR, "folder"),
        (stat_module.S_ISLNK, "symlink"),
        (stat_module.S_ISFIFO, "FIFO"),
        (stat_module.S_ISSOCK, "socket"),
        (stat_module.S_ISCHR, "character device"),
        (stat_module.S_ISBLK, "block device"),
    ):
        if test(mode):
            return kind
    return "unknown file type"


def not_regular_reason(mode: int) -> str:
    return f"not a regular file ({file_kind(mode)})"


def shown(text: str) -> str:
    """``text`` as one clean UTF-8 TSV field: tabs and line breaks become spaces, bytes
    that are not UTF-8 (kept by os.listdir as surrogate escapes) become ``\\xff`` text."""
    if not text.isascii():
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return clean(text)


def is_utf8(name: str) -> bool:
    """Whether a name from os.listdir was valid UTF-8 (else it holds surrogate escapes)."""
    if name.isascii():
        return True
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def open_regular(path, follow_symlinks: bool = True) -> tuple[int, os.stat_result]:
    """(descriptor, fstat) of ``path`` opened read-only, or NotRegularFileError.

    ``follow_symlinks=False`` refuses a symlink as the last component (O_NOFOLLOW).
    """
    before = os.stat(path, follow_symlinks=follow_symlinks)
    if stat_module.S_ISLNK(before.st_mode):
        raise NotRegularFileError(SYMLINK_NOT_FOLLOWED)
    if not stat_module.S_ISREG(before.st_mode):
        raise NotRegularFileError(not_regular_reason(before.st_mode))
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as error:
        if error.errno == errno.ELOOP and not follow_symlinks:
            raise NotRegularFileError(SYMLINK_NOT_FOLLOWED) from None
        raise
    try:
        opened = os.fstat(fd)
        if not stat_module.S_ISREG(opened.st_mode):
            raise NotRegularFileError(not_regular_reason(opened.st_mode))
    except BaseException:
        os.close(fd)
        raise
    return fd, opened


def _too_large(size: int, max_bytes: int) -> FileTooLargeError:
    return FileTooLargeError(
        f"too large: {size} bytes, more than source.max_file_bytes ({max_bytes})"
    )


def check_size(size: int, max_bytes: int | None) -> None:
    """FileTooLargeError when ``size`` is over the cap (None: no cap)."""
    if max_bytes is not None and size > max_bytes:
        raise _too_large(size, max_bytes)


def read_file(
    path, max_bytes: int | None, follow_symlinks: bool = True, indexed: tuple | None = None
) -> bytes:
    """The whole of a regular file, at most ``max_bytes`` (None: no cap) of it.

    The size is checked before anything is read (a sparse 2 GB file costs nothing), and
    the read stops one byte past the cap (a file that grows meanwhile is caught too).
    ``indexed`` = (size, mtime_ns) of the index row: the opened file must match it
    (SourceChangedError), checked on the fstat open_regular made anyway.
    """
    fd, opened = open_regular(path, follow_symlinks)
    try:
        if indexed is not None:
            check_unchanged(path, opened, *indexed)
        check_size(opened.st_size, max_bytes)
        chunks, got = [], 0
        while max_bytes is None or got <= max_bytes:
            # what fstat promises plus one byte (to see the end), 64 KiB-16 MiB a call
            want = min(max(opened.st_size - got + 1, 1 << 16), 1 << 24)
            if max_bytes is not None:
                want = min(want, max_bytes + 1 - got)
            chunk = os.read(fd, want)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
    finally:
        os.close(fd)
    check_size(got, max_bytes)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def read_range(path, offset: int, size: int, max_bytes: int | None = None) -> bytes:
    """Exactly ``size`` bytes at ``offset`` of a regular file (a tar member read in place);
    TruncatedReadError when the file ends first."""
    if offset < 0 or size < 0:
        raise ValueError(f"negative offset or size: {offset}, {size}")
    check_size(size, max_bytes)
    fd, _ = open_regular(path)
    try:
        chunks, got = [], 0
        while got < size:
            # Linux preads at most 2 GiB - 4 KiB per call
            chunk = os.pread(fd, size - got, offset + got)
            if not chunk:
                raise TruncatedReadError(
                    f"{os.fspath(path)}: truncated: {size} bytes wanted at offset {offset}, "
                    f"the file ends after {got}"
                )
            chunks.append(chunk)
            got += len(chunk)
    finally:
        os.close(fd)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def open_source(path, mode: str = "r", **kwargs):
    """``open()`` for a list the config names (manifest, labels, CSVs, URL list): the same
    checks, no byte cap (fall11_urls.txt alone is 1.1 GB; these are read line by line)."""
    fd, _ = open_regular(path)
    try:
        return os.fdopen(fd, mode, **kwargs)
    except BaseException:
        os.close(fd)
        raise
