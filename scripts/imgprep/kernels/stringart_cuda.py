"""String art on a GPU: the greedy loop of :mod:`imgprep.kernels.stringart`, many images
per launch, giving the same pins bit for bit.

One CUDA block per image, one thread per candidate chord from the current pin. Each
thread sums its chord's residual in sample order in one float64 accumulator (the CPU
kernel's arithmetic, in its order, so every score is the same double); the block then
picks the best chord with a tree reduction over (score, pin) that sends ties to the
lower pin, as the CPU's strict ``>`` in pin order does; the block's threads subtract
``vw`` along the chosen chord, and the next of the ``lines`` steps starts. All steps run
in one launch.

Exactness on the GPU, where the CPU has no such freedom:

- NVVM contracts ``a*b + c`` into one fused multiply-add unless told otherwise (numba's
  ``cuda.jit`` passes no ``-fma=0``). The score ``vw*(2*sum - vw*R)`` is therefore
  computed from ``vw*R`` made on the host (numpy, the CPU's product); what is left,
  ``2*sum - penalty``, gives the same double fused or not, as ``2*sum`` is exact.
- A chord can sample a pixel twice (in consecutive samples): the update subtracts with
  ``atomic.add(-vw)``, and two subtractions of the same ``vw`` from one pixel give the
  same double in either order.
- Summing without the CPU kernel's padding is the same: its padding adds 0.0.

Needs numba's CUDA target (built into numba 0.68, deprecated there in favour of the
numba-cuda package, whose API is the same for what this uses) and, on a GPU node, an
NVIDIA driver and NVVM + libdevice (README "Ravel on a GPU"). Tested on the CPU with
numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1`` before numba is imported).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence

import numpy as np
from numba import cuda, float64, int32

from imgprep.kernels.stringart import (
    DEFAULT_FRAME,
    DEFAULT_LINES,
    DEFAULT_PINS,
    DEFAULT_WEIGHT,
    _check,
    _residual,
    line_tables,
    thread_weights,
)

__all__ = ["MAX_IMAGES", "chord_table", "gpu_available", "ravel_batch", "ravel_batches"]

# images per launch: 256 px residuals are 0.5 MB each, so 0.5 GB of host and device
# memory; about as many blocks as the largest GPUs hold at once (132 SMs x 8 here)
MAX_IMAGES = 1024
MAX_BLOCK = 1024  # threads per block: CUDA's limit, so at most 1024 pins


def gpu_available() -> bool:
    """Whether numba sees a real CUDA GPU (its simulator does not count)."""
    from numba import config

    return not config.ENABLE_CUDASIM and cuda.is_available()


@functools.lru_cache(maxsize=4)
def chord_table(pins: int, res: int) -> tuple[np.ndarray, np.ndarray]:
    """``(table, length)`` of the chords from each pin, laid out for the GPU.

    ``table[c, t, d]`` is the pixel of sample ``t`` of chord ``{c, d}`` (sampled from the
    lower pin, as :func:`~imgprep.kernels.stringart.line_tables` orders it), so the
    threads of a warp (consecutive ``d``) read consecutive entries; samples past
    ``length[c, d]`` are 0 and never read. Read-only, built once per process.
    """
    index, start, length = line_tables(pins, res)
    longest = int(length.max())
    table = np.zeros((pins, longest, pins), index.dtype)
    samples = np.arange(longest)
    for c in range(pins):
        valid = samples[None, :] < length[c][:, None]  # [d, t]
        where = np.where(valid, start[c][:, None] + samples[None, :], 0)
        table[c] = np.where(valid, index[where], 0).T
    table.setflags(write=False)
    return table, length


@functools.cache
def _kernel(block: int):
    """The greedy kernel for blocks of ``block`` threads (a power of two >= pins).
    (``cuda`` is a module global: the simulator swaps it there for its own.)"""

    @cuda.jit
    def greedy(table, length, start, index, penalty, vw, lines, residual, paths):
        image = cuda.blockIdx.x
        d = cuda.threadIdx.x
        pins = length.shape[0]
        scores = cuda.shared.array(block, float64)
        choices = cuda.shared.array(block, int32)
        pixels = residual[image]
        cur = 0
        prev = -1
        if d == 0:
            paths[image, 0] = 0
        for step in range(1, lines + 1):
            score = -math.inf
            if d < pins and not ((step >= 2 and d == cur) or (step >= 3 and d == prev)):
                total = 0.0
                for t in range(length[cur, d]):
                    total += pixels[table[cur, t, d]]
                score = vw * (2.0 * total - penalty[cur, d])
            scores[d] = score
            choices[d] = d
            cuda.syncthreads()
            half = block // 2
            while half > 0:  # the best (score, lowest pin) ends in slot 0
                if d < half:
                    other = scores[d + half]
                    if other > scores[d] or (other == scores[d] and choices[d + half] < choices[d]):
                        scores[d] = other
                        choices[d] = choices[d + half]
                cuda.syncthreads()
                half //= 2
            pick = choices[0]
            first = start[cur, pick]
            t = d
            while t < length[cur, pick]:
                cuda.atomic.add(pixels, int(index[first + t]), -vw)
                t += block
            cuda.syncthreads()  # updates seen, and slot 0 read, before the next step
            prev = cur
            cur = pick
            if d == 0:
                paths[image, step] = pick

    return greedy


def _block(pins: int) -> int:
    if pins > MAX_BLOCK:
        raise ValueError(f"the GPU kernel takes at most {MAX_BLOCK} pins, got {pins}")
    return 1 << (pins - 1).bit_length()


def ravel_batches(
    images: Sequence[np.ndarray],
    pins: int = DEFAULT_PINS,
    lines: int = DEFAULT_LINES,
    weight: float = DEFAULT_WEIGHT,
    frame: float = DEFAULT_FRAME,
    oversample: int = 1,
    max_images: int = MAX_IMAGES,
) -> Iterator[np.ndarray]:
    """Pin sequences of square uint8 images of one size, ``max_images`` per launch:
    yields an int64 [images of the launch, lines + 1] array per launch, in order.
    Each row equals :func:`imgprep.kernels.stringart.ravel` of its image."""
    _check(pins, lines)
    if not images:
        return
    res = int(np.asarray(images[0]).shape[0])
    if any(np.asarray(image).shape != (res, res) for image in images):
        raise ValueError("the images of one batch must have one size")
    table, length = chord_table(pins, res)
    index, start, _ = line_tables(pins, res)
    _, vw = thread_weights(res, weight, frame, oversample)
    penalty = vw * length.astype(np.float64)  # the CPU's vw*R, made where it makes it
    block = _block(pins)
    kernel = _kernel(block)
    device = [cuda.to_device(np.ascontiguousarray(a)) for a in (table, length, start, index)]
    device.append(cuda.to_device(penalty))
    for first in range(0, len(images), max_images):
        # residuals of one launch at a time: 0.5 MB per 256 px image, host and device
        chunk = np.stack([_residual(image) for image in images[first : first + max_images]])
        residual = cuda.to_device(chunk)
        paths = cuda.device_array((len(chunk), lines + 1), np.int64)
        kernel[len(chunk), block](*device, vw, lines, residual, paths)
        yield paths.copy_to_host()


def ravel_batch(images: Sequence[np.ndarray], **params) -> np.ndarray:
    """int64 [images, lines + 1]: :func:`ravel_batches` of all of them in one array."""
    lines = params.get("lines", DEFAULT_LINES)
    parts = list(ravel_batches(images, **params))
    return np.concatenate(parts) if parts else np.zeros((0, lines + 1), np.int64)
