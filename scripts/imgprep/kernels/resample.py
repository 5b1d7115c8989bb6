"""Resampling: Pillow's filters as exact banded float32 matrix products. Long because: the
weights, their exact quantization, the block layout and the two GEMM passes are one
algorithm whose parts only make sense beside each other.

- Same kernels, same pixel-centre convention as Pillow, but run as banded matrix
  products in BLAS instead of Pillow's scalar loops.
- The second product also mixes channels (RGB -> Y, RGB -> CbCr) and averages output
  pixel pairs, so JPEG's colour conversion and chroma subsampling come for free.
- Weights are multiples of 2**-bits, small enough that every float32 product and
  sum is exact: results do not depend on the BLAS kernel, CPU or summation order,
  so the same input gives the same bytes on every machine.
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass

import numpy as np

FILTERS = ("nearest", "box", "bilinear", "hamming", "bicubic", "lanczos")


def subsample(plane: np.ndarray, fx: int, fy: int) -> np.ndarray:
    """Average fx x fy blocks (edges replicated, as libjpeg does)."""
    if fy == 2:
        if plane.shape[0] % 2:
            plane = np.concatenate([plane, plane[-1:]], axis=0)
        plane = (plane[0::2] + plane[1::2]) * np.float32(0.5)
    if fx == 2:
        if plane.shape[1] % 2:
            plane = np.concatenate([plane, plane[:, -1:]], axis=1)
        plane = (plane[:, 0::2] + plane[:, 1::2]) * np.float32(0.5)
    return plane


# -- separable resampling as exact banded matrix products ---------------------------
#
# Pass 1 (rows) multiplies a banded (out_h x in_h) matrix into the interleaved
# pixels (in_h x in_w*C). Pass 2 (columns) multiplies the result by a banded
# (in_w*C x out_w*k) matrix whose entries are horizontal weight x colour mix, so it
# also converts C input channels into k output planes (RGB -> Y, RGB -> CbCr, ...),
# and for subsampled chroma averages output pixel pairs. Each band is cut into
# blocks of outputs that need only a short run of inputs; every block is one small
# GEMM.

_KERNEL_SUPPORT = {"box": 0.5, "bilinear": 1.0, "hamming": 1.0, "bicubic": 2.0, "lanczos": 3.0}
_EXACT = 2.0**24  # float32 holds every integer below this exactly
# work per BLAS call kept below where OpenBLAS would go multi-threaded, for processes
# that imported numpy before OPENBLAS_NUM_THREADS was set above
_MNK_LIMIT = 2**18
_CALL_SECONDS = 3e-6  # measured cost of one small numpy matmul call ...
_MAC_SECONDS = 1 / 3.5e10  # ... and of one multiply-add inside it


def _kernel(name: str, x: np.ndarray) -> np.ndarray:
    """Pillow's filter kernels (support in _KERNEL_SUPPORT)."""
    ax = np.abs(x)
    if name == "box":
        return ((x > -0.5) & (x <= 0.5)).astype(np.float64)
    if name == "bilinear":
        return np.maximum(0.0, 1.0 - ax)
    if name == "hamming":
        return np.where(ax < 1.0, np.sinc(x) * (0.54 + 0.46 * np.cos(np.pi * x)), 0.0)
    if name == "bicubic":  # Keys, a = -0.5
        a = -0.5
        near = ((a + 2) * ax - (a + 3)) * ax * ax + 1
        far = (((ax - 5) * ax + 8) * ax - 4) * a
        return np.where(ax < 1, near, np.where(ax < 2, far, 0.0))
    return np.where(ax < 3.0, np.sinc(x) * np.sinc(x / 3.0), 0.0)  # lanczos


@functools.lru_cache(maxsize=1024)
def _axis_weights(in_size: int, lo: float, hi: float, out_size: int, name: str):
    """Normalized real weights: output i = sum_t weights[i, t] * input[first[i] + t]."""
    step = (hi - lo) / out_size
    centers = lo + (np.arange(out_size) + 0.5) * step
    if name == "nearest":
        first = np.clip(np.floor(centers).astype(np.int64), 0, in_size - 1)
        return first, np.ones((out_size, 1))
    stretch = max(step, 1.0)  # widen the kernel when shrinking: that is the antialiasing
    reach = _KERNEL_SUPPORT[name] * stretch
    first = np.clip(np.floor(centers - reach).astype(np.int64), 0, in_size - 1)
    taps = int(math.ceil(2 * reach)) + 2
    index = first[:, None] + np.arange(taps)
    weights = _kernel(name, (index + 0.5 - centers[:, None]) / stretch)
    weights[index >= in_size] = 0.0
    total = weights.sum(axis=1, keepdims=True)
    if np.any(total == 0):  # cannot happen for these kernels; fall back to nearest
        return _axis_weights(in_size, lo, hi, out_size, "nearest")
    return first, weights / total


