"""Stage ravel: the string-art target of every resized image of one shard.

The targets are computed from the decoded stored JPEG, not from the source, so a
Tangler record's target matches its image bit for bit. Chord tables are built once in
the parent and inherited by the forked pool workers.
"""

from __future__ import annotations

import io
import multiprocessing

import numpy as np

from imgprep.atomic import atomic_write
from imgprep.ravel import kernel_tables, ravel
from imgprep.resize import read_resized

_PARAMS: dict = {}


def decode_gray(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        if image.mode != "L" or image.width != image.height:
            raise ValueError(f"ravel needs square gray images, got {image.mode} {image.size}")
        return np.asarray(image)


def _ravel_one(data: bytes) -> np.ndarray:
    return ravel(decode_gray(data), **_PARAMS)


def ravel_shard(tar_path, out_path, params: dict, threads: int = 1) -> int:
    """Write an int16 ``.npy`` [images, lines + 1]: row r is the path of the r-th image of
    the tar (position order, as the resize meta lists them). Returns the image count."""
    global _PARAMS
    _PARAMS = {
        "pins": params["pins"],
        "lines": params["lines"],
        "weight": params["weight"],
        "frame": params["frame"],
        "oversample": params["oversample"],
    }
    images = [data for _, data in read_resized(tar_path)]
    if images:
        kernel_tables(params["pins"], decode_gray(images[0]).shape[0])  # once, before fork
    if threads > 1 and len(images) > 1:
        with multiprocessing.get_context("fork").Pool(threads) as pool:
            paths = pool.map(_ravel_one, images, chunksize=max(1, len(images) // (4 * threads)))
    else:
        paths = [_ravel_one(data) for data in images]
    targets = np.zeros((len(paths), params["lines"] + 1), dtype=np.int16)
    for row, path in enumerate(paths):
        targets[row] = path
    buffer = io.BytesIO()
    np.save(buffer, targets, allow_pickle=False)
    with atomic_write(out_path, "wb") as handle:
        handle.write(buffer.getvalue())
    return len(paths)
