"""String art ("raveling"): approximate a gray image by one thread wound around pins.
Long because: the numba kernel, the plain reference it must match bit for bit and the
rules both follow stay in one place so they cannot drift apart.

``k`` pins sit on the circle inscribed in a square ``res`` x ``res`` image. Starting at
pin 0, a greedy loop picks, ``lines`` times, the chord from the current pin that covers
the most remaining darkness, then subtracts the thread's darkness along that chord.
The result is the pin sequence (``lines + 1`` pins).

Rules (each one is exact, so the fast kernel and the plain reference agree bit for bit):

- residual ``p = 1 - byte/255`` per pixel (float64; dark = 1);
- pin ``q``: ``theta = 2*pi*q/k``, ``x = 0.5 + sin(theta)/2``, ``y = 0.5 + cos(theta)/2``,
  column ``int((res-1)*x)``, row ``int((res-1)*y)`` (pin 0 is bottom centre);
- chord between pins ``a < b`` (sampled from ``a`` to ``b``, used for both directions):
  ``R = int(sqrt(dx*dx + dy*dy))`` samples, sample ``s`` at column
  ``int(i_a + s*dx/(R-1))`` and row ``int(j_a + s*dy/(R-1))`` (denominator 1 when
  ``R == 1``); repeated pixels count again;
- thread weight ``w*res/frame/oversample`` in float32, visual weight ``0.7`` times that
  in float64 (``vw``);
- score of a chord: ``vw*(2*sum - vw*R)`` with ``sum`` the residual summed in sample
  order in one float64 accumulator; the current pin is excluded from step 2 on, the
  previous pin from step 3 on; the highest score wins, ties to the lowest pin; then
  ``vw`` is subtracted at every sample of the chosen chord.

The chord tables depend only on ``(pins, res)`` and are built once per process
(:func:`line_tables`); the greedy loop is a numba kernel that sums several chords at
once (one accumulator per chord, each in its own sample order) so the additions overlap,
and skips the chords that cannot win (exactly: see ``_greedy``).
"""

from __future__ import annotations

import functools
import io
import math

import numpy as np

try:  # the kernel needs numba; without it a slower numpy loop gives the same pins
    from numba import njit
except ImportError:  # pragma: no cover - numba is pinned in requirements.txt
    njit = None

__all__ = [
    "adjacency_indices",
    "kernel_tables",
    "line_tables",
    "pin_pixels",
    "ravel",
    "ravel_reference",
    "render_png",
    "render_svg",
    "thread_weights",
]

DEFAULT_PINS = 256
DEFAULT_LINES = 6000
DEFAULT_WEIGHT = 100e-6  # thread width, metres
DEFAULT_FRAME = 0.622  # frame diameter, metres
VISUAL = 0.7  # how dark a thread looks relative to its width


# -- geometry -------------------------------------------------------------------------


def thread_weights(res: int, weight=DEFAULT_WEIGHT, frame=DEFAULT_FRAME, oversample=1):
    """(float32 thread weight, float64 visual weight ``vw``) for an image of side res."""
    tw = np.float32(weight) * np.float32(res) / np.float32(frame) / np.float32(oversample)
    return tw, VISUAL * float(tw)


def pin_pixels(pins: int, res: int) -> tuple[np.ndarray, np.ndarray]:
    """(columns, rows) of the pins, int64 arrays of length ``pins``."""
    cols = np.empty(pins, np.int64)
    rows = np.empty(pins, np.int64)
    for q in range(pins):
        theta = 2 * math.pi * q / pins
        cols[q] = int((res - 1) * (0.5 + math.sin(theta) / 2))
        rows[q] = int((res - 1) * (0.5 + math.cos(theta) / 2))
    return cols, rows


