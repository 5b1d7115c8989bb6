"""URL-list parsing and shard download speed, measured on this machine.

Parsing: a synthetic fall11_urls.txt look-alike (wnid_n<TAB>Flickr-like URL, one line in
a thousand with non-ASCII bytes, some Latin-1) is parsed with parse_url_list; lines/s
tells how long the real 14M-line file takes. Downloading: download_shard against a
local keep-alive HTTP server serving ImageNet-sized JPEGs (500x375, about 80 KB), so
the number is imgprep's own cost per URL (HTTP, Pillow's full decode, sha256, tar),
the ceiling a real network can only lower.

    .venv/bin/python benchmarks/bench_download.py [--lines 2000000] [--urls 600]

Prints the numbers and writes benchmarks/out/download.json.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import random
import resource
import shutil
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from imgprep.atomic import atomic_write  # noqa: E402
from imgprep.config import schema_defaults  # noqa: E402
from imgprep.sources.url_list import parse_url_list  # noqa: E402
from imgprep.stages.download import DownloadParams, download_shard  # noqa: E402

OUT = REPO / "benchmarks" / "out" / "download.json"


def write_url_list(path: Path, lines: int) -> None:
    rng = random.Random(0)
    with open(path, "wb") as handle:
        for i in range(lines):
            wnid = f"n{1440764 + i // 700:08d}"
            url = (
                f"http://farm{rng.randint(1, 4)}.static.flickr.com/{rng.randint(1, 3000)}/"
                f"{rng.randint(10**8, 10**10)}_{rng.getrandbits(40):010x}.jpg"
            ).encode()
            if i % 1000 == 999:
                url = url.replace(b".jpg", b"_caf\xc3\xa9 \xe9.jpg")
            handle.write(wnid.encode() + b"_%d\t" % i + url + b"\n")


def bench_parse(lines: int, folder: Path) -> dict:
    path = folder / "urls.txt"
    write_url_list(path, lines)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start, cpu_start = time.perf_counter(), time.process_time()
    entries, problems = parse_url_list(path)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert len(entries) == lines and not problems
    result = {
        "lines": lines,
        "file_mb": round(path.stat().st_size / 1e6, 1),
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),  # the wall time suffers when the machine is shared
        "lines_per_s": round(lines / seconds),
        "lines_per_cpu_s": round(lines / cpu),
        "seconds_for_14M_lines": round(14_000_000 * seconds / lines, 1),
        "peak_rss_growth_mb": round((rss_after - rss_before) / 1024, 1),
    }
    del entries
    return result


def photo_jpeg(seed: int) -> bytes:
    """A 500x375 JPEG of about 80 KB: smooth shapes plus grain, like a camera photo."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    image = Image.fromarray(base).resize((500, 375), Image.Resampling.BICUBIC)
    pixels = np.asarray(image, dtype=np.int16) + rng.integers(-12, 13, (375, 500, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    photos: list[bytes] = []

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        body = self.photos[int(self.path.rsplit("/", 1)[1].split(".")[0]) % len(self.photos)]
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def bench_download(count: int, folder: Path) -> dict:
    Handler.photos = [photo_jpeg(seed) for seed in range(16)]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    results = {"urls": count, "mean_kb": round(np.mean([len(p) for p in Handler.photos]) / 1e3)}
    try:
        for connections in (1, 4, 16):
            urls = [f"{base}/{i}.jpg?c={connections}" for i in range(count)]
            shard = folder / f"c{connections}"
            params = DownloadParams.from_config(
                {**schema_defaults("download"), "connections": connections, "allow_private": True}
            )
            start = time.perf_counter()
            ok, failed = download_shard(
                urls, shard / "cache", shard / "s.tar", shard / "s.tsv", params
            )
            fetch = time.perf_counter() - start
            assert (ok, failed) == (count, 0)
            start = time.perf_counter()
            download_shard(urls, shard / "cache", shard / "s.tar", shard / "s.tsv", params)
            cached = time.perf_counter() - start
            results[f"connections_{connections}"] = {
                "urls_per_s": round(count / fetch),
                "mb_per_s": round((shard / "s.tar").stat().st_size / 1e6 / fetch, 1),
                "rerun_from_cache_urls_per_s": round(count / cached),
            }
            shutil.rmtree(shard)
    finally:
        server.shutdown()
        server.server_close()
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=2_000_000)
    parser.add_argument("--urls", type=int, default=600)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        report = {
            "machine": f"{platform.processor() or platform.machine()}, {platform.system()}",
            "python": platform.python_version(),
            "parse": bench_parse(args.lines, Path(tmp)),
            "download_local": bench_download(args.urls, Path(tmp)),
        }
    print(json.dumps(report, indent=2))
    with atomic_write(OUT, "w") as handle:
        json.dump(report, handle, indent=2)
        handle.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
