"""Duplicate audit at ImageNet's scale: the near-pair search over 1.33M 64-bit hashes, and
what the three hashes cost resize.

1. Search: 1,331,167 random 64-bit hashes (ImageNet's train + validation count) with
   planted near pairs (distance 1..d, ~1000) and exact ones (distance 0, ~200), on rows
   of their own. imgprep.kernels.pairs.near_pairs (multi-index hashing, numba) reports
   recall of the planted pairs (must be 1.0), pairs found that were not planted, time,
   peak memory; beside it a brute force over a 20k subset (both on that subset, and the
   brute force extrapolated quadratically to 1.33M).
2. Resize cost: resize_image alone vs with the audit's keys (source sha256, pixel sha256,
   phash of the stored JPEG) on bench_resize's ImageNet-like photos, one core, by CPU
   time.

    .venv/bin/python benchmarks/bench_duplicates.py [--distances 4 6] [--images 120]
        [--skip-search]

Prints a table, writes benchmarks/out/duplicates.json; exits 1 if a planted pair within
reach was missed.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "benchmarks"))

from imgprep.atomic import atomic_write  # noqa: E402
from imgprep.kernels.pairs import brute_force_pairs, near_pairs  # noqa: E402

OUT = REPO / "benchmarks" / "out" / "duplicates.json"
IMAGES = 1_331_167
SUBSET = 20_000


def planted_hashes(n: int, distance: int, near: int, exact: int, seed: int = 0):
    """n random hashes; ``near`` pairs at 1..distance bits and ``exact`` at 0, each pair
    on two rows of its own. Returns hashes and the planted (a, b) pairs, a < b."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**64 - 1, size=n, dtype=np.uint64, endpoint=True)
    rows = rng.choice(n, size=2 * (near + exact), replace=False).reshape(-1, 2)
    for index, (a, b) in enumerate(rows):
        bits = 0 if index >= near else int(rng.integers(1, max(distance, 1) + 1))
        flips = rng.choice(64, size=bits, replace=False)
        hashes[b] = hashes[a] ^ np.uint64(sum(1 << int(f) for f in flips))
    return hashes, {(min(a, b), max(a, b)) for a, b in rows.tolist()}


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def search(distance: int) -> dict:
    hashes, planted = planted_hashes(IMAGES, distance, near=1000, exact=200)
    rss_before = max_rss_mb()
    tracemalloc.start()
    start = time.perf_counter()
    found = near_pairs(hashes, distance)
    seconds = time.perf_counter() - start
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_after = max_rss_mb()  # numba's allocations are not traced: the process peak too
    pairs = set(map(tuple, found.tolist()))
    reachable = {
        p for p in planted if (int(hashes[p[0]]) ^ int(hashes[p[1]])).bit_count() <= distance
    }
    # the brute force and the search side by side on a subset holding 100 planted pairs
    rows = sorted({r for p in sorted(planted)[:100] for r in p})
    rng = np.random.default_rng(1)
    others = rng.choice(IMAGES, size=SUBSET, replace=False)
    subset = np.unique(np.concatenate([np.array(rows), others]))[:SUBSET]
    small = hashes[subset]
    start = time.perf_counter()
    fast = near_pairs(small, distance)
    fast_seconds = time.perf_counter() - start
    start = time.perf_counter()
    slow = brute_force_pairs(small, distance)
    slow_seconds = time.perf_counter() - start
    return {
        "distance": distance,
        "hashes": IMAGES,
        "planted": len(planted),
        "recall": len(reachable & pairs) / len(reachable),
        "found": len(pairs),
        "not_planted": len(pairs - planted),
        "seconds": round(seconds, 2),
        "peak_traced_mb": round(traced / 2**20, 1),
        "max_rss_mb": round(rss_after, 1),
        "rss_before_mb": round(rss_before, 1),
        "subset": len(small),
        "subset_same_pairs": bool(np.array_equal(fast, slow)),
        "subset_search_s": round(fast_seconds, 3),
        "subset_brute_s": round(slow_seconds, 2),
        "brute_extrapolated_s": round(slow_seconds * (IMAGES / len(small)) ** 2),
    }


def cpu_race(functions: dict, photos: list[bytes], repeats: int) -> dict[str, float]:
    """bench_resize.race by process time: on a machine shared with other work, wall time
    measures the neighbours."""
    from bench_resize import race

    return race(functions, photos, repeats, clock=time.process_time)


def resize_cost(count: int, repeats: int) -> dict:
    from bench_resize import build_photos
    from imgprep.config import section_config
    from imgprep.kernels.phash import duplicate_keys, phash
    from imgprep.kernels.resize import ResizeParams, resize_image

    photos, origin = build_photos(count)
    params = ResizeParams.from_config(section_config("resize", {"size": 256, "upscale": True}))

    def with_keys(data):  # what resize_shard does per image
        duplicate_keys(data, resize_image(data, params, pixels_digest=True))

    def only_phash(data):
        phash(resize_image(data, params).data)

    rates = cpu_race(
        {
            "resize": lambda d: resize_image(d, params),
            "resize + phash": only_phash,
            "resize + 3 keys": with_keys,
        },
        photos,
        repeats,
    )
    return {
        "photos": f"{count} ({origin})",
        "img_per_s": {k: round(v, 1) for k, v in rates.items()},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--distances", type=int, nargs="+", default=[4])
    parser.add_argument("--images", type=int, default=120, help="photos for the resize cost")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-search", action="store_true", help="only the resize cost")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    near_pairs(np.arange(10, dtype=np.uint64), 1)  # numba: compiled (or loaded) once
    compile_s = time.perf_counter() - start
    results = [] if args.skip_search else [search(d) for d in args.distances]
    print(f"near-pair search, {IMAGES:,} hashes (numba load/compile {compile_s:.1f} s)")
    print(
        "d  recall  found  not planted  time s  traced MB  max RSS MB  "
        "| 20k: same  search s  brute s  brute 1.33M (extrapolated)"
    )
    for r in results:
        print(
            f"{r['distance']}  {r['recall']:.3f}   {r['found']:<5}  {r['not_planted']:<11}  "
            f"{r['seconds']:<6}  {r['peak_traced_mb']:<9}  {r['max_rss_mb']:<10}  | "
            f"{str(r['subset_same_pairs']):<5}  {r['subset_search_s']:<8}  "
            f"{r['subset_brute_s']:<7}  "
            f"{r['brute_extrapolated_s'] / 3600:.1f} h"
        )
    cost = resize_cost(args.images, args.repeats)
    base = cost["img_per_s"]["resize"]
    print(f"\nresize cost, one core (CPU time), {cost['photos']}")
    for name, rate in cost["img_per_s"].items():
        print(f"{name:<16} {rate:7.1f} img/s   {1e3 / rate:5.2f} ms   time x{base / rate:.2f}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(OUT, "w") as handle:
        json.dump(
            {"search": results, "resize_cost": cost, "compile_s": compile_s}, handle, indent=1
        )
    return 0 if all(r["recall"] == 1.0 and r["subset_same_pairs"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