def _quantize(real: np.ndarray, target: np.ndarray, bits: int, axis: int) -> np.ndarray:
    """Round weights to multiples of 2**-bits; sums along ``axis`` become ``target``.

    Fixing the sums (on each sum's largest weight) keeps flat areas exact: white
    stays 255 and gray stays neutral.
    """
    unit = float(2**bits)
    q = np.rint(real * unit)
    missing = np.rint(target * unit) - q.sum(axis=axis)
    biggest = np.expand_dims(np.argmax(np.abs(q), axis=axis), axis)
    shape = [1] * q.ndim
    shape[axis] = q.shape[axis]
    q += (np.arange(q.shape[axis]).reshape(shape) == biggest) * np.expand_dims(missing, axis)
    return q / unit


def _exact_weights(real: np.ndarray, target, axis: int, per_output, input_bound: float):
    """Quantize weights as finely as exact float32 sums allow.

    With integer inputs |x| <= input_bound and weights that are multiples of
    2**-bits, every partial sum of one output is a multiple of 2**-bits no larger
    than input_bound * sum|w|; float32 holds it exactly while that times 2**bits
    stays below 2**24. ``target(bits)`` is what the weights sum to along ``axis``;
    ``per_output(|w|)`` sums |w| for each output. Returns (weights, max sum|w|).
    """
    bound = max(input_bound * per_output(real) * 1.01, 1.0)  # rounding adds a little
    for bits in range(min(16, int(math.log2(_EXACT / bound))), 4, -1):
        weights = _quantize(real, target(bits), bits, axis)
        abs_sum = per_output(weights)
        if input_bound * abs_sum * 2.0**bits < _EXACT:
            return weights, abs_sum
    raise ValueError("resampling weights too large for exact float32 arithmetic")


