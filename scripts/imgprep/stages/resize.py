"""One shard: resize its images (in a process pool) into a tar of JPEGs plus tables.

The outputs depend only on the inputs: member order, tar headers and table text
are fixed, and the pool returns results in position order, so any ``threads`` gives
byte-identical files (what lets Snakemake and a verifier trust a rerun).
"""

from __future__ import annotations

import contextlib
import multiprocessing

from imgprep.atomic import atomic_write
from imgprep.files.tables import META_COLUMNS, REJECT_COLUMNS, TEXT, clean, member_name
from imgprep.files.tars import add_member, open_tar_writer
from imgprep.kernels.phash import duplicate_keys
from imgprep.kernels.resize import RejectedImage, ResizedImage, ResizeParams, resize_image
from imgprep.progress import Progress
from imgprep.s3 import is_s3_url, read_object
from imgprep.sourcefile import ReadLimits, UnsafeSourceError, check_size, read_file

__all__ = ["read_source_bytes", "resize_shard"]


def resize_shard(
    sources: list,
    params: ResizeParams,
    tar_path,
    meta_path,
    rejects_path,
    threads: int = 1,
    downloads: dict | None = None,
    limits: ReadLimits | None = None,
) -> tuple[int, int]:
    """Resize ``sources`` (position i is sources[i]); return (resized, rejected) counts.

    A source is a path, or (path, offset, size) for an image read in place from a tar
    (offset -1: the whole file). ``downloads`` (URL sources) maps a position to the
    downloaded bytes, or to the reason the download failed; such positions are not read
    from ``path`` at all. ``limits`` caps the bytes read per source file and says whether
    a symlink is followed (imgprep.sourcefile); a file that is not regular or is too large
    becomes a reject with that reason.

    Writes, each atomically: ``tar_path`` (uncompressed tar, ``{position:06d}.jpg``
    members in position order), ``meta_path`` (one TSV row per stored image) and
    ``rejects_path`` (one TSV row per rejected file, header only when none). Every
    position is in exactly one of the two tables.
    """
    items = [_item(position, source, downloads) for position, source in enumerate(sources)]
    paths = [item[1] for item in items]
    counts = {"resized": 0, "rejected": 0}
    progress = Progress("resize", len(items), detail=lambda: f"{counts['rejected']} rejected")
    with contextlib.ExitStack() as stack:
        tar_file = stack.enter_context(atomic_write(tar_path, "wb"))
        meta = stack.enter_context(atomic_write(meta_path, "w", **TEXT))
        rejects = stack.enter_context(atomic_write(rejects_path, "w", **TEXT))
        tar = stack.enter_context(open_tar_writer(tar_file))
        meta.write("\t".join(META_COLUMNS) + "\n")
        rejects.write("\t".join(REJECT_COLUMNS) + "\n")
        for position, image, reason in _results(items, params, threads, limits or ReadLimits()):
            if image is None:
                rejects.write(f"{position}\t{clean(paths[position])}\t{clean(reason)}\n")
                counts["rejected"] += 1
            else:
                add_member(tar, member_name(position), image[0].data)
                meta.write("\t".join(_meta_row(position, image)) + "\n")
                counts["resized"] += 1
            progress.advance()
    progress.finish()
    return counts["resized"], counts["rejected"]


# -- the work of one image --------------------------------------------------------------

_WORKER_PARAMS: ResizeParams | None = None
_WORKER_LIMITS = ReadLimits()


def _init_worker(params: ResizeParams, limits: ReadLimits) -> None:
    global _WORKER_PARAMS, _WORKER_LIMITS
    _WORKER_PARAMS, _WORKER_LIMITS = params, limits


def _item(position: int, source, downloads: dict | None) -> tuple:
    """(position, path, offset, size, downloaded bytes or failure reason or None)."""
    if isinstance(source, str | bytes):
        source = (str(source), -1, -1)
    path, offset, size, mtime_ns = (*source, 0) if len(source) == 3 else source
    payload = None
    if downloads is not None:
        payload = downloads.get(position, "not downloaded")
    return position, str(path), int(offset), int(size), payload, int(mtime_ns)


