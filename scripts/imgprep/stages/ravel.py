"""Stage ravel: the string-art target of every resized image of one shard.

The targets are computed from the decoded stored JPEG, not from the source, so a
Tangler record's target matches its image bit for bit. Chord tables are built once in
the parent and inherited by the forked pool workers. On a GPU (``device.ravel``) the
shard's images are ravelled in batches by kernels/stringart_cuda.py, the same pins.
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

__all__ = ["RavelParams", "decode_gray", "on_gpu", "ravel_shard"]


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


def on_gpu(device: str) -> bool:
    """Whether this job ravels on a GPU: ``device.ravel`` and what numba finds here, on the
    node the job runs on (a submit host cannot tell, so ``gpu`` without one fails here)."""
    if device not in ("auto", "cpu", "gpu"):  # the schema's enum; this for direct callers
        raise ValueError(f"config key 'device.ravel': {device!r} is not auto, cpu or gpu")
    if device == "cpu":
        return False
    from imgprep.kernels import stringart_cuda  # imports numba.cuda: only when asked

    if stringart_cuda.gpu_available():
        return True
    if device == "gpu":
        from numba import config

        if config.ENABLE_CUDASIM:  # the simulator, for tests: slow, but the same pins
            return True
        raise RuntimeError(
            "config key 'device.ravel' is gpu, but numba finds no CUDA GPU on this node "
            "(see README 'Ravel on a GPU'; `python -c \"from numba import cuda; "
            'cuda.detect()"` says why); use auto or cpu to ravel on the CPU'
        )
    return False


def _ravel_one(data: bytes) -> np.ndarray:
    return ravel(decode_gray(data), **dataclasses.asdict(_PARAMS))


def _ravel_on_gpu(images: list[bytes], params: RavelParams, progress: Progress) -> list:
    """The shard's paths from batched GPU launches (MAX_IMAGES images each)."""
    from imgprep.kernels.stringart_cuda import ravel_batches

    paths = []
    gray = [decode_gray(data) for data in images]
    for batch in ravel_batches(gray, **dataclasses.asdict(params)):
        paths.extend(batch)
        progress.advance(len(batch))
    progress.finish()
    return paths


def ravel_shard(
    tar_path, out_path, params: RavelParams, threads: int = 1, device: str = "cpu"
) -> int:
    """Write an int16 ``.npy`` [images, lines + 1]: row r is the path of the r-th image of
    the tar (position order, as the resize meta lists them). Returns the image count.
    ``device`` is ``device.ravel``: the bytes are the same on either."""
    global _PARAMS
    _PARAMS = params
    images = [data for _, data in read_resized(tar_path)]
    gpu = on_gpu(device)
    if images and not gpu:
        kernel_tables(params.pins, decode_gray(images[0]).shape[0])  # once, before fork
    progress = Progress("ravel", len(images))
    if gpu:
        paths = _ravel_on_gpu(images, params, progress)
    elif threads > 1 and len(images) > 1:
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
