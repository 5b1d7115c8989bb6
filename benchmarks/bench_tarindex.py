"""Listing a tar of tars in place: imgprep's header parser, tarfile, and the listing cache.

Builds a synthetic ILSVRC-train-like tar of tars (default 200 inner tars x 500 members
of small payloads, about 100k members) in a temporary folder under /tmp, then times:

- ``list_tar(nested=True)``, the parser imgprep uses, with the tar in the page cache;
- the same listing through the tarfile module (one TarFile per inner tar), checked to
  give the same members;
- ``list_tar`` again after evicting the tar from the page cache (posix_fadvise
  DONTNEED): a cold-disk number, but only as sparse as the payloads make the headers;
- ``cached_list_tar`` building its cache, then loading it (warm).

    .venv/bin/python benchmarks/bench_tarindex.py [--inner 200] [--members 500]
        [--payload 600] [--repeats 3]

Prints members/s and extrapolates to ImageNet's 1,281,167 training images; writes
benchmarks/out/tarindex.json. Exits 1 when the extrapolated warm cache load is 2 s or more.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from imgprep.atomic import atomic_write  # noqa: E402
from imgprep.tarindex import cached_list_tar, list_tar  # noqa: E402

OUT = REPO / "benchmarks" / "out" / "tarindex.json"
IMAGENET_TRAIN = 1_281_167
TARGET_LOAD_S = 2.0


def build(path: Path, inner: int, members: int, payload: int) -> int:
    """Write the tar of tars; payload sizes vary around ``payload`` bytes (seeded)."""
    rng = random.Random(0)
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as outer:
        for c in range(inner):
            wnid = f"n{c:08d}"
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
                for i in range(members):
                    size = rng.randint(payload // 2, payload * 3 // 2)
                    info = tarfile.TarInfo(f"{wnid}_{10000 + i}.JPEG")
                    info.size = size
                    info.mtime = 1_300_000_000
                    tar.addfile(info, io.BytesIO(bytes(size)))
            info = tarfile.TarInfo(f"{wnid}.tar")
            info.size = buffer.tell()
            info.mtime = 1_300_000_000
            buffer.seek(0)
            outer.addfile(info, buffer)
    return inner * members


def tarfile_nested(path: Path) -> list[tuple[str, int, int]]:
    """The alternative: tarfile over the outer tar, and over each inner one in place."""
    found = []
    with (
        open(path, "rb") as handle,
        open(path, "rb") as inner_handle,
        tarfile.open(fileobj=handle, mode="r:") as outer,
    ):
        for info in outer:
            if not info.isreg():
                continue
            if not info.name.lower().endswith(".tar"):
                found.append((info.name, info.offset_data, info.size))
                continue
            inner_handle.seek(info.offset_data)  # inner offsets come out absolute
            with tarfile.open(fileobj=inner_handle, mode="r:") as inner:
                prefix = info.name + "/"
                found += [(prefix + m.name, m.offset_data, m.size) for m in inner if m.isreg()]
    return found


def timed(function, repeats: int) -> tuple[float, float, object]:
    """Median wall and CPU seconds over ``repeats`` calls, and the last result.

    CPU seconds too: on a shared machine they stay close to what a quiet one would take.
    """
    walls, cpus = [], []
    result = None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = function()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus), result


def evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inner", type=int, default=200)
    parser.add_argument("--members", type=int, default=500)
    parser.add_argument("--payload", type=int, default=600, help="mean payload bytes")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench_tarindex.", dir="/tmp") as tmp:
        tar_path = Path(tmp) / "train.tar"
        cache_dir = Path(tmp) / "cache"
        t = time.perf_counter()
        count = build(tar_path, args.inner, args.members, args.payload)
        build_s = time.perf_counter() - t
        tar_bytes = tar_path.stat().st_size

        list_tar(tar_path, nested=True)  # page cache warm
        parse = timed(lambda: list_tar(tar_path, nested=True), args.repeats)
        with_tarfile = timed(lambda: tarfile_nested(tar_path), args.repeats)
        ours, theirs = parse[2], with_tarfile[2]
        same = [tuple(m) for m in ours] == theirs and len(ours) == count
        evict(tar_path)
        cold_disk = timed(lambda: list_tar(tar_path, nested=True), 1)

        building = timed(lambda: cached_list_tar(tar_path, True, cache_dir), 1)
        (cache_file,) = cache_dir.iterdir()
        cache_bytes = cache_file.stat().st_size
        load = timed(lambda: cached_list_tar(tar_path, True, cache_dir), max(args.repeats, 5))
        same = same and load[2] == ours

    def per_second(seconds: float) -> float:
        return count / seconds

    def at_imagenet(seconds: float) -> float:
        return seconds * IMAGENET_TRAIN / count

    rows = {
        "list_tar": ("list_tar (page cache warm)", parse),
        "tarfile": ("tarfile, for comparison", with_tarfile),
        "list_tar_cold_disk": ("list_tar (evicted, cold disk)", cold_disk),
        "cache_build": ("cached_list_tar, building", building),
        "cache_load": ("cached_list_tar, warm load", load),
    }
    print(
        f"{count} members in {args.inner} inner tars, {tar_bytes / 1e6:.0f} MB tar "
        f"(built in {build_s:.1f} s); cache file {cache_bytes / 1e6:.1f} MB"
    )
    print(f"{'':<32}{'wall s':>8}{'cpu s':>8}{'members/s':>12}{'at 1.28M':>10}")
    for label, (wall, cpu, _) in rows.values():
        line = f"{wall:>8.3f}{cpu:>8.3f}{per_second(wall):>12,.0f}{at_imagenet(wall):>9.2f}s"
        print(f"{label:<32}{line}")
    print(f"{'tarfile / list_tar':<32}{with_tarfile[0] / parse[0]:>8.1f}x")
    print(f"{'list_tar / warm cache load':<32}{parse[0] / load[0]:>8.1f}x")
    print(f"same listing from all three: {same}")

    extrapolated_load_s = at_imagenet(load[0])
    passed = same and extrapolated_load_s < TARGET_LOAD_S
    report = {
        "members": count,
        "inner_tars": args.inner,
        "members_per_inner": args.members,
        "payload_mean_bytes": args.payload,
        "tar_bytes": tar_bytes,
        "cache_bytes": cache_bytes,
        "repeats": args.repeats,
        "machine": platform.machine(),
        "python": platform.python_version(),
        **{f"{key}_wall_s": wall for key, (_, (wall, _, _)) in rows.items()},
        **{f"{key}_cpu_s": cpu for key, (_, (_, cpu, _)) in rows.items()},
        "list_tar_members_per_s": per_second(parse[0]),
        "cache_load_members_per_s": per_second(load[0]),
        "tarfile_over_list_tar": with_tarfile[0] / parse[0],
        "list_tar_over_cache_load": parse[0] / load[0],
        "imagenet_list_tar_s": at_imagenet(parse[0]),
        "imagenet_cache_load_s": extrapolated_load_s,
        "same_listing": same,
        "target_load_s": TARGET_LOAD_S,
        "passed": passed,
    }
    with atomic_write(OUT, "w") as handle:
        json.dump(report, handle, indent=2)
        handle.write("\n")
    verdict = "meets" if passed else "MISSES"
    print(
        f"warm load extrapolated to {IMAGENET_TRAIN:,} members: {extrapolated_load_s:.2f} s, "
        f"{verdict} the {TARGET_LOAD_S} s target; wrote {OUT}"
    )
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