def read_source_bytes(
    path: str,
    offset: int = -1,
    size: int = -1,
    limits: ReadLimits | None = None,
    mtime_ns: int = 0,
) -> bytes:
    """An indexed image's bytes: the whole file or S3 object, or a tar member read in place.

    Local files only if regular, opened without blocking, at most ``limits.max_bytes``
    (UnsafeSourceError otherwise); an S3 object over the cap by its listed size is refused
    before it is fetched. A local file whose index row has its size and mtime must still
    have them (SourceChangedError: the job fails, asking for a rescan).
    """
    limits = limits or ReadLimits()
    if is_s3_url(path):  # a network failure raises: the job fails, not the image
        check_size(size, limits.max_bytes)
        data = read_object(path)
        check_size(len(data), limits.max_bytes)
        return data
    if offset >= 0:
        from imgprep.tarindex import MEMBER_SEPARATOR, read_member

        return read_member(path.partition(MEMBER_SEPARATOR)[0], offset, size, limits.max_bytes)
    indexed = (size, mtime_ns) if size >= 0 and mtime_ns != 0 else None
    return read_file(path, limits.max_bytes, limits.follow_symlinks, indexed)


def _process(item: tuple) -> tuple[int, tuple[ResizedImage, str, str, str] | None, str | None]:
    """Read and resize one image; any failure of the image becomes a reason (a stale index,
    SourceChangedError, is not the image's failure: it fails the job)."""
    position, path, offset, size, payload, mtime_ns = item
    if isinstance(payload, str):
        return position, None, f"download failed: {payload}"
    if payload is not None:
        data = payload
    else:
        try:
            data = read_source_bytes(path, offset, size, _WORKER_LIMITS, mtime_ns)
        except UnsafeSourceError as error:
            return position, None, str(error)
        except OSError as error:
            return position, None, f"unreadable: {type(error).__name__}: {error}"
    try:
        image = resize_image(data, _WORKER_PARAMS, pixels_digest=True)
    except RejectedImage as error:
        return position, None, error.reason
    # the duplicate audit's keys ride along with the image (meta.tsv's last columns)
    return position, (image, *duplicate_keys(data, image)), None


def _results(items: list[tuple], params: ResizeParams, threads: int, limits: ReadLimits):
    """(position, image or None, reason or None) in position order."""
    if threads <= 1 or len(items) <= 1:
        _init_worker(params, limits)
        yield from map(_process, items)
        return
    # fork: workers inherit the imported modules (no per-process import cost) and do
    # not re-run the Snakemake script, as spawn would
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    processes = min(threads, len(items))
    # a few chunks per process: little IPC, yet the pool stays busy to the end
    chunksize = max(1, min(32, len(items) // (processes * 4)))
    with context.Pool(processes, initializer=_init_worker, initargs=(params, limits)) as pool:
        yield from pool.imap(_process, items, chunksize=chunksize)


# -- output formats ---------------------------------------------------------------------


def _meta_row(position: int, made: tuple[ResizedImage, str, str, str]) -> list[str]:
    """The image's meta.tsv row; ``made`` = (image, *phash.duplicate_keys)."""
    image, source_sha256, pixels_sha256, phash_text = made
    return [
        str(position),
        str(image.width),
        str(image.height),
        str(image.channels),
        image.colorspace,
        image.source_format,
        image.source_mode,
        str(image.source_width),
        str(image.source_height),
        str(image.orientation),
        *(repr(float(value)) for value in image.crop),
        *(str(value) for value in image.pad),
        "1" if image.kept else "0",
        str(len(image.data)),
        image.icc,
        source_sha256,
        pixels_sha256,
        phash_text,
    ]