@functools.lru_cache(maxsize=8)
def line_tables(pins: int, res: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chord tables for ``pins`` pins on a ``res`` image, built once per process.

    Returns ``(index, start, length)``: ``index`` holds the flat pixel indices
    (``res*row + col``) of every chord ``a <= b`` in sample order from ``a``;
    ``start[a, b] == start[b, a]`` and ``length[a, b] == length[b, a]`` locate chord
    ``{a, b}`` in it. ``index`` is uint16 when the image has at most 65536 pixels.
    The arrays are read-only.
    """
    if pins < 1 or res < 1:
        raise ValueError(f"need pins >= 1 and res >= 1, got pins={pins}, res={res}")
    cols, rows = pin_pixels(pins, res)
    a, b = np.triu_indices(pins)  # row-major: chords from a are contiguous
    dx = cols[b] - cols[a]
    dy = rows[b] - rows[a]
    length = np.sqrt((dx * dx + dy * dy).astype(np.float64)).astype(np.int64)
    offset = np.zeros(len(a) + 1, np.int64)
    np.cumsum(length, out=offset[1:])
    total = int(offset[-1])
    chord = np.repeat(np.arange(len(a)), length)
    s = (np.arange(total, dtype=np.int64) - offset[chord]).astype(np.float64)
    den = np.maximum(length - 1, 1).astype(np.float64)[chord]
    col = (cols[a][chord].astype(np.float64) + s * dx[chord].astype(np.float64) / den).astype(
        np.int64
    )
    row = (rows[a][chord].astype(np.float64) + s * dy[chord].astype(np.float64) / den).astype(
        np.int64
    )
    dtype = np.uint16 if res * res <= 1 << 16 else np.int32
    index = (res * row + col).astype(dtype)
    start = np.zeros((pins, pins), np.int64)
    size = np.zeros((pins, pins), np.int64)
    start[a, b] = start[b, a] = offset[:-1]
    size[a, b] = size[b, a] = length
    for array in (index, start, size):
        array.setflags(write=False)
    return index, start, size


def _residual(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2 or image.shape[0] != image.shape[1] or image.dtype != np.uint8:
        raise ValueError(f"need a square uint8 gray image, got {image.dtype} {image.shape}")
    return (1.0 - image.astype(np.float64) / 255.0).ravel()


def _check(pins: int, lines: int) -> None:
    if pins < 3:
        raise ValueError(f"need at least 3 pins, got {pins}")
    if lines < 0:
        raise ValueError(f"need lines >= 0, got {lines}")


# -- the kernel -----------------------------------------------------------------------


LANES = 4  # chords summed side by side (8 is no faster here: loads, not adds, bound it)


def _interleave(index, start, length, dummy, out, gstart, gmax):  # pragma: no cover - jitted
    """Copy the chords from each pin into groups of LANES, sample-interleaved.

    Group ``g`` of pin ``c`` holds chords ``c -> LANES*g + lane``: sample ``t`` of lane
    ``l`` sits at ``gstart[c, g] + LANES*t + l``, shorter chords padded with ``dummy``
    (a pixel whose residual the kernel keeps at 0.0, so padding never changes a sum).
    With ``out`` empty this only sizes the groups and returns the total.
    """
    pins = start.shape[0]
    total = 0
    for c in range(pins):
        for g in range(gstart.shape[1]):
            m = 0
            for lane in range(LANES):
                d = g * LANES + lane
                if d < pins and length[c, d] > m:
                    m = length[c, d]
            gstart[c, g] = total
            gmax[c, g] = m
            total += LANES * m
    if out.size == 0:
        return total
    out[:] = dummy
    for c in range(pins):
        for g in range(gstart.shape[1]):
            base = gstart[c, g]
            for lane in range(LANES):
                d = g * LANES + lane
                if d < pins:
                    o = start[c, d]
                    for t in range(length[c, d]):
                        out[base + LANES * t + lane] = index[o + t]
    return total


def _greedy(grouped, gstart, gmax, index, start, length, residual, lines, vw, path):
    """The greedy loop; fills ``path`` (lines + 1 pins) and updates ``residual``.

    Exact pruning: a chord's sum can only fall as lines are drawn. Every update is
    ``r = fl(r - vw)`` with ``vw > 0``, so ``r`` never rises; round-to-nearest addition
    is monotone in each operand, so the same samples summed in the same order never give
    more; and ``fl(vw*(2*s - vw*R))`` is monotone in ``s``. So the score a chord had when
    last summed (``bound``, +inf before) is an upper bound on its score now, in the same
    floating-point arithmetic. A group of LANES chords is summed only when one of its
    allowed chords could still beat the best so far (bound > best, or bound == best at a
    lower pin: the tie rule); the group holding the highest bound goes first, the rest in
    pin order (their tables stay streamed in order). The pick is the one the full loop
    makes. ``vw <= 0`` (or not finite) voids the argument: then every group is summed.
    """
    pins = start.shape[0]
    groups = gstart.shape[1]
    prune = vw > 0.0 and vw < np.inf
    bound = np.full((pins, groups * LANES), np.inf)
    cur = 0
    prev = -1
    path[0] = 0
    for step in range(1, lines + 1):
        lrow = length[cur]
        brow = bound[cur]
        first = 0
        top = -np.inf
        for d in range(pins):
            if (step >= 2 and d == cur) or (step >= 3 and d == prev):
                continue
            if brow[d] > top:
                top = brow[d]
                first = d // LANES
        best = -np.inf
        pick = -1
        for turn in range(groups + 1):
            g = first if turn == 0 else turn - 1
            if turn > 0 and g == first:
                continue
            if turn > 0 and prune:
                needed = False
                for d in range(LANES * g, min(LANES * g + LANES, pins)):
                    if (step >= 2 and d == cur) or (step >= 3 and d == prev):
                        continue
                    if brow[d] > best or (brow[d] == best and d < pick):
                        needed = True
                if not needed:
                    continue
            # LANES chords at a time, one accumulator each, each in its own sample order
            base = gstart[cur, g]
            s0 = 0.0
            s1 = 0.0
            s2 = 0.0
            s3 = 0.0
            for t in range(gmax[cur, g]):
                e = base + LANES * t
                s0 += residual[grouped[e]]
                s1 += residual[grouped[e + 1]]
                s2 += residual[grouped[e + 2]]
                s3 += residual[grouped[e + 3]]
            for d in range(LANES * g, min(LANES * g + LANES, pins)):
                lane = d - LANES * g
                s = s0 if lane == 0 else (s1 if lane == 1 else (s2 if lane == 2 else s3))
                score = vw * (2.0 * s - vw * lrow[d])
                bound[cur, d] = score
                bound[d, cur] = score
                if (step >= 2 and d == cur) or (step >= 3 and d == prev):
                    continue
                if score > best or (score == best and d < pick):
                    best = score
                    pick = d
        o = start[cur, pick]
        for t in range(lrow[pick]):
            residual[index[o + t]] -= vw
        prev = cur
        cur = pick
        path[step] = pick


def _greedy_unpruned(grouped, gstart, gmax, index, start, length, residual, lines, vw, path):
    """The previous kernel (every chord summed every step), kept for the benchmark."""
    pins = start.shape[0]
    sums = np.empty(gstart.shape[1] * LANES, np.float64)
    cur = 0
    prev = -1
    path[0] = 0
    for step in range(1, lines + 1):
        # LANES chords at a time, one accumulator each, each in its own sample order
        for g in range(gstart.shape[1]):
            base = gstart[cur, g]
            s0 = 0.0
            s1 = 0.0
            s2 = 0.0
            s3 = 0.0
            for t in range(gmax[cur, g]):
                e = base + LANES * t
                s0 += residual[grouped[e]]
                s1 += residual[grouped[e + 1]]
                s2 += residual[grouped[e + 2]]
                s3 += residual[grouped[e + 3]]
            sums[LANES * g] = s0
            sums[LANES * g + 1] = s1
            sums[LANES * g + 2] = s2
            sums[LANES * g + 3] = s3
        lrow = length[cur]
        best = -np.inf
        pick = -1
        for d in range(pins):
            if (step >= 2 and d == cur) or (step >= 3 and d == prev):
                continue
            score = vw * (2.0 * sums[d] - vw * lrow[d])
            if score > best:
                best = score
                pick = d
        o = start[cur, pick]
        for t in range(lrow[pick]):
            residual[index[o + t]] -= vw
        prev = cur
        cur = pick
        path[step] = pick


def _greedy_numpy(index, start, length, residual, lines, vw, path):
    """Fallback without numba: the same sums, summed chord by chord in Python."""
    pins = start.shape[0]
    cur, prev = 0, -1
    path[0] = 0
    for step in range(1, lines + 1):
        best, pick = -math.inf, -1
        for d in range(pins):
            if (step >= 2 and d == cur) or (step >= 3 and d == prev):
                continue
            o, n = start[cur, d], length[cur, d]
            total = 0.0
            for value in residual[index[o : o + n]].tolist():
                total += value
            score = vw * (2.0 * total - vw * float(n))
            if score > best:
                best, pick = score, d
        o, n = start[cur, pick], length[cur, pick]
        for pixel in index[o : o + n].tolist():
            residual[pixel] -= vw
        prev, cur = cur, pick
        path[step] = pick


if njit is not None:
    _interleave_jit = njit(cache=True, nogil=True)(_interleave)
    _kernel = njit(cache=True, nogil=True)(_greedy)
    _kernel_unpruned = njit(cache=True, nogil=True)(_greedy_unpruned)
else:  # pragma: no cover
    _interleave_jit = _kernel = _kernel_unpruned = None


TILE = (8, 64)  # rows x columns of pixels the kernel keeps together: 4 KiB of float64


def tiled_order(res: int) -> np.ndarray:
    """Where each pixel (row-major index) sits in the kernel's residual: tiles of TILE,
    row-major inside a tile and tile by tile, so a chord touches fewer memory pages
    (fewer TLB and cache misses; the sums are the same numbers in the same order).
    One more entry maps ``res*res``, the spare slot past the image, to itself."""
    rows, cols = np.divmod(np.arange(res * res, dtype=np.int64), res)
    height, width = TILE
    across = -(-res // width)
    key = ((rows // height) * across + cols // width) * (height * width)
    key += (rows % height) * width + cols % width
    order = np.empty(res * res + 1, np.int64)
    order[np.argsort(key, kind="stable")] = np.arange(res * res)
    order[res * res] = res * res
    return order


@functools.lru_cache(maxsize=8)
def kernel_tables(pins: int, res: int, tiled: bool = True) -> tuple:
    """The kernel's tables, built once per process (the ravel stage calls this before it
    forks); what they are is internal to this module.

    ``(grouped, gstart, gmax, dummy, index, order)``: the chords of :func:`line_tables`
    regrouped (see ``_interleave``) and ``index`` itself, both as positions in the
    residual laid out by ``order`` (:func:`tiled_order`); ``dummy`` is the position of a
    pixel no chord samples (or of ``res*res``, one past the image), kept at 0.0.
    ``tiled=False`` keeps the row-major layout (the previous kernel's, for the benchmark).
    """
    index, start, length = line_tables(pins, res)
    unused = np.flatnonzero(np.bincount(index.astype(np.int64), minlength=res * res) == 0)
    dummy = int(unused[0]) if unused.size else res * res
    order = tiled_order(res) if tiled else np.arange(res * res + 1, dtype=np.int64)
    dtype = index.dtype if order[dummy] < 1 << 16 else np.int32
    tiled = order[index].astype(dtype)
    dummy = int(order[dummy])
    groups = -(-pins // LANES)
    gstart = np.empty((pins, groups), np.int64)
    gmax = np.empty((pins, groups), np.int64)
    total = _interleave_jit(tiled, start, length, dummy, np.empty(0, dtype), gstart, gmax)
    grouped = np.empty(total, dtype)
    _interleave_jit(tiled, start, length, dummy, grouped, gstart, gmax)
    for array in (grouped, gstart, gmax, tiled, order):
        array.setflags(write=False)
    return grouped, gstart, gmax, dummy, tiled, order


def ravel(
    image: np.ndarray,
    pins: int = DEFAULT_PINS,
    lines: int = DEFAULT_LINES,
    weight: float = DEFAULT_WEIGHT,
    frame: float = DEFAULT_FRAME,
    oversample: int = 1,
) -> np.ndarray:
    """Pin sequence (int64, ``lines + 1`` pins starting at 0) for a square uint8 image."""
    return _ravel(image, pins, lines, weight, frame, oversample, _kernel)


def _ravel(image, pins, lines, weight, frame, oversample, kernel, tiled=True):
    """:func:`ravel` with a chosen numba kernel and layout (the benchmark times the
    previous kernel: unpruned, row-major)."""
    _check(pins, lines)
    residual = _residual(image)
    res = int(np.asarray(image).shape[0])
    index, start, length = line_tables(pins, res)
    _, vw = thread_weights(res, weight, frame, oversample)
    path = np.empty(lines + 1, np.int64)
    if _kernel is None:  # pragma: no cover - numba is pinned in requirements.txt
        _greedy_numpy(index, start, length, residual, lines, vw, path)
        return path
    grouped, gstart, gmax, dummy, tiled, order = kernel_tables(pins, res, tiled)
    work = np.zeros(res * res + 1, np.float64)  # one spare entry past the image
    work[order[: res * res]] = residual
    work[dummy] = 0.0
    kernel(grouped, gstart, gmax, tiled, start, length, work, lines, vw, path)
    return path


# -- reference ------------------------------------------------------------------------


def ravel_reference(
    image: np.ndarray,
    pins: int = DEFAULT_PINS,
    lines: int = DEFAULT_LINES,
    weight: float = DEFAULT_WEIGHT,
    frame: float = DEFAULT_FRAME,
    oversample: int = 1,
) -> list[int]:
    """The rules as plain Python loops, slow and obvious: for tests only."""
    _check(pins, lines)
    res = len(image)
    residual = [1.0 - int(byte) / 255.0 for row in np.asarray(image).tolist() for byte in row]
    tw = np.float32(weight) * np.float32(res) / np.float32(frame) / np.float32(oversample)
    vw = 0.7 * float(tw)

    def pin(q):
        theta = 2 * math.pi * q / pins
        return int((res - 1) * (0.5 + math.sin(theta) / 2)), int(
            (res - 1) * (0.5 + math.cos(theta) / 2)
        )

    def chord(p, q):
        a, b = min(p, q), max(p, q)
        (ia, ja), (ib, jb) = pin(a), pin(b)
        dx, dy = ib - ia, jb - ja
        n = int(math.sqrt(dx * dx + dy * dy))
        den = n - 1 if n > 1 else 1
        return [res * int(ja + s * dy / den) + int(ia + s * dx / den) for s in range(n)]

    path = [0]
    for step in range(1, lines + 1):
        cur = path[-1]
        prev = path[-2] if len(path) >= 2 else None
        best, pick = None, None
        for d in range(pins):
            if step >= 2 and d == cur:
                continue
            if step >= 3 and d == prev:
                continue
            total = 0.0
            pixels = chord(cur, d)
            for pixel in pixels:
                total += residual[pixel]
            score = vw * (2 * total - vw * len(pixels))
            if best is None or score > best:
                best, pick = score, d
        for pixel in chord(cur, pick):
            residual[pixel] -= vw
        path.append(pick)
    return path


# -- outputs --------------------------------------------------------------------------


def adjacency_indices(path, pins: int) -> np.ndarray:
    """uint8 [sparsity, 2] (row, col) indices of the nonzeros of tril(A), row-major.

    ``A`` is the symmetric 0/1 pin adjacency of the path: ``A[a, b] = A[b, a] = 1`` for
    every consecutive pair. The order is the one ``tf.sparse.from_dense`` gives.
    """
    if not 1 <= pins <= 256:
        raise ValueError(f"uint8 indices need 1 <= pins <= 256, got {pins}")
    path = np.asarray(path, np.int64)
    adjacency = np.zeros((pins, pins), bool)
    if len(path) >= 2:
        a, b = path[:-1], path[1:]
        adjacency[np.maximum(a, b), np.minimum(a, b)] = True
    rows, cols = np.nonzero(adjacency)  # lower triangle only, row-major order
    return np.stack([rows, cols], axis=1).astype(np.uint8)


def render_svg(path, pins: int, size: int = 512, stroke: float = 0.25) -> str:
    """An SVG drawing of the thread: a polyline through the pins on a white disc."""
    half = size / 2
    points = []
    for q in np.asarray(path).tolist():
        theta = 2 * math.pi * q / pins
        points.append(f"{half + half * math.sin(theta):.2f},{half + half * math.cos(theta):.2f}")
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" '
        f'viewBox="0 0 {size} {size}">'
        f'<rect width="{size}" height="{size}" fill="white"/>'
        f'<polyline fill="none" stroke="black" stroke-width="{stroke}" '
        f'points="{" ".join(points)}"/></svg>'
    )


def render_png(
    path,
    pins: int,
    res: int,
    weight: float = DEFAULT_WEIGHT,
    frame: float = DEFAULT_FRAME,
    oversample: int = 1,
) -> bytes:
    """A gray PNG (res x res) of the thread: each chord darkens its samples by ``vw``."""
    from PIL import Image

    index, start, length = line_tables(pins, res)
    _, vw = thread_weights(res, weight, frame, oversample)
    darkness = np.zeros(res * res, np.float64)
    path = np.asarray(path, np.int64)
    for a, b in zip(path[:-1].tolist(), path[1:].tolist(), strict=True):
        o, n = start[a, b], length[a, b]
        np.add.at(darkness, index[o : o + n], vw)
    pixels = np.clip(np.rint(255.0 * (1.0 - darkness)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels.reshape(res, res), "L").save(buffer, "PNG")
    return buffer.getvalue()
