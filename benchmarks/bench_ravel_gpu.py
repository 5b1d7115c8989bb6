"""String art on a GPU against the CPU kernel, on the same images, in one run.

The GPU kernel (kernels/stringart_cuda.py, one block per image, all lines in one launch)
ravels ``--images`` synthetic 256 px images (smooth blobs, gradients and grain, made with
numpy: no image files, no Pillow) at k=256, N=6000; then the same images tiled ``--fill``
times, as one launch of a whole shard would fill a large GPU (64 blocks leave most of
an H200's 132 SMs idle). The CPU kernel ravels the first ``--cpu-images`` of them on one
core; every GPU row is compared with the CPU's (and the tiled rows with the untiled).

    python benchmarks/bench_ravel_gpu.py --images 64     # on a GPU node; numba + numpy only
    python benchmarks/bench_ravel_gpu.py --sim           # the simulator exactness check only

Prints one JSON line (and writes benchmarks/out/ravel_gpu.json). Without a GPU it says so,
runs the tiny simulator check (a child process: NUMBA_ENABLE_CUDASIM must be set before
numba is imported) and exits 0. Exits 1 when a GPU row differs from the CPU's.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # the CPU side measures one core

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
OUT = REPO / "benchmarks" / "out" / "ravel_gpu.json"


def synthetic_images(count: int, res: int, seed: int = 0) -> list[np.ndarray]:
    """Photo-like gray squares: a few soft blobs on a gradient, plus grain."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:res, :res] / res
    images = []
    for _ in range(count):
        a, b = rng.uniform(-1, 1, 2)
        field = 0.5 + 0.25 * (a * rows + b * cols)
        for _ in range(rng.integers(2, 7)):
            y, x, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.3)
            field += rng.uniform(-0.6, 0.6) * np.exp(-((rows - y) ** 2 + (cols - x) ** 2) / r**2)
        field += rng.normal(0, 0.03, field.shape)
        images.append(np.clip(np.rint(255 * field), 0, 255).astype(np.uint8))
    return images


def simulator_check() -> dict:
    """The GPU kernel on numba's CUDA simulator vs the CPU kernel, tiny sizes."""
    from imgprep.kernels.stringart import ravel
    from imgprep.kernels.stringart_cuda import ravel_batch

    images = synthetic_images(2, 32, seed=1) + [np.full((32, 32), 128, np.uint8)]
    started = time.perf_counter()
    gpu = ravel_batch(images, pins=16, lines=20)
    seconds = time.perf_counter() - started
    cpu = [ravel(image, pins=16, lines=20) for image in images]
    exact = all(np.array_equal(a, b) for a, b in zip(gpu, cpu, strict=True))
    return {"simulator": True, "images": 3, "res": 32, "pins": 16, "lines": 20,
            "exact": bool(exact), "seconds": round(seconds, 2)}  # fmt: skip


def run_simulator() -> dict:
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    proc = subprocess.run(
        [sys.executable, __file__, "--sim"], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        return {"simulator": True, "exact": False, "error": proc.stderr.strip()[-300:]}
    return json.loads(proc.stdout.splitlines()[-1])


def best_of(repeats: int, call) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = call()
        best = min(best, time.perf_counter() - started)
    return best, result


def measure(args) -> dict:
    from imgprep.kernels.stringart import kernel_tables, ravel
    from imgprep.kernels.stringart_cuda import chord_table, ravel_batch
    from numba import cuda

    params = {"pins": args.pins, "lines": args.lines}
    images = synthetic_images(args.images, args.res)
    started = time.perf_counter()
    chord_table(args.pins, args.res)
    table_s = time.perf_counter() - started
    started = time.perf_counter()
    ravel_batch(images[:1], **{**params, "lines": 2})  # compile + first launch
    first_s = time.perf_counter() - started
    gpu_s, gpu = best_of(args.repeats, lambda: ravel_batch(images, **params))
    tiled = images * args.fill
    fill_s, filled = best_of(args.repeats, lambda: ravel_batch(tiled, **params))

    kernel_tables(args.pins, args.res)
    ravel(images[0], pins=args.pins, lines=2)  # compile (or load the cache) first
    cpu_images = images[: args.cpu_images]
    cpu_s, cpu = best_of(1, lambda: [ravel(image, **params) for image in cpu_images])
    exact = all(np.array_equal(gpu[i], cpu[i]) for i in range(len(cpu))) and np.array_equal(
        filled, np.concatenate([gpu] * args.fill)
    )
    cpu_rate = len(cpu_images) / cpu_s
    if hasattr(cuda, "get_current_device"):  # the simulator has none
        device = cuda.get_current_device()
        name, capability = device.name, list(device.compute_capability)
    else:
        name, capability = "numba CUDA simulator", None
    return {
        "device": name.decode() if isinstance(name, bytes) else str(name),
        "compute_capability": capability,
        "res": args.res,
        **params,
        "images": len(images),
        "gpu_images_per_s": round(len(images) / gpu_s, 2),
        "filled_images": len(tiled),
        "gpu_filled_images_per_s": round(len(tiled) / fill_s, 2),
        "cpu_images": len(cpu_images),
        "cpu_images_per_s_one_core": round(cpu_rate, 3),
        "speedup_vs_one_core": round(len(images) / gpu_s / cpu_rate, 1),
        "filled_speedup_vs_one_core": round(len(tiled) / fill_s / cpu_rate, 1),
        "chord_table_s": round(table_s, 3),
        "compile_and_first_launch_s": round(first_s, 2),
        "repeats": args.repeats,
        "exact": bool(exact),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--fill", type=int, default=8, help="tiles of the images, one launch")
    parser.add_argument("--cpu-images", type=int, default=8, help="of them, on one CPU core")
    parser.add_argument("--pins", type=int, default=256)
    parser.add_argument("--lines", type=int, default=6000)
    parser.add_argument("--res", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sim", action="store_true", help="the simulator check only")
    args = parser.parse_args(argv)
    if args.sim:
        if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
            result = run_simulator()  # a child: the variable must precede numba's import
        else:
            result = simulator_check()
        print(json.dumps(result))
        return 0 if result["exact"] else 1

    from imgprep.kernels.stringart_cuda import gpu_available

    if not gpu_available():
        from numba import cuda

        print("no CUDA GPU here (numba.cuda.is_available() is False): simulator check only")
        try:
            cuda.detect()
        except Exception as error:  # noqa: BLE001 - only a diagnostic
            print(f"numba.cuda.detect(): {error}")
        result = {"gpu": False, **run_simulator()}
        print(json.dumps(result))
        return 0 if result["exact"] else 1
    args.cpu_images = min(args.cpu_images, args.images)
    result = measure(args)
    print(json.dumps(result))
    try:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(result, indent=2) + "\n")
    except OSError:
        pass  # a read-only checkout: the JSON line above is the result
    return 0 if result["exact"] else 1


if __name__ == "__main__":
    sys.exit(main())
