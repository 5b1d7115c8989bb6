"""PASCAL-VOC box annotations (``splits.<name>.boxes``): XMLs in a folder or an archive.

Parsed once per content and cached under the index's cache folder (ImageNet's 544k
train XMLs take most of a minute); each image's boxes are then looked up by its stem.
Only the standard library and defusedxml (pure Python), the latter on the first parse:
``imgprep.config`` imports the source registry, and every stage imports the config.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import lzma
import os
import stat as stat_module
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from xml.etree.ElementTree import ParseError

from imgprep.atomic import atomic_write
from imgprep.boxes import Number, RawBoxes, decode_boxes, encode_boxes, parse_number
from imgprep.errors import ConfigError
from imgprep.files.tables import TEXT, clean
from imgprep.sourcefile import (
    DEFAULT_MAX_FILE_BYTES,
    SYMLINK_NOT_FOLLOWED,
    check_size,
    not_regular_reason,
    open_regular,
    read_file,
    shown,
)

# extensions stripped from a VOC <filename>; anything else after a dot is part of the name
_IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".jpe", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# bump when the cache's content or layout changes: old caches are then rebuilt
_CACHE_VERSION = "imgprep-voc-boxes-2"
_PROBLEM = "!"  # first field of a cache line that records a problem, never a stem


def split_boxes(config: dict, split: str, cache: Path, ignored: list) -> dict[str, RawBoxes]:
    """``splits.<split>.boxes`` parsed (or loaded from ``cache``); {} when not set. Skipped
    XMLs go to ``ignored``; a source that is no folder or readable archive names the key."""
    source = config["splits"][split].get("boxes")
    if not source:
        return {}
    max_bytes = config["source"]["max_file_bytes"]
    try:
        boxes, problems = read_voc_boxes(source, cache, max_bytes)
    except (ValueError, OSError) as error:  # not a folder or readable archive
        raise ConfigError(f"config key 'splits.{split}.boxes': {shown(str(error))}") from None
    ignored.extend(
        (f"{source}:{member}", f"box annotation skipped: {why}") for member, why in problems
    )
    return boxes


def parse_voc_xml(data: bytes, fallback_stem: str | None = None) -> tuple[str, RawBoxes]:
    """(image stem, boxes) of one VOC annotation; ValueError when it is unusable.

    The stem is ``<filename>`` without an image extension; ``fallback_stem`` (the
    XML's own name) stands in when ``<filename>`` is missing or a printf placeholder
    (``%s``, left in some ImageNet train XMLs). A missing or zero ``<size>`` gives a
    0 x 0 reference: the boxes then refer to the image's real size.
    """
    import defusedxml.ElementTree as SafeElementTree
    from defusedxml import DefusedXmlException

    try:
        # defusedxml, whatever the encoding (a hand check for "<!ENTITY" misses UTF-16):
        # no DTD, so no entity expansion (billion laughs) and no external references
        root = SafeElementTree.fromstring(data, forbid_dtd=True)
    except DefusedXmlException as error:
        raise ValueError(
            f"DTDs and entity declarations are not accepted ({type(error).__name__})"
        ) from None
    except ParseError as error:
        raise ValueError(f"not well-formed XML: {error}") from None
    if root.tag != "annotation":
        raise ValueError(f"root element is <{root.tag}>, not <annotation>")
    stem = _filename_stem(root.findtext("filename"))
    if stem is None:
        if not fallback_stem:
            raise ValueError("no usable <filename> and no fallback name")
        stem = fallback_stem
    ref_width = ref_height = 0
    size = root.find("size")
    if size is not None:
        width, height = _xml_number(size, "width"), _xml_number(size, "height")
        if width is not None and height is not None and width > 0 and height > 0:
            ref_width, ref_height = width, height
    boxes = []
    for index, obj in enumerate(root.iter("object")):
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise ValueError(f"object {index} has no <bndbox>")
        box = tuple(_xml_number(bndbox, key) for key in ("xmin", "ymin", "xmax", "ymax"))
        if None in box:
            raise ValueError(f"object {index}: <bndbox> lacks a coordinate")
        boxes.append(box)
    return stem, RawBoxes(ref_width, ref_height, tuple(boxes))


def _filename_stem(filename: str | None) -> str | None:
    """The image stem a ``<filename>`` names; None when it names nothing usable."""
    name = (filename or "").strip().replace("\\", "/").rpartition("/")[2]
    if not name or "%" in name or "\t" in name or "\n" in name:
        return None
    base, dot, extension = name.rpartition(".")
    if dot and base and f".{extension.lower()}" in _IMAGE_EXTENSIONS:
        return base
    return name


def _xml_number(parent, tag: str) -> Number | None:
    text = parent.findtext(tag)
    if text is None or not text.strip():
        return None
    try:
        return parse_number(text)
    except ValueError as error:
        raise ValueError(f"<{tag}>: {error}") from None


def read_voc_boxes(
    source, cache_dir, max_bytes: int = DEFAULT_MAX_FILE_BYTES
) -> tuple[dict[str, RawBoxes], list[tuple[str, str]]]:
    """All boxes of a folder of VOC XMLs or an archive of them, keyed by image stem.

    Returns (boxes, problems): problems are (member, reason) for XMLs that were
    skipped (broken, or a second annotation of the same stem); images whose XML has
    no object get no entry. The key is the XML's own name (``n01440764_10026.xml`` ->
    ``n01440764_10026``): that is how the annotation sets pair XMLs with images, and
    it is always there, unlike a usable ``<filename>``.

    Parsing the 544k ImageNet train XMLs takes most of a minute, the index runs at every
    snakemake invocation, so the result is cached in ``cache_dir``, keyed by the
    source's path and a fingerprint of its content (an archive's size and mtime; a
    folder's XML names, count, total size and newest mtime).

    Only regular files are read, each at most ``max_bytes``: a FIFO, a device, a symlink
    (not followed, as in the image scan) or an unreadable subfolder is a problem, never
    opened, so a FIFO named ``.xml`` cannot hang the scan (which even ``snakemake -n`` runs).
    """
    source = Path(source).absolute()
    skipped: list[tuple[str, str]] = []
    if source.is_dir():
        xml_files = _xml_files(source, skipped)
        fingerprint = _folder_fingerprint(xml_files)
        members = (
            (name, lambda name=name: read_file(source / name, max_bytes, follow_symlinks=False))
            for name, _ in xml_files
        )
    elif source.is_file():
        stat = source.stat()
        fingerprint = f"archive {stat.st_size} {stat.st_mtime_ns}"
        members = _archive_members(source, max_bytes)
    elif source.exists():
        raise ValueError(
            f"box annotations: {source} is {not_regular_reason(source.stat().st_mode)}"
        )
    else:
        raise FileNotFoundError(f"box annotations: no such file or folder: {source}")
    digest = hashlib.sha256(str(source).encode("utf-8", "surrogateescape")).hexdigest()[:24]
    cache_path = Path(cache_dir) / f"voc-boxes-{digest}.tsv"
    header = f"{_CACHE_VERSION}\t{source}\t{fingerprint}\tmax_bytes={max_bytes}"
    cached = _load_cache(cache_path, header)
    if cached is None:
        cached = _parse_members(members)
        _write_cache(cache_path, header, *cached)
    boxes, problems = cached
    return boxes, sorted(skipped) + problems


def _xml_files(folder: Path, skipped: list) -> list[tuple[str, os.stat_result]]:
    """(relative path, lstat) of the regular ``*.xml`` files below ``folder``, sorted.

    Symlinked folders are not descended; XML names that are symlinks or not regular
    files, and folders that cannot be listed, go to ``skipped`` as (path, reason).
    """
    found = []

    def unreadable(error: OSError) -> None:
        rel = os.path.relpath(error.filename, folder)
        skipped.append((rel, f"unreadable folder: {error.strerror}"))

    for top, dirs, files in os.walk(folder, onerror=unreadable):
        rel = os.path.relpath(top, folder)
        prefix = "" if rel == "." else f"{rel}/"
        for name in dirs:
            if os.path.islink(os.path.join(top, name)):
                skipped.append((prefix + name, f"{SYMLINK_NOT_FOLLOWED} (a folder)"))
        dirs.sort()
        for name in files:
            if not name.lower().endswith(".xml"):
                continue
            try:
                stat = os.lstat(os.path.join(top, name))
            except OSError as error:
                skipped.append((prefix + name, f"unreadable: {error.strerror}"))
                continue
            if stat_module.S_ISLNK(stat.st_mode):
                skipped.append((prefix + name, SYMLINK_NOT_FOLLOWED))
            elif not stat_module.S_ISREG(stat.st_mode):
                skipped.append((prefix + name, not_regular_reason(stat.st_mode)))
            else:
                found.append((prefix + name, stat))
    found.sort()
    return found


def _folder_fingerprint(files: list[tuple[str, os.stat_result]]) -> str:
    """Changes whenever an XML is added, removed, renamed, resized or rewritten."""
    total = sum(stat.st_size for _, stat in files)
    newest = max((stat.st_mtime_ns for _, stat in files), default=0)
    names = [name for name, _ in files]
    listing = hashlib.sha256("\n".join(names).encode("utf-8", "surrogateescape")).hexdigest()
    return f"folder {len(names)} {total} {newest} {listing[:24]}"


def _archive_members(path: Path, max_bytes: int) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """(member name, reader) of the archive's XML files, streamed in archive order.

    tarfile alone takes an archive cut at a member boundary for a complete one, and
    its gzip reader skips the trailer's check: a truncated download would lose boxes
    without a word. So the decompressor is chosen here (these raise on a cut stream),
    the stream is read to its end, and the end-of-archive block must be there. A link
    member or one over ``max_bytes`` is a problem (its reader raises), never read.
    """
    try:
        with os.fdopen(open_regular(path)[0], "rb") as raw, contextlib.ExitStack() as stack:
            magic = raw.read(6)
            raw.seek(0)
            opener = next((o for m, o in _DECOMPRESSORS if magic.startswith(m)), None)
            stream = _CountingReader(stack.enter_context(opener(raw)) if opener else raw)
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    if not member.name.lower().endswith(".xml"):
                        continue
                    if member.issym() or member.islnk():
                        kind = "symlink" if member.issym() else "hard link"
                        yield member.name, _refuse(f"{kind} member, not read")
                    elif not member.isfile():
                        continue
                    elif member.size > max_bytes:
                        try:
                            check_size(member.size, max_bytes)
                        except OSError as error:
                            yield member.name, _refuse(str(error))
                    else:
                        data = tar.extractfile(member).read()
                        yield member.name, lambda data=data: data
                end = tar.offset
            while stream.read(1 << 20):
                pass
            if stream.count < end + tarfile.BLOCKSIZE:
                raise EOFError("no end-of-archive block: the file is truncated")
    except (tarfile.TarError, OSError, EOFError, lzma.LZMAError) as error:
        raise ValueError(f"box annotations: cannot read archive {path}: {error}") from None


def _refuse(reason: str) -> Callable[[], bytes]:
    def read() -> bytes:
        raise ValueError(reason)

    return read


_DECOMPRESSORS = ((b"\x1f\x8b", gzip.open), (b"BZh", bz2.open), (b"\xfd7zXZ\x00", lzma.open))


class _CountingReader:
    """A read-only stream that counts the bytes it delivered."""

    def __init__(self, stream):
        self.stream = stream
        self.count = 0

    def read(self, size=-1) -> bytes:
        data = self.stream.read(size)
        self.count += len(data)
        return data


def _parse_members(members) -> tuple[dict[str, RawBoxes], list[tuple[str, str]]]:
    boxes: dict[str, RawBoxes] = {}
    source_of: dict[str, str] = {}
    problems: list[tuple[str, str]] = []
    for member, read in members:
        own_stem = member.replace("\\", "/").rpartition("/")[2][: -len(".xml")]
        try:
            if not own_stem or clean(own_stem) != own_stem:
                raise ValueError("unusable file name")
            raw = parse_voc_xml(read(), own_stem)[1]
            if own_stem in source_of:
                first = source_of[own_stem]
                raise ValueError(f"second annotation of {own_stem!r} (first: {first})")
        except (ValueError, OSError) as error:
            problems.append((clean(member), clean(str(error))))
            continue
        source_of[own_stem] = member
        if raw.boxes:
            boxes[own_stem] = raw
    return boxes, problems


def _load_cache(path: Path, header: str):
    """The cached (boxes, problems) when ``path`` was written for ``header``, else None."""
    try:
        with open(path, **TEXT) as handle:
            if handle.readline().rstrip("\n") != header:
                return None
            boxes: dict[str, RawBoxes] = {}
            problems: list[tuple[str, str]] = []
            for line in handle:
                first, _, rest = line.rstrip("\n").partition("\t")
                if first == _PROBLEM:
                    member, _, reason = rest.partition("\t")
                    problems.append((member, reason))
                else:
                    boxes[first] = decode_boxes(rest)
    except (OSError, ValueError):  # missing or damaged: parse again
        return None
    return boxes, problems


def _write_cache(path: Path, header: str, boxes: dict, problems: list) -> None:
    with atomic_write(path, "w", **TEXT) as handle:
        handle.write(header + "\n")
        for stem, raw in boxes.items():
            handle.write(f"{stem}\t{encode_boxes(raw.ref_width, raw.ref_height, raw.boxes)}\n")
        for member, reason in problems:
            handle.write(f"{_PROBLEM}\t{member}\t{reason}\n")