def _pick_block(first: list[int], last: list[int], work_per_tap: float) -> int:
    """Outputs per GEMM block: few calls vs. little wasted work on the band's edges."""
    n = len(first)
    best = None
    for size in (4, 6, 8, 12, 16, 24, 32, 64):
        span = sum(last[min(i + size, n) - 1] - first[i] for i in range(0, n, size))
        cost = -(-n // size) * _CALL_SECONDS + span * size * work_per_tap * _MAC_SECONDS
        if best is None or cost < best[0]:
            best = (cost, size)
        if size >= n:
            break
    return best[1]


@dataclass(frozen=True)
class _Band:
    """One axis's banded weight matrix cut into GEMM blocks.

    blocks: (out0, out1, in0, in1, matrix) with inputs relative to ``lo``; matrices
    are (out, in) for rows, (k, in*C, out) for columns.
    """

    lo: int
    hi: int
    blocks: tuple
    block_work: int  # largest matrix size: long passes are cut to stay under _MNK_LIMIT
    calls: tuple  # (output index, input index, matrix) per block, ready to use


@dataclass(frozen=True)
class _Layout:
    """Blocks of ``size`` consecutive outputs and the input run [in0, in1) each needs."""

    size: int
    edges: np.ndarray  # first output of each block
    in0: np.ndarray
    in1: np.ndarray
    n: int

    @classmethod
    def plan(cls, first: np.ndarray, real: np.ndarray, work_per_tap: float) -> _Layout:
        nonzero = real != 0
        start = first + nonzero.argmax(axis=1)
        stop = first + real.shape[1] - nonzero[:, ::-1].argmax(axis=1)
        size = _pick_block(start.tolist(), stop.tolist(), work_per_tap)
        edges = np.arange(0, len(first), size)
        return cls(
            size, edges, np.minimum.reduceat(start, edges), np.maximum.reduceat(stop, edges),
            len(first),
        )  # fmt: skip

    @property
    def width(self) -> int:
        return int((self.in1 - self.in0).max())

    def dense(self, first: np.ndarray, real: np.ndarray) -> np.ndarray:
        """Real weights scattered into (blocks, size, width): one small matrix per block."""
        o, t = np.nonzero(real)
        block = o // self.size
        dense = np.zeros((len(self.edges), self.size, self.width))
        dense[block, o % self.size, first[o] + t - self.in0[block]] = real[o, t]
        return dense

    def valid(self) -> np.ndarray:
        """(blocks, size): which slots hold a real output (the last block may be short)."""
        return (self.edges[:, None] + np.arange(self.size)) < self.n

    def band(self, matrices: np.ndarray, rows: bool, channels: int = 1) -> _Band:
        lo, hi = int(self.in0.min()), int(self.in1.max())
        blocks = []
        for index, out0 in enumerate(self.edges.tolist()):
            out1 = min(self.n, out0 + self.size)
            in0, in1 = int(self.in0[index]), int(self.in1[index])
            if rows:
                matrix = matrices[index, : out1 - out0, : in1 - in0]
            else:
                matrix = matrices[index, :, : (in1 - in0) * channels, : out1 - out0]
            blocks.append((out0, out1, in0 - lo, in1 - lo, matrix))
        if rows:
            calls = tuple((slice(b[0], b[1]), slice(b[2], b[3]), b[4]) for b in blocks)
        else:
            calls = tuple(
                ((slice(None), slice(None), slice(b[0], b[1])), _slice2(b[2], b[3], channels), b[4])
                for b in blocks
            )
        return _Band(lo, hi, tuple(blocks), max(b[4].size for b in blocks), calls)


def _slice2(start: int, stop: int, channels: int):
    return (slice(None), slice(start * channels, stop * channels))


def _rows_bound(in_size: int, lo: float, hi: float, out_size: int, name: str) -> float:
    """Largest |value| the first product can give (rounded): 255 * sum|w|, plus the
    little that quantizing the weights can add (checked in _rows_band)."""
    real = _axis_weights(in_size, lo, hi, out_size, name)[1]
    return 255.0 * (float(np.abs(real).sum(axis=1).max()) + 0.01) + 0.5


@functools.lru_cache(maxsize=128)
def _rows_band(in_size: int, lo: float, hi: float, out_size: int, name: str, row_len: int):
    """Vertical weights on uint8 rows: blocks of (outputs x input rows) matrices."""
    first, real = _axis_weights(in_size, lo, hi, out_size, name)
    layout = _Layout.plan(first, real, row_len)
    dense = layout.dense(first, real)
    weights, abs_sum = _exact_weights(
        dense,
        lambda bits: layout.valid().astype(np.float64),
        -1,
        lambda w: float(np.abs(w).sum(axis=2).max()),
        255.0,
    )
    if 255.0 * abs_sum + 0.5 > _rows_bound(in_size, lo, hi, out_size, name):
        raise ValueError("quantized weights exceed the planned bound")
    return layout.band(weights.astype(np.float32), rows=True)


@functools.lru_cache(maxsize=128)
def _cols_band(
    in_size: int,
    lo: float,
    hi: float,
    out_size: int,
    name: str,
    mixes: tuple,
    pair: int,
    rows_scale: float,
    input_bound: float,
    work_rows: int,
):
    """Horizontal weights x colour mixes; pair=2 averages output pixel pairs (chroma).

    Matrix entry [(x, c), (o, j)] = horizontal weight of input x for output o times
    the coefficient of channel c in plane j: one product resamples and converts.
    """
    first, real = _axis_weights(in_size, lo, hi, out_size, name)
    if pair == 2:
        first, real = _pair_average(first, real)
    mix = np.array(mixes, np.float64) * rows_scale  # (k, C)
    k, channels = mix.shape
    layout = _Layout.plan(first, real, work_rows * channels * k)
    # (blocks, k, C, size, width): the axis to quantize along (width) comes last
    combined = layout.dense(first, real)[:, None, None] * mix[None, :, :, None, None]
    valid = layout.valid()[:, None, None, :]

    def target(bits):
        """Every (output, plane, channel) sums to the quantized colour coefficient,
        whose rows sum exactly in turn: Y of white is 255, Cb and Cr of gray are 0."""
        mix_q = _quantize(mix, mix.sum(axis=1), bits, axis=1)
        return mix_q[None, :, :, None] * valid

    def per_output(w):
        return float(np.abs(w).sum(axis=(2, 4)).max())

    weights, _ = _exact_weights(combined, target, -1, per_output, input_bound)
    # GEMM layout (blocks, k, width * C, size): row x * C + c meets interleaved pixels
    matrices = weights.transpose(0, 1, 4, 2, 3).astype(np.float32, order="C")
    shape = (len(layout.edges), k, layout.width * channels, layout.size)
    return layout.band(matrices.reshape(shape), rows=False, channels=channels)


def _pair_average(first: np.ndarray, real: np.ndarray):
    """Weights of the mean of outputs 2q and 2q+1 (the last one repeated if odd)."""
    n, taps = real.shape
    a = np.arange(0, n, 2)
    b = np.minimum(a + 1, n - 1)
    shift = first[b] - first[a]
    out = np.zeros((len(a), taps + int(shift.max())))
    out[:, :taps] = 0.5 * real[a]
    out[np.arange(len(a))[:, None], shift[:, None] + np.arange(taps)] += 0.5 * real[b]
    return first[a], out


def resample(pixels: np.ndarray, box, size, name: str, groups):
    """Resample ``box`` of (h, w, C) uint8 pixels to ``size`` (w, h).

    groups: (mixes, fx, fy) each; yields a float32 (k, h/fy, w/fx) stack per group
    holding exact values: plane j = sum_c mixes[j][c] * channel c, and with fx/fy = 2
    averaged over output pixel pairs (JPEG chroma subsampling).
    """
    height, width, channels = pixels.shape
    out_w, out_h = size
    x0, y0, x1, y1 = box
    # bound of the first product's (rounded) values: sets the second one's precision
    mid_bound = _rows_bound(height, y0, y1, out_h, name)
    cols = [
        _cols_band(
            width,
            x0,
            x1,
            out_w,
            name,
            mixes,
            fx,
            0.5 if fy == 2 else 1.0,
            mid_bound * fy,
            -(-out_h // fy),
        )
        for mixes, fx, fy in groups
    ]
    xs = min(band.lo for band in cols)
    xe = max(band.hi for band in cols)
    rows = _rows_band(height, y0, y1, out_h, name, (xe - xs) * channels)
    region = pixels[rows.lo : rows.hi, xs:xe]
    source = _scratch("source", region.shape)
    np.copyto(source, region, casting="unsafe")
    source = source.reshape(rows.hi - rows.lo, -1)
    mid = _rows_pass(source, rows, out_h)
    np.rint(mid, out=mid)  # integers again, so the second product is exact too
    paired = None
    for (_, _, fy), band in zip(groups, cols, strict=True):
        src = mid
        if fy == 2:
            if paired is None:
                paired = _pair_rows(mid)
            src = paired
        offset = (band.lo - xs) * channels
        yield _cols_pass(src[:, offset : offset + (band.hi - band.lo) * channels], band, channels)


_SCRATCH = threading.local()


def _scratch(name: str, shape) -> np.ndarray:
    """Reusable float32 work array (one set per thread): fresh large arrays cost page
    faults on every image."""
    need = math.prod(shape)
    buffer = getattr(_SCRATCH, name, None)
    if buffer is None or buffer.size < need:
        buffer = np.empty(max(need, 1 << 16), np.float32)
        setattr(_SCRATCH, name, buffer)
    return buffer[:need].reshape(shape)


def _pair_rows(mid: np.ndarray) -> np.ndarray:
    """Sums of row pairs (the last row doubled if odd): vertical chroma subsampling."""
    n = mid.shape[0]
    out = _scratch("paired", ((n + 1) // 2, mid.shape[1]))
    np.add(mid[0 : n - 1 : 2], mid[1::2], out=out[: n // 2])
    if n % 2:
        np.multiply(mid[-1], np.float32(2.0), out=out[-1])
    return out


def _rows_pass(source: np.ndarray, band: _Band, out_h: int) -> np.ndarray:
    n = source.shape[1]
    out = _scratch("mid", (out_h, n))
    strip = max(64, _MNK_LIMIT // band.block_work)
    if strip >= n:  # whole rows: np.dot (less call overhead) can write them in place
        for out_rows, in_rows, matrix in band.calls:
            np.dot(matrix, source[in_rows], out=out[out_rows])
        return out
    for c0 in range(0, n, strip):
        c1 = min(n, c0 + strip)
        for out0, out1, in0, in1, matrix in band.blocks:
            np.matmul(matrix, source[in0:in1, c0:c1], out=out[out0:out1, c0:c1])
    return out


def _cols_pass(source: np.ndarray, band: _Band, channels: int) -> np.ndarray:
    rows = source.shape[0]
    k = band.blocks[0][4].shape[0]
    n_out = band.blocks[-1][1]
    out = np.empty((k, rows, n_out), np.float32)
    strip = max(8, _MNK_LIMIT // band.block_work)
    if strip >= rows:
        for out_index, in_index, matrix in band.calls:
            np.matmul(source[in_index], matrix, out=out[out_index])
        return out
    for r0 in range(0, rows, strip):
        r1 = min(rows, r0 + strip)
        for out0, out1, in0, in1, matrix in band.blocks:
            np.matmul(
                source[r0:r1, in0 * channels : in1 * channels],
                matrix,
                out=out[:, r0:r1, out0:out1],
            )
    return out
