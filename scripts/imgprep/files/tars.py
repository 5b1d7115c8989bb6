"""Shard tars: reproducible member headers, and writing and reading a shard's JPEG tar.

A tar's bytes depend only on its members: USTAR (the oldest format every reader knows),
no timestamps, owners or modes from the machine, so the same members give byte-identical
tars anywhere (what lets Snakemake and a verifier trust a rerun).
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator

__all__ = ["add_member", "open_tar_writer", "read_resized", "reproducible_tar_info"]


def reproducible_tar_info(name: str, size: int) -> tarfile.TarInfo:
    """A tar member header with nothing from the machine or the clock in it."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def open_tar_writer(fileobj) -> tarfile.TarFile:
    """An uncompressed USTAR tar written to ``fileobj`` (close it before the file)."""
    return tarfile.open(fileobj=fileobj, mode="w", format=tarfile.USTAR_FORMAT)


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """Append one regular file with a reproducible header."""
    tar.addfile(reproducible_tar_info(name, len(data)), io.BytesIO(data))


def read_resized(tar_path) -> Iterator[tuple[int, bytes]]:
    """Yield (position, JPEG bytes) from a shard's resized tar, in tar order.

    Members are ``member_name(position)``; a file of another name is an error.
    """
    with tarfile.open(tar_path, mode="r|") as tar:
        for member in tar:
            if not member.isfile():
                continue
            stem = member.name.removeprefix("./").removesuffix(".jpg")
            if not stem.isdigit():
                raise ValueError(f"{tar_path}: unexpected member {member.name!r}")
            yield int(stem), tar.extractfile(member).read()
