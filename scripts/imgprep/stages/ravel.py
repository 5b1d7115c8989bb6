"""Stage ravel: the string-art target of every resized image of one shard.

The targets are computed from the decoded stored JPEG, not from the source, so a
Tangler record's target matches its image bit for bit. Chord tables are built once in
the parent and inherited by the forked pool workers.
"""

from __future__ import annotations

import dataclasses
import io
import multiprocessing
from dataclasses import dataclass

import numpy as np

from imgprep.atomic import atomic_write
from imgprep.files.tars import read_resized
from imgprep.kernels.stringart import kernel_tables, ravel
from imgprep.progress import Progress, tracked
from imgprep.sections import require_keys

__all__ = ["RavelParams", "decode_gray", "ravel_shard"]


@dataclass(frozen=True)
class RavelParams:
    """The string art of every image: the config's ``ravel:`` mapping.

    No defaults here: they are the schema's (``from_config`` of the validated config, or
    of ``imgprep.config.section_config("ravel", ...)``).
    """

    pins: int
    lines: int
    weight: float
    frame: float
    oversample: int

    @classmethod
    def from_config(cls, cfg: dict) -> RavelParams:
        """Build from the validated config's ``ravel:`` mapping (every key present)."""
        names = [field.name for field in dataclasses.fields(cls)]
        require_keys("ravel", cfg, names)
        return cls(**{key: cfg[key] for key in names})


_PARAMS: RavelParams | None = None


def decode_gray(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        if image.mode != "L" or image.width != image.height:
            raise ValueError(f"ravel needs square gray images, got {image.mode} {image.size}")
        return np.asarray(image)


def _ravel_one(data: bytes) -> np.ndarray:
    return ravel(decode_gray(data), **dataclasses.asdict(_PARAMS))


def ravel_shard(tar_path, out_path, params: RavelParams, threads: int = 1) -> int:
    """Write an int16 ``.npy`` [images, lines + 1]: row r is the path of the r-th image of
    the tar (position order, as the resize meta lists them). Returns the image count."""
    global _PARAMS
    _PARAMS = params
    images = [data for _, data in read_resized(tar_path)]
    if images:
        kernel_tables(params.pins, decode_gray(images[0]).shape[0])  # once, before fork
    progress = Progress("ravel", len(images))
    if threads > 1 and len(images) > 1:
        # chunks of a few images: the pool stays busy to the end and progress is current
        chunksize = max(1, min(8, len(images) // (4 * threads)))
        with multiprocessing.get_context("fork").Pool(threads) as pool:
            paths = list(tracked(pool.imap(_ravel_one, images, chunksize=chunksize), progress))
    else:
        paths = list(tracked(map(_ravel_one, images), progress))
    targets = np.zeros((len(paths), params.lines + 1), dtype=np.int16)
    for row, path in enumerate(paths):
        targets[row] = path
    buffer = io.BytesIO()
    np.save(buffer, targets, allow_pickle=False)
    with atomic_write(out_path, "wb") as handle:
        handle.write(buffer.getvalue())
    return len(paths)
