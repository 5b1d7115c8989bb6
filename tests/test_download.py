"""download: every outcome against a real local HTTP server, resumability, determinism."""

from __future__ import annotations

import base64
import collections
import gc
import hashlib
import io
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from helpers import REPO, jpeg_bytes
from imgprep.config import schema_defaults
from imgprep.files.tables import STATUS_COLUMNS
from imgprep.http import address_refusal
from imgprep.sources.url_list import UrlEntry, parse_url_list
from imgprep.stages import download as download_module
from imgprep.stages.download import (
    DownloadParams,
    cache_paths,
    download_shard,
    read_downloads,
)
from PIL import Image

TIMEOUT = 0.5  # per attempt: generous for a loaded machine, small for the slow cases
TOTAL = 2.5  # per URL: above 3 attempts of TIMEOUT, below the trickle's 5 s
RETRIES = 2


def _png(width, height, color=(10, 200, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, "PNG")
    return buffer.getvalue()


GOOD_JPEG = jpeg_bytes(64, 48, seed=1)
GOOD_PNG = _png(40, 30)
TINY = _png(1, 1)
PLACEHOLDER = _png(20, 20, color=(128, 128, 128))
HTML = b"<!DOCTYPE html><html><body>Photo not found</body></html>"
OVERSIZE = jpeg_bytes(640, 480, seed=2, quality=100)  # ~400 KB of noise
MAX_BYTES = 100_000


def _seeded_jpeg(query: str) -> bytes:
    seed = int(parse_qs(query).get("i", ["0"])[0])
    return jpeg_bytes(32, 24, seed=100 + seed)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host="127.0.0.1", port=0):
        super().__init__((host, port), Handler)
        self.hosts: list[str] = []  # Host headers, in arrival order
        self.requests: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()
        self.release_hang = threading.Event()
        self.proxied: list[str] = []
        self.connections = 0

    def handle_error(self, request, client_address):
        """Clients hanging up on slow responses are part of the tests, not errors."""

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.server_address[1]}{path}"

    def count(self, path: str) -> int:
        with self.lock:
            return self.requests[path]

    def snapshot(self) -> collections.Counter[str]:
        with self.lock:
            return collections.Counter(self.requests)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real image hosts do
    disable_nagle_algorithm = True  # headers and body go out as separate writes

    def setup(self):
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def log_message(self, format, *args):
        pass

    def _send(self, status, body=b"", content_type="image/jpeg", headers=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        server: Server = self.server
        target = self.path
        if target.startswith("http://"):  # absolute form: we are being used as a proxy
            server.proxied.append((target, self.headers.get("Proxy-Authorization")))
            target = urlsplit(target)._replace(scheme="", netloc="").geturl()
        with server.lock:
            server.hosts.append(self.headers.get("Host"))
            server.requests[target] += 1
            seen = server.requests[target]
        parts = urlsplit(target)
        route = ROUTES.get(parts.path)
        if route is None:
            self._send(404, b"no such route", "text/plain")
        else:
            route(self, seen, parts.query)


def _trickle(handler, seen, query):
    body = b"x" * 100
    handler.send_response(200)
    handler.send_header("Content-Type", "image/jpeg")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    for byte in body:  # 5 s in all, never idle for a tenth of the attempt's timeout
        handler.wfile.write(bytes([byte]))
        handler.wfile.flush()
        time.sleep(TIMEOUT / 10)


def _truncated(handler, seen, query):
    handler.send_response(200)
    handler.send_header("Content-Type", "image/jpeg")
    handler.send_header("Content-Length", str(len(GOOD_JPEG) + 1000))
    handler.end_headers()
    handler.wfile.write(GOOD_JPEG)
    handler.close_connection = True


def _stream_oversize(handler, seen, query):
    """No Content-Length: only counting while reading can stop it."""
    handler.send_response(200)
    handler.send_header("Content-Type", "image/jpeg")
    handler.send_header("Connection", "close")
    handler.end_headers()
    handler.wfile.write(OVERSIZE)
    handler.close_connection = True


def _slow(handler, seen, query):
    time.sleep(TIMEOUT * 2.4)
    handler._send(200, GOOD_JPEG)


def _hang(handler, seen, query):
    if seen == 1:
        handler.server.release_hang.wait(20)
    handler._send(200, _seeded_jpeg("i=99"))


ROUTES = {
    "/good.jpg": lambda h, seen, q: h._send(200, GOOD_JPEG),
    "/good.png": lambda h, seen, q: h._send(200, GOOD_PNG, "image/png"),
    "/seeded.jpg": lambda h, seen, q: h._send(200, _seeded_jpeg(q)),
    "/missing.jpg": lambda h, seen, q: h._send(404, HTML, "text/html"),
    "/flaky.jpg": lambda h, seen, q: (
        h._send(500, b"oops", "text/plain") if seen == 1 else h._send(200, GOOD_JPEG)
    ),
    "/unavailable.jpg": lambda h, seen, q: h._send(503, b"busy", "text/plain"),
    "/slow.jpg": _slow,
    "/trickle.jpg": _trickle,
    "/page.jpg": lambda h, seen, q: h._send(200, HTML, "text/html; charset=utf-8"),
    "/moved.jpg": lambda h, seen, q: h._send(302, headers=[("Location", "/good.png")]),
    "/loop.jpg": lambda h, seen, q: h._send(302, headers=[("Location", "/loop.jpg")]),
    "/truncated.jpg": _truncated,
    "/oversize.jpg": lambda h, seen, q: h._send(200, OVERSIZE),
    "/oversize-stream.jpg": _stream_oversize,
    "/tiny.png": lambda h, seen, q: h._send(200, TINY, "image/png"),
    "/placeholder.png": lambda h, seen, q: h._send(200, PLACEHOLDER, "image/png"),
    "/hang.jpg": _hang,
}


@pytest.fixture(scope="module", autouse=True)
def no_collector_pauses():
    """The server runs in this process: a full collection of the suite's heap (TensorFlow
    is loaded by then) stops its threads for longer than an attempt's timeout, so the
    trickle looked idle and was retried (CI, stop 20). Timings here are the server's."""
    gc.collect()
    gc.freeze()
    gc.disable()
    yield
    gc.enable()
    gc.unfreeze()


@pytest.fixture(autouse=True)
def no_proxy_from_environment(monkeypatch):
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture(scope="module")
def server():
    server = Server()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.release_hang.set()
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _params(**overrides) -> DownloadParams:
    values = schema_defaults("download") | {
        "connections": 8,
        "timeout": TIMEOUT,
        "total_timeout": TOTAL,
        "retries": RETRIES,
        "backoff": 0.01,
        "max_bytes": MAX_BYTES,
        "min_side": 2,
        "reject_sha256": [hashlib.sha256(PLACEHOLDER).hexdigest()],
        "allow_private": True,  # the test server listens on 127.0.0.1
    }
    values.update(overrides)
    return DownloadParams.from_config(values)


def _shard(server) -> list[tuple[str, object]]:
    """(url, expected bytes or reason) for a shard holding every case once."""
    attempts = RETRIES + 1
    return [
        (server.url("/good.jpg"), GOOD_JPEG),
        (server.url("/good.png"), GOOD_PNG),
        (server.url("/missing.jpg"), "HTTP 404"),
        (server.url("/flaky.jpg"), GOOD_JPEG),
        (server.url("/unavailable.jpg"), f"HTTP 503 after {attempts} attempts"),
        (server.url("/slow.jpg"), f"timeout after {attempts} attempts"),
        (server.url("/trickle.jpg"), f"too slow (over {TOTAL:g} s)"),
        (server.url("/page.jpg"), "not an image (text/html)"),
        (server.url("/moved.jpg"), GOOD_PNG),
        (server.url("/loop.jpg"), "too many redirects"),
        (
            server.url("/truncated.jpg"),
            f"truncated (got {len(GOOD_JPEG)} of {len(GOOD_JPEG) + 1000} bytes)"
            f" after {attempts} attempts",
        ),
        (server.url("/oversize.jpg"), f"too large (> {MAX_BYTES} bytes)"),
        (server.url("/oversize-stream.jpg"), f"too large (> {MAX_BYTES} bytes)"),
        (server.url("/tiny.png"), "too small (1x1)"),
        (server.url("/placeholder.png"), "placeholder image"),
        (f"http://127.0.0.1:{_closed_port()}/gone.jpg", "connection refused"),
        ("ftp://example.com/a.jpg", "bad URL (scheme ftp)"),
        (server.url("/good.jpg"), GOOD_JPEG),  # the same URL twice: fetched once
        *[(server.url(f"/seeded.jpg?i={i}"), _seeded_jpeg(f"i={i}")) for i in range(6)],
    ]


def _run(urls, root, params, log=None):
    root.mkdir(parents=True, exist_ok=True)
    tar, status = root / "shard.tar", root / "status.tsv"
    counts = download_shard(urls, root / "cache", tar, status, params, log=log)
    return counts, tar, status


@pytest.fixture(scope="module")
def first_run(server, tmp_path_factory):
    """One full download of the shard, shared by the tests that only read its outputs."""
    cases = _shard(server)
    urls = [url for url, _ in cases]
    root = tmp_path_factory.mktemp("first")
    before = server.snapshot()
    log = io.StringIO()
    counts, tar, status = _run(urls, root, _params(), log=log)
    return {
        "cases": cases,
        "urls": urls,
        "root": root,
        "counts": counts,
        "tar": tar,
        "status": status,
        "requests": server.snapshot() - before,
        "log": log.getvalue(),
    }


def _status_rows(path) -> list[dict[str, str]]:
    lines = path.read_text().splitlines()
    assert tuple(lines[0].split("\t")) == STATUS_COLUMNS
    return [dict(zip(STATUS_COLUMNS, line.split("\t"), strict=True)) for line in lines[1:]]


def _copy_cache(first_run, root):
    """A fresh shard folder whose cache is the first run's, so nothing slow runs again."""
    root.mkdir(parents=True)
    shutil.copytree(first_run["root"] / "cache", root / "cache")
    return root


# -- outcomes -------------------------------------------------------------------------------


def test_every_position_gets_its_outcome(first_run):
    rows = _status_rows(first_run["status"])
    assert [int(row["position"]) for row in rows] == list(range(len(first_run["cases"])))
    for row, (url, expected) in zip(rows, first_run["cases"], strict=True):
        assert row["url"] == url
        if isinstance(expected, bytes):
            assert (row["status"], row["reason"]) == ("ok", ""), url
            assert row["bytes"] == str(len(expected))
            assert row["sha256"] == hashlib.sha256(expected).hexdigest()
        else:
            assert (row["status"], row["reason"]) == ("failed", expected), url
    expected_ok = sum(isinstance(expected, bytes) for _, expected in first_run["cases"])
    assert first_run["counts"] == (expected_ok, len(rows) - expected_ok)


def test_tar_holds_the_served_bytes_at_their_positions(first_run):
    successes = {
        position: expected
        for position, (_, expected) in enumerate(first_run["cases"])
        if isinstance(expected, bytes)
    }
    with tarfile.open(first_run["tar"]) as tar:
        members = tar.getmembers()
        assert [member.name for member in members] == [f"{p:06d}" for p in sorted(successes)]
        for member in members:
            assert tar.extractfile(member).read() == successes[int(member.name)]
            assert (member.mtime, member.mode, member.uid, member.gid) == (0, 0o644, 0, 0)
            assert (member.uname, member.gname) == ("", "")
    assert first_run["tar"].read_bytes()[257:263] == b"ustar\x00"


def test_retries_only_what_is_transient(first_run):
    requests, attempts = first_run["requests"], RETRIES + 1
    assert requests["/flaky.jpg"] == 2  # 500, then the image
    assert requests["/unavailable.jpg"] == attempts
    assert requests["/slow.jpg"] == attempts
    assert requests["/truncated.jpg"] == attempts
    for final in ("/missing.jpg", "/page.jpg", "/trickle.jpg", "/oversize.jpg", "/tiny.png"):
        assert requests[final] == 1, final
    assert requests["/loop.jpg"] == 11  # the first request and 10 redirects followed
    assert requests["/good.jpg"] == 1  # listed twice, fetched once
    assert requests["/moved.jpg"] == requests["/good.png"] - 1 == 1


def test_read_downloads_gives_bytes_or_reasons(first_run):
    results = read_downloads(first_run["tar"], first_run["status"])
    assert list(results) == list(range(len(first_run["cases"])))
    for position, (_, expected) in enumerate(first_run["cases"]):
        assert results[position] == expected


def test_read_downloads_rejects_a_tar_that_does_not_match(first_run, tmp_path):
    status = tmp_path / "status.tsv"
    text = first_run["status"].read_text()
    status.write_text(text.replace(hashlib.sha256(GOOD_PNG).hexdigest(), "0" * 64))
    with pytest.raises(ValueError, match="does not match"):
        read_downloads(first_run["tar"], status)


def test_progress_is_logged(first_run):
    lines = first_run["log"].splitlines()
    total = len(set(first_run["urls"]))
    assert any(f"progress download: {total}/{total} URLs (100.0%)" in line for line in lines), lines
    assert any(line.startswith("progress download: 0/") for line in lines), lines
    ok, failed = first_run["counts"]
    assert any(f"{ok} ok, {failed} failed" in line for line in lines), lines


def test_outputs_do_not_depend_on_thread_count(first_run, server, tmp_path):
    (ok, failed), tar, status = _run(first_run["urls"], tmp_path, _params(connections=1))
    assert (ok, failed) == first_run["counts"]
    assert tar.read_bytes() == first_run["tar"].read_bytes()
    assert status.read_bytes() == first_run["status"].read_bytes()


def test_follows_redirect_to_https(server, tmp_path, monkeypatch):
    if shutil.which("openssl") is None:
        pytest.fail("needs the openssl command to make a certificate", pytrace=False)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
        + ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
        + ["-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    tls_server = Server()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    tls_server.socket = context.wrap_socket(tls_server.socket, server_side=True)
    threading.Thread(target=tls_server.serve_forever, daemon=True).start()
    try:
        secure = f"https://127.0.0.1:{tls_server.server_address[1]}/good.png"
        ROUTES["/to-https.jpg"] = lambda h, seen, q: h._send(301, headers=[("Location", secure)])
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trust the test certificate
        urls = [server.url("/to-https.jpg")]
        _, tar, status = _run(urls, tmp_path / "ok", _params())
        assert read_downloads(tar, status) == {0: GOOD_PNG}
        assert tls_server.count("/good.png") == 1
        monkeypatch.delenv("SSL_CERT_FILE")  # an untrusted certificate is a final failure
        _, tar, status = _run([secure + "?again"], tmp_path / "untrusted", _params())
        assert read_downloads(tar, status)[0].startswith("TLS certificate error")
    finally:
        ROUTES.pop("/to-https.jpg", None)
        tls_server.shutdown()
        tls_server.server_close()


def test_uses_the_http_proxy_from_the_environment(server, tmp_path, monkeypatch):
    monkeypatch.setenv("http_proxy", server.url("").replace("//", "//user:p%40ss@"))
    url = "http://images.example.invalid/seeded.jpg?i=42"
    _, tar, status = _run([url], tmp_path, _params())
    assert read_downloads(tar, status) == {0: _seeded_jpeg("i=42")}
    credentials = base64.b64encode(b"user:p@ss").decode()
    assert (url, f"Basic {credentials}") in server.proxied


def test_connections_are_kept_alive_per_thread(server, tmp_path):
    urls = [server.url(f"/seeded.jpg?i={i}&run=keepalive") for i in range(8)]
    urls.insert(4, server.url("/missing.jpg?keepalive"))  # a 404 with a body keeps it too
    before = server.connections
    counts, _, _ = _run(urls, tmp_path, _params(connections=1))
    assert counts == (8, 1)
    assert server.connections - before == 1


def test_urls_not_from_parse_url_list_are_encoded_or_rejected(server, tmp_path):
    urls = [
        server.url("/seeded.jpg?i=7&name=bücher photo"),
        "not a url",
        "http:///nohost",
        "http://a..b/empty-label.jpg",
        "http://a.example:port/x.jpg",
    ]
    _, tar, status = _run(urls, tmp_path, _params())
    results = read_downloads(tar, status)
    assert results == {
        0: _seeded_jpeg("i=7"),
        1: "bad URL",
        2: "bad URL",
        3: "bad URL",
        4: "bad URL",
    }
    assert server.count("/seeded.jpg?i=7&name=b%C3%BCcher%20photo") == 1


def test_an_empty_shard_gives_empty_outputs(tmp_path):
    counts, tar, status = _run([], tmp_path, _params())
    assert counts == (0, 0)
    assert status.read_text() == "\t".join(STATUS_COLUMNS) + "\n"
    assert read_downloads(tar, status) == {}


# -- resuming -----------------------------------------------------------------------------------


def test_second_run_fetches_nothing(first_run, server, tmp_path):
    root = _copy_cache(first_run, tmp_path / "again")
    before = server.snapshot()
    counts, tar, status = _run(first_run["urls"], root, _params(connections=3))
    assert server.snapshot() == before
    assert counts == first_run["counts"]
    assert tar.read_bytes() == first_run["tar"].read_bytes()
    assert status.read_bytes() == first_run["status"].read_bytes()


def test_only_deleted_cache_entries_are_fetched_again(first_run, server, tmp_path):
    root = _copy_cache(first_run, tmp_path / "partial")
    removed = {"/good.png": 0, "/missing.jpg": 1, "/seeded.jpg?i=3": 0}  # path: .img or .fail
    for path, which in removed.items():
        cache_paths(root / "cache", server.url(path))[which].unlink()
    before = server.snapshot()
    _, tar, status = _run(first_run["urls"], root, _params())
    fetched = server.snapshot() - before
    # /moved.jpg redirects to /good.png, but its own cache entry is intact
    assert fetched == collections.Counter(dict.fromkeys(removed, 1))
    assert status.read_bytes() == first_run["status"].read_bytes()
    assert tar.read_bytes() == first_run["tar"].read_bytes()


def test_failures_are_fetched_again_only_with_retry_failed(first_run, server, tmp_path):
    root = _copy_cache(first_run, tmp_path / "retry")
    cheap = [
        url
        for url, expected in first_run["cases"]
        if not isinstance(expected, bytes) and "slow" not in url and "trickle" not in url
    ]
    urls = cheap + [server.url("/good.jpg")]
    before = server.snapshot()
    _run(urls, root, _params())
    assert server.snapshot() == before
    _run(urls, root, _params(retry_failed=True))
    fetched = server.snapshot() - before
    assert fetched["/missing.jpg"] == 1
    assert fetched["/unavailable.jpg"] == RETRIES + 1
    assert fetched["/good.jpg"] == 0  # a success is never fetched again


def test_a_failure_that_later_succeeds_replaces_its_cached_failure(server, tmp_path):
    url = server.url("/flaky.jpg?fresh")
    _, tar, status = _run([url], tmp_path, _params(retries=0))
    assert read_downloads(tar, status) == {0: "HTTP 500"}
    _, tar, status = _run([url], tmp_path, _params(retries=0, retry_failed=True))
    assert read_downloads(tar, status) == {0: GOOD_JPEG}
    image, failure = cache_paths(tmp_path / "cache", url)
    assert image.exists() and not failure.exists()


def test_changed_url_list_reuses_the_cache_by_url(first_run, server, tmp_path):
    root = _copy_cache(first_run, tmp_path / "changed")
    new = server.url("/seeded.jpg?i=50")
    urls = [new, server.url("/seeded.jpg?i=4"), server.url("/good.png"), server.url("/tiny.png")]
    before = server.snapshot()
    counts, tar, status = _run(urls, root, _params())
    assert server.snapshot() - before == collections.Counter({"/seeded.jpg?i=50": 1})
    assert counts == (3, 1)
    assert read_downloads(tar, status) == {
        0: _seeded_jpeg("i=50"),
        1: _seeded_jpeg("i=4"),
        2: GOOD_PNG,
        3: "too small (1x1)",
    }


def test_checks_apply_to_cached_images_without_fetching(first_run, server, tmp_path):
    """A placeholder digest found after a first run needs no new download."""
    root = _copy_cache(first_run, tmp_path / "stricter")
    urls = [server.url("/good.jpg"), server.url("/good.png"), server.url("/seeded.jpg?i=0")]
    stricter = _params(reject_sha256=[hashlib.sha256(GOOD_PNG).hexdigest()], min_side=40)
    before = server.snapshot()
    counts, tar, status = _run(urls, root, stricter)
    assert server.snapshot() == before
    assert counts == (1, 2)
    assert read_downloads(tar, status) == {
        0: GOOD_JPEG,
        1: "placeholder image",
        2: "too small (32x24)",
    }


_INTERRUPTED_RUN = """
import json, sys
from imgprep.config import schema_defaults
from imgprep.stages.download import DownloadParams, download_shard
urls, root = json.loads(sys.argv[1]), sys.argv[2]
settings = {"connections": 1, "timeout": 30, "total_timeout": 60, "retries": 0}
settings["allow_private"] = True
params = DownloadParams.from_config(schema_defaults("download") | settings)
download_shard(urls, root + "/cache", root + "/shard.tar", root + "/status.tsv", params)
"""


def test_killed_run_resumes_where_it_stopped(server, tmp_path):
    server.release_hang.clear()
    hang = "/hang.jpg?killed"
    paths = [f"/seeded.jpg?i={i}&run=killed" for i in range(3)]
    later = [f"/seeded.jpg?i={i}&run=killed" for i in range(3, 5)]
    urls = [server.url(path) for path in [*paths, hang, *later]]
    env = {**os.environ, "PYTHONPATH": str(REPO / "scripts")}
    proc = subprocess.Popen(
        [sys.executable, "-c", _INTERRUPTED_RUN, json.dumps(urls), str(tmp_path)], env=env
    )
    try:
        deadline = time.monotonic() + 20
        while server.count(hang) == 0 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.count(hang) == 1, "the subprocess never reached the hanging URL"
    finally:
        proc.kill()
        proc.wait()
        server.release_hang.set()
    assert not (tmp_path / "status.tsv").exists()  # no half-written outputs
    assert not list(tmp_path.glob("*.tar"))

    before = server.snapshot()
    counts, tar, status = _run(urls, tmp_path, _params())
    fetched = server.snapshot() - before
    assert fetched == collections.Counter(dict.fromkeys([hang, *later], 1))
    assert counts == (6, 0)
    results = read_downloads(tar, status)
    assert results[3] == _seeded_jpeg("i=99")
    assert results[4] == _seeded_jpeg("i=3")


def test_an_exception_mid_shard_keeps_what_finished(server, tmp_path, monkeypatch):
    """An error in the job after two outcomes: what finished stays cached, the rest runs later."""
    calls = []
    original_add = download_module._Progress.add

    def add_then_fail(self, ok, size):
        original_add(self, ok, size)
        calls.append(ok)
        if len(calls) == 2:
            raise RuntimeError("job killed")

    urls = [server.url(f"/seeded.jpg?i={i}&run=broken") for i in range(6)]
    before = server.snapshot()
    with monkeypatch.context() as patch:
        patch.setattr(download_module._Progress, "add", add_then_fail)
        with pytest.raises(RuntimeError, match="job killed"):
            _run(urls, tmp_path, _params(connections=1))
    first = server.snapshot() - before
    assert 2 <= sum(first.values()) < len(urls)  # stopped mid-shard
    assert not (tmp_path / "status.tsv").exists()
    counts, tar, status = _run(urls, tmp_path, _params())
    both = server.snapshot() - before
    assert both == collections.Counter(
        urlsplit(url).path + "?" + urlsplit(url).query for url in urls
    )
    assert counts == (6, 0)
    assert read_downloads(tar, status) == {i: _seeded_jpeg(f"i={i}") for i in range(6)}


# -- hosts inside the network ---------------------------------------------------------------------

_REFUSED_BY_CLASS = [
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 (link-local)"),
    ("http://127.0.0.1:{port}/good.jpg", "127.0.0.1 (loopback)"),
    ("http://127.8.9.10:{port}/good.jpg", "127.8.9.10 (loopback)"),
    ("http://[::1]:{port}/good.jpg", "::1 (loopback)"),
    ("http://[::ffff:127.0.0.1]:{port}/good.jpg", "::ffff:127.0.0.1 (loopback)"),
    ("http://[::ffff:169.254.169.254]/", "::ffff:169.254.169.254 (link-local)"),
    ("http://[2002:7f00:1::]:{port}/good.jpg", "2002:7f00:1:: (loopback)"),  # 6to4
    ("http://[64:ff9b::a9fe:a9fe]/", "64:ff9b::a9fe:a9fe (link-local)"),  # NAT64
    ("http://2130706433:{port}/good.jpg", "127.0.0.1 (loopback)"),  # decimal
    ("http://0177.0.0.1:{port}/good.jpg", "127.0.0.1 (loopback)"),  # octal
    ("http://0x7f.1:{port}/good.jpg", "127.0.0.1 (loopback)"),  # hex, short form
    ("http://0.0.0.0:{port}/good.jpg", "0.0.0.0 (unspecified)"),
    ("http://[::]:{port}/good.jpg", ":: (unspecified)"),
    ("http://10.1.2.3/", "10.1.2.3 (private)"),
    ("http://172.16.0.1/", "172.16.0.1 (private)"),
    ("http://192.168.1.1/", "192.168.1.1 (private)"),
    ("http://[fd00::1]/", "fd00::1 (private)"),
    ("http://[fe80::1]/", "fe80::1 (link-local)"),
    ("http://224.0.0.251/", "224.0.0.251 (multicast)"),
    ("http://[ff02::1]/", "ff02::1 (multicast)"),
    ("http://240.0.0.1/", "240.0.0.1 (reserved)"),
    ("http://255.255.255.255/", "255.255.255.255 (reserved)"),
    ("http://100.64.0.1/", "100.64.0.1 (not globally routable)"),  # carrier-grade NAT
]


def test_addresses_inside_the_network_are_refused_by_default(server, tmp_path):
    port = server.server_address[1]
    urls = [url.format(port=port) for url, _ in _REFUSED_BY_CLASS]
    urls.append(server.url("/good.jpg", host="localhost"))  # a name: resolved, then checked
    params = _params(allow_private=False, retries=0)
    before = server.snapshot()
    counts, tar, status = _run(urls, tmp_path, params)
    assert server.snapshot() == before  # nothing reached the server
    assert counts == (0, len(urls))
    results = read_downloads(tar, status)
    for position, (_url, refusal) in enumerate(_REFUSED_BY_CLASS):
        assert results[position] == f"refused address {refusal}"
    assert results[len(urls) - 1] in {
        "refused address 127.0.0.1 (loopback)",
        "refused address ::1 (loopback)",
    }


def test_allow_private_lets_them_through_and_replaces_cached_refusals(server, tmp_path):
    urls = [server.url("/seeded.jpg?i=1&run=private"), server.url("/good.jpg", host="localhost")]
    _, tar, status = _run(urls, tmp_path, _params(allow_private=False))
    assert all(
        reason.startswith("refused address") for reason in read_downloads(tar, status).values()
    )
    counts, tar, status = _run(urls, tmp_path, _params(allow_private=True))
    assert counts == (2, 0)
    assert read_downloads(tar, status) == {0: _seeded_jpeg("i=1"), 1: GOOD_JPEG}


def test_address_refusal_names_the_class():
    assert address_refusal("93.184.216.34") is None
    assert address_refusal("2606:2800:220:1:248:1893:25c8:1946") is None
    assert address_refusal("192.0.2.1").startswith("refused address 192.0.2.1")


_PUBLIC_IP = "93.184.216.34"  # an address that passes the check; the tests route it locally


@pytest.fixture
def public_and_admin(monkeypatch):
    """A "public" server (at 127.0.0.2, reached as _PUBLIC_IP) and an "admin" server on
    127.0.0.1 at the same port, with a fake DNS: ``public.example`` is _PUBLIC_IP,
    ``rebind.example`` is _PUBLIC_IP at its first lookup and 127.0.0.1 after that."""
    for _ in range(20):
        public = Server("127.0.0.2")
        try:
            admin = Server("127.0.0.1", public.server_address[1])
            break
        except OSError:  # the port is taken on 127.0.0.1: try another
            public.server_close()
    else:
        pytest.fail("no port free on both 127.0.0.1 and 127.0.0.2 in 20 tries", pytrace=False)
    port = public.server_address[1]
    for each in (public, admin):
        threading.Thread(target=each.serve_forever, daemon=True).start()
    lookups: collections.Counter[str] = collections.Counter()
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def getaddrinfo(host, *args, **kwargs):
        if host in ("public.example", "rebind.example"):
            lookups[host] += 1
            first = host == "public.example" or lookups[host] == 1
            address = _PUBLIC_IP if first else "127.0.0.1"
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, args[0]))]
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(sock, address):
        if address[0] == _PUBLIC_IP:
            address = ("127.0.0.2", address[1])
        return real_connect(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    yield {"public": public, "admin": admin, "port": port, "lookups": lookups}
    for each in (public, admin):
        each.shutdown()
        each.server_close()


def test_a_redirect_to_an_address_inside_the_network_is_refused(public_and_admin, tmp_path):
    port = public_and_admin["port"]
    public, admin = public_and_admin["public"], public_and_admin["admin"]
    hops = {
        "/to-admin.jpg": f"http://127.0.0.1:{port}/good.jpg",
        "/to-localhost.jpg": f"http://localhost:{port}/good.jpg",
        "/to-mapped.jpg": f"http://[::ffff:7f00:1]:{port}/good.jpg",
        "/to-metadata.jpg": "http://169.254.169.254/latest/meta-data/iam/",
        "/to-public.jpg": f"http://public.example:{port}/good.png",
    }
    for path, location in hops.items():
        ROUTES[path] = lambda h, seen, q, location=location: h._send(
            301, headers=[("Location", location)]
        )
    try:
        urls = [f"http://public.example:{port}{path}" for path in hops]
        _, tar, status = _run(urls, tmp_path, _params(allow_private=False, retries=0))
        results = read_downloads(tar, status)
    finally:
        for path in hops:
            ROUTES.pop(path, None)
    assert results[0] == "refused address 127.0.0.1 (loopback)"
    assert results[1] in {"refused address 127.0.0.1 (loopback)", "refused address ::1 (loopback)"}
    assert results[2] == "refused address ::ffff:127.0.0.1 (loopback)"
    assert results[3] == "refused address 169.254.169.254 (link-local)"
    assert results[4] == GOOD_PNG  # a redirect between public hosts still works
    assert admin.snapshot() == collections.Counter()
    assert sum(public.snapshot().values()) == len(hops) + 1
    assert set(public.hosts) == {f"public.example:{port}"}  # the name, not the address


def test_the_checked_address_is_the_one_connected_to(public_and_admin, tmp_path):
    """DNS rebinding: the name turns into 127.0.0.1 after the check; no second lookup
    may pick that up."""
    port = public_and_admin["port"]
    public, admin = public_and_admin["public"], public_and_admin["admin"]
    urls = [f"http://rebind.example:{port}/seeded.jpg?i=5&run=rebind"]
    counts, tar, status = _run(urls, tmp_path, _params(allow_private=False, retries=0))
    assert admin.snapshot() == collections.Counter()
    assert public.count("/seeded.jpg?i=5&run=rebind") == 1
    assert public_and_admin["lookups"]["rebind.example"] == 1
    assert read_downloads(tar, status) == {0: _seeded_jpeg("i=5")}


def test_through_a_proxy_literal_addresses_are_still_refused(server, tmp_path, monkeypatch):
    monkeypatch.setenv("http_proxy", server.url(""))
    urls = [
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost/admin",
        "http://2130706433/admin",
        "http://images.example.invalid/seeded.jpg?i=43",  # a name: the proxy's to judge
    ]
    before = len(server.proxied)
    _, tar, status = _run(urls, tmp_path, _params(allow_private=False))
    assert read_downloads(tar, status) == {
        0: "refused address 169.254.169.254 (link-local)",
        1: "refused address localhost (loopback)",
        2: "refused address 127.0.0.1 (loopback)",
        3: _seeded_jpeg("i=43"),
    }
    assert [url for url, _ in server.proxied[before:]] == [urls[3]]


# -- parameters ------------------------------------------------------------------------------------


def test_params_take_the_schema_defaults_and_validate():
    defaults = schema_defaults("download")
    params = DownloadParams.from_config(defaults)
    assert (params.connections, params.timeout, params.total_timeout) == (16, 10.0, 60.0)
    assert (params.retries, params.backoff, params.max_bytes) == (3, 1.0, 20_000_000)
    assert (params.retry_failed, params.min_side, params.reject_sha256) == (False, 1, ())
    assert params.allow_private is False
    digest = "AB" * 32
    given = defaults | {"reject_sha256": [digest]}
    assert DownloadParams.from_config(given).reject_sha256 == ("ab" * 32,)
    with pytest.raises(ValueError, match="download.threads: unknown key"):
        DownloadParams.from_config(defaults | {"threads": 4})
    with pytest.raises(ValueError, match="download.connections: missing"):
        DownloadParams.from_config({})
    bad = [
        {"connections": 0},
        {"timeout": 0},
        {"retries": -1},
        {"retry_failed": "yes"},
        {"allow_private": "yes"},
        {"reject_sha256": ["abc"]},
        {"reject_sha256": "ab" * 32},
        {"min_side": 1.5},
    ]
    for cfg in bad:
        with pytest.raises(ValueError, match=f"download.{next(iter(cfg))}"):
            DownloadParams.from_config(defaults | cfg)


# -- URL lists -------------------------------------------------------------------------------------


def test_parse_url_list_reads_both_styles(tmp_path):
    path = tmp_path / "urls.txt"
    path.write_bytes(
        b"# fall11 style, then plain\n"
        b"n01440764_10026\thttp://farm1.static.flickr.com/145/430300483_21e993670c.jpg\n"
        b"n01440764_10027\thttp://www.example.com/a.JPG\r\n"
        b"\n"
        b"   \n"
        b"https://example.org/plain.png\n"
        b"n09999999_1\tHTTPS://Example.com/upper.jpg\n"
    )
    entries, problems = parse_url_list(path)
    assert problems == []
    assert entries == [
        UrlEntry(
            "n01440764_10026",
            "http://farm1.static.flickr.com/145/430300483_21e993670c.jpg",
            "n01440764",
        ),
        UrlEntry("n01440764_10027", "http://www.example.com/a.JPG", "n01440764"),
        UrlEntry("https://example.org/plain.png", "https://example.org/plain.png", ""),
        UrlEntry("n09999999_1", "HTTPS://Example.com/upper.jpg", "n09999999"),
    ]


def test_parse_url_list_reports_bad_lines_and_duplicates(tmp_path):
    path = tmp_path / "urls.txt"
    path.write_bytes(
        b"n01_1\thttp://a.example/1.jpg\n"
        b"n01_2\tftp://a.example/2.jpg\n"
        b"just some words\n"
        b"n01_1\thttp://a.example/again.jpg\n"
        b"http://\n"
        b"http:///no-host.jpg\n"
        b"\thttp://a.example/no-key.jpg\n"
        b"http://a.example/plain.jpg\n"
        b"http://a.example/plain.jpg\n"
        b"n01_3\thttp://a.example/1.jpg\n"  # same URL, new key: allowed (ImageNet has these)
    )
    entries, problems = parse_url_list(path)
    assert [entry.key for entry in entries] == ["n01_1", "http://a.example/plain.jpg", "n01_3"]
    assert [line for line, _ in problems] == [2, 3, 4, 5, 6, 7, 9]
    reasons = dict(problems)
    assert reasons[2].startswith("not an http(s) URL: 'ftp://")
    assert reasons[4] == "duplicate key 'n01_1'"
    assert reasons[7] == "empty key"
    assert reasons[9] == "duplicate key 'http://a.example/plain.jpg'"


def test_parse_url_list_percent_encodes_non_ascii(tmp_path):
    path = tmp_path / "urls.txt"
    path.write_bytes(
        b"n02_1\thttp://a.example/caf\xc3\xa9 au lait.jpg\n"  # UTF-8
        b"n02_2\thttp://a.example/na\xefve.jpg?q=\xe9\n"  # Latin-1: not UTF-8 at all
        b"n02_3\thttp://b\xc3\xbccher.example/x.jpg\n"  # non-ASCII host
        b"n02_4\thttp://bad\xff.example/x.jpg\n"  # a host that is not text
        b"n0\xff_5\thttp://a.example/x.jpg\n"  # a key that is not text
    )
    entries, problems = parse_url_list(path)
    assert [entry.url for entry in entries] == [
        "http://a.example/caf%C3%A9%20au%20lait.jpg",
        "http://a.example/na%EFve.jpg?q=%E9",
        "http://xn--bcher-kva.example/x.jpg",
    ]
    assert [line for line, _ in problems] == [4, 5]
    assert problems[1][1].startswith("key is not UTF-8")


def test_parse_url_list_gives_the_same_entry_however_a_line_is_padded(tmp_path):
    """Clean lines take a fast path, padded ones the general parser: same results."""
    clean = [b"n01_1\thttp://a.example/1.jpg", b"https://a.example/2.jpg"]
    padded = [b"  n01_1 \t http://a.example/1.jpg \x0c", b"\x0bhttps://a.example/2.jpg  "]
    results = []
    for name, lines in (("clean", clean), ("padded", padded)):
        path = tmp_path / name
        path.write_bytes(b"\r\n".join(lines) + b"\r\n")
        results.append(parse_url_list(path))
    assert results[0] == results[1]
    assert results[0][0] == [
        UrlEntry("n01_1", "http://a.example/1.jpg", "n01"),
        UrlEntry("https://a.example/2.jpg", "https://a.example/2.jpg", ""),
    ]


def test_parse_url_list_shares_wnid_strings(tmp_path):
    path = tmp_path / "urls.txt"
    path.write_text("".join(f"n01440764_{i}\thttp://a.example/{i}.jpg\n" for i in range(5)))
    entries, _ = parse_url_list(path)
    assert len({id(entry.wnid) for entry in entries}) == 1
