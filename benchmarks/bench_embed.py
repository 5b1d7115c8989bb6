"""Embedding throughput: imgprep's embed_shard against a bare model.predict, side by side.

Both run in this one process on the same model, batch size and N images: (a) bare
``model.predict`` on an array of the N images already decoded to Koalarization's input,
(b) ``embed_shard`` on a tar of the same N JPEGs, which also reads the tar, decodes,
converts to gray, resizes and writes the .npy. The ratio (b)/(a) in images per second
is what counts; the target is 0.9 (embed_shard within 10 % of the bare model).

The model is built with random weights (no download needed) and warmed up first; the
seconds that took (model build + first batch) are printed too.

    .venv/bin/python benchmarks/bench_embed.py [--model InceptionResNetV2] [--images 64]
        [--batch 32] [--input-size 299] [--repeats 1]

Prints a table, writes benchmarks/out/embed.json, exits 1 when the ratio is below 0.9.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tarfile  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from imgprep.atomic import atomic_write  # noqa: E402
from imgprep.config import section_config  # noqa: E402
from imgprep.files.tables import member_name  # noqa: E402
from imgprep.stages import embed  # noqa: E402

OUT = REPO / "benchmarks" / "out" / "embed.json"
TARGET_RATIO = 0.9


def _photo(rng: np.random.Generator, size: int) -> bytes:
    """A smooth color image with some grain, as a JPEG of about a resized shard's size."""
    acc = np.zeros((size, size, 3), np.float32)
    for cells, amplitude in ((4, 90), (16, 40), (64, 20)):
        coarse = rng.uniform(-amplitude, amplitude, (cells, cells, 3)).astype(np.float32)
        acc += (
            np.asarray(
                Image.fromarray(coarse[..., 0]).resize((size, size), Image.Resampling.BICUBIC)
            )[..., None]
            + coarse.mean()
        )
    acc += rng.normal(0, 6, acc.shape).astype(np.float32) + 128
    image = Image.fromarray(np.clip(acc, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _write_tar(path: Path, jpegs: list[bytes]) -> None:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for position, data in enumerate(jpegs):
            info = tarfile.TarInfo(member_name(position))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="InceptionResNetV2")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--input-size", type=int, default=299)
    parser.add_argument("--source-size", type=int, default=256, help="JPEG side in the tar")
    parser.add_argument("--repeats", type=int, default=1, help="best of this many timings")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--precision", default="float32", choices=embed.PRECISIONS, help="embed.precision"
    )
    parser.add_argument(
        "--decode-threads", type=int, help="decoding threads (default: threads - 1, as the rule)"
    )
    args = parser.parse_args()
    decode_threads = args.decode_threads or max(1, args.threads - 1)

    params = embed.EmbedParams.from_config(
        section_config(
            "embed",
            {
                "model": args.model,
                "weights": None,
                "input_size": args.input_size,
                "batch_size": args.batch,
                "precision": args.precision,
            },
        )
    )
    rng = np.random.default_rng(0)
    jpegs = [_photo(rng, args.source_size) for _ in range(args.images)]

    embed._set_threads(args.threads)  # as embed_shard does, before the runtime starts
    start = time.perf_counter()
    model = embed.load_model(params)
    first = embed.koalarization_batch(jpegs[: args.batch], args.input_size)
    model.predict_on_batch(first)
    first_call = time.perf_counter() - start
    dim = int(model.output_shape[-1])

    decoded = embed.koalarization_batch(jpegs, args.input_size)
    model.predict(decoded[: args.batch], batch_size=args.batch, verbose=0)  # trace predict()

    bare_times, shard_times = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tar = Path(tmp) / "shard.tar"
        out = Path(tmp) / "shard.npy"
        _write_tar(tar, jpegs)
        for _ in range(args.repeats):
            start = time.perf_counter()
            bare = model.predict(decoded, batch_size=args.batch, verbose=0)
            bare_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            embed.embed_shard(tar, out, params, threads=args.threads, decode_threads=decode_threads)
            shard_times.append(time.perf_counter() - start)
        got = np.load(out)
    assert got.shape == (args.images, dim), got.shape
    max_diff = float(np.max(np.abs(got - bare))) if args.images else 0.0

    bare_rate = args.images / min(bare_times)
    shard_rate = args.images / min(shard_times)
    ratio = shard_rate / bare_rate
    devices = [device.name for device in embed._tf().config.list_logical_devices("GPU")]
    print(
        f"{args.model} {args.input_size}px batch {args.batch}, {args.images} images, D={dim}, "
        f"{args.precision}, {decode_threads} decode threads, GPU: {', '.join(devices) or 'none'}"
    )
    print(f"first call (build + first batch): {first_call:8.2f} s")
    print(f"bare model.predict:               {bare_rate:8.2f} img/s")
    print(f"embed_shard (decode+run+write):   {shard_rate:8.2f} img/s")
    print(f"ratio: {ratio:.3f} (target >= {TARGET_RATIO}); max |diff| {max_diff:.2e}")
    report = {
        "model": args.model,
        "input_size": args.input_size,
        "batch": args.batch,
        "images": args.images,
        "dim": dim,
        "threads": args.threads,
        "precision": args.precision,
        "decode_threads": decode_threads,
        "gpus": devices,
        "repeats": args.repeats,
        "first_call_s": first_call,
        "bare_seconds": bare_times,
        "embed_shard_seconds": shard_times,
        "bare_img_per_s": bare_rate,
        "embed_shard_img_per_s": shard_rate,
        "ratio": ratio,
        "target_ratio": TARGET_RATIO,
        "max_abs_diff": max_diff,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    with atomic_write(OUT, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
        handle.write("\n")
    return 0 if ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
