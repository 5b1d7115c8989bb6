"""Near-duplicate search over 64-bit hashes without comparing all pairs.

Multi-index hashing: split the 64 bits into d + 1 blocks; two hashes at most d bits apart
agree exactly on at least one block (pigeonhole). Per block, sorting the hashes by the
block's value puts every candidate pair into one run of equal values; each candidate's
full distance is checked (a popcount), and a pair is kept only in the first block on
which it agrees, so it is found once. Random 64-bit hashes meet n^2 / 2^(64/(d+1))
candidates per block: 1.33M hashes at d = 4 are ~0.5 G popcounts, ~7 s in numba on one
core (benchmarks/bench_duplicates.py); real hashes cluster, so more.
"""

from __future__ import annotations

import numpy as np

try:
    from numba import njit
except ImportError:  # pragma: no cover - numba is pinned in requirements.txt and the env
    njit = None

__all__ = ["blocks", "brute_force_pairs", "near_pairs"]


def blocks(distance: int) -> list[tuple[int, int]]:
    """(shift, bits) of the distance + 1 blocks the 64 bits are split into, high first."""
    count = distance + 1
    sizes = [64 // count + (i < 64 % count) for i in range(count)]
    out, shift = [], 64
    for size in sizes:
        shift -= size
        out.append((shift, size))
    return out


def _popcount(x):
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)


def _block_pairs(hashes, order, keys, earlier_masks, distance):
    """Pairs (a < b) within runs of equal ``keys`` at most ``distance`` apart that differ
    on every earlier block (found there otherwise). ``hashes`` and ``keys`` are in sorted
    order (contiguous runs: ~3x faster than gathering through ``order``, which maps a
    sorted place to its row)."""
    out = np.empty((1024, 2), np.int64)
    found = 0
    n = keys.shape[0]
    start = 0
    while start < n:
        end = start + 1
        while end < n and keys[end] == keys[start]:
            end += 1
        for i in range(start, end):
            mine = hashes[i]
            for j in range(i + 1, end):
                x = mine ^ hashes[j]
                if _popcount(x) > distance:
                    continue
                first = True
                for m in range(earlier_masks.shape[0]):
                    if (x & earlier_masks[m]) == np.uint64(0):
                        first = False
                        break
                if not first:
                    continue
                if found == out.shape[0]:
                    grown = np.empty((2 * found, 2), np.int64)
                    grown[:found] = out
                    out = grown
                out[found, 0] = min(order[i], order[j])
                out[found, 1] = max(order[i], order[j])
                found += 1
        start = end
    return out[:found]


if njit is not None:
    _popcount = njit(cache=True, inline="always")(_popcount)
    _block_pairs = njit(cache=True, nogil=True)(_block_pairs)


def near_pairs(hashes: np.ndarray, distance: int) -> np.ndarray:
    """(a, b), a < b, sorted, of the hashes at most ``distance`` bits apart (multi-index
    hashing, see the module docstring)."""
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    found = []
    masks = []
    for shift, bits in blocks(distance):
        mask = np.uint64((1 << bits) - 1)
        keys = (hashes >> np.uint64(shift)) & mask
        order = np.argsort(keys, kind="stable").astype(np.int64)
        earlier = np.array(masks, dtype=np.uint64).reshape(-1)
        found.append(_block_pairs(hashes[order], order, keys[order], earlier, distance))
        masks.append(np.uint64(int(mask) << shift))
    pairs = np.concatenate(found) if found else np.empty((0, 2), np.int64)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


def brute_force_pairs(hashes: np.ndarray, distance: int, chunk: int = 2048) -> np.ndarray:
    """The same pairs by comparing all n^2 / 2 (the tests' and benchmark's reference)."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    table = np.array([bin(i).count("1") for i in range(1 << 16)], np.uint8)
    found = []
    for start in range(0, len(hashes), chunk):
        x = hashes[start : start + chunk, None] ^ hashes[None, :]
        bits = sum(table[(x >> np.uint64(s)) & np.uint64(0xFFFF)] for s in (0, 16, 32, 48))
        a, b = np.nonzero(bits <= distance)
        a = a + start
        keep = a < b
        found.append(np.stack([a[keep], b[keep]], axis=1))
    pairs = np.concatenate(found) if found else np.empty((0, 2), np.int64)
    pairs = pairs.astype(np.int64).reshape(-1, 2)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
