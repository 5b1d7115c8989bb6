"""Download one shard's URLs into a tar of original bytes plus a status table.

Dead links are the normal case for old URL lists (ImageNet's ``fall11_urls.txt`` loses
about a third of its Flickr links), so every URL ends as a row with a short reason rather
than as an error. Each finished outcome is cached under ``cache_dir`` as soon as it is
known, keyed by the URL, so a killed job fetches only what is missing and nothing that
finished is ever fetched twice. The shard's outputs are assembled from that cache in
position order, which makes them independent of thread count and completion order.

A URL list is untrusted input: by default no request reaches a loopback, private,
link-local, multicast, reserved or unspecified address (cloud metadata at
169.254.169.254, an admin page on localhost). Each host name is resolved once, every
address is checked, and the connection goes to a checked address, so a second DNS
answer cannot swap in another one; the same holds for every redirect hop.
``download.allow_private`` lifts the rule (a mirror on the local network, tests).
"""

from __future__ import annotations

import base64
import collections
import contextlib
import dataclasses
import functools
import gc
import hashlib
import http.client
import io
import ipaddress
import random
import re
import socket
import ssl
import tarfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote, urljoin, urlsplit

from PIL import Image, UnidentifiedImageError

from imgprep.atomic import atomic_write
from imgprep.files.tars import reproducible_tar_info
from imgprep.sourcefile import open_source

__all__ = [
    "STATUS_COLUMNS",
    "address_refusal",
    "DownloadParams",
    "UrlEntry",
    "cache_paths",
    "download_shard",
    "parse_url_list",
    "read_downloads",
]

STATUS_COLUMNS = ("position", "url", "status", "reason", "bytes", "sha256")
MAX_REDIRECTS = 10
_TEXT = {"encoding": "utf-8", "errors": "surrogateescape", "newline": "\n"}
_LOG_EVERY_S = 10.0
_KEEPALIVE_PER_THREAD = 8
_DRAIN_LIMIT = 64 * 1024
_CHUNK = 64 * 1024
_DEADLINE_SLACK_S = 0.01
_TOO_SLOW = "too slow"


# -- URL lists ----------------------------------------------------------------------------


class UrlEntry(NamedTuple):
    """One usable line of a URL list (a tuple: 14M of them must stay cheap)."""

    key: str
    url: str
    wnid: str


# bytes a request line cannot carry: controls, space, DEL and everything non-ASCII
_UNSAFE_BYTES = re.compile(rb"[\x00-\x20\x7f-\xff]")


def parse_url_list(path) -> tuple[list[UrlEntry], list[tuple[int, str]]]:
    """Read a URL list; return (entries in file order, [(line number, problem)]).

    Takes ``<key>\\t<url>`` lines (fall11 style; the wnid is the key up to its last
    ``_``) and bare-URL lines (the URL is the key), mixed freely. Works on bytes because
    fall11_urls.txt is not valid UTF-8 throughout: URLs with non-ASCII bytes are
    percent-encoded byte for byte, which is what the server originally published.
    """
    entries: list[UrlEntry] = []
    problems: list[tuple[int, str]] = []
    seen: set[str] = set()
    wnids: dict[str, str] = {}  # one string object per wnid, not one per line
    fast_line = _PLAIN_ASCII_LINE.fullmatch
    with open_source(path, "rb") as handle, _no_gc():
        for lineno, raw in enumerate(handle, 1):
            match = fast_line(raw)
            if match is not None:  # almost every line: one regex, no other parsing
                key_bytes, url_bytes = match.groups()
                url = url_bytes.decode("ascii")
                if key_bytes is None:
                    key, wnid = url, ""
                else:
                    key = key_bytes.decode("ascii")
                    wnid = key.rpartition("_")[0]
                    wnid = wnids.setdefault(wnid, wnid)
            else:
                parsed = _parse_line(raw)
                if parsed is None:
                    continue
                if isinstance(parsed, str):
                    problems.append((lineno, parsed))
                    continue
                key, url, wnid = parsed
                wnid = wnids.setdefault(wnid, wnid)
            size = len(seen)
            seen.add(key)
            if len(seen) == size:
                problems.append((lineno, f"duplicate key {key!r}"))
                continue
            entries.append(UrlEntry(key, url, wnid))
    return entries, problems


@contextlib.contextmanager
def _no_gc():
    """Pause the cycle collector: millions of new tuples make it rescan the growing list
    over and over (it doubled the time of a 2M-line parse); strings and tuples of
    strings form no cycles to collect."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# a line needing no decoding decisions: optional key (not starting with '#'), a tab, and an
# http(s) URL of printable ASCII whose host part is not empty
_PLAIN_ASCII_LINE = re.compile(
    rb"(?:([\x21\x22\x24-\x7e][\x21-\x7e]*)\t)?"
    rb"((?i:https?)://[\x21\x22\x24-\x2e\x30-\x3e\x40-\x7e][\x21-\x7e]*)[ \t]*\r?\n?"
)


def _parse_line(raw: bytes) -> tuple[str, str, str] | str | None:
    """(key, url, wnid), a problem, or None for blank and comment lines."""
    line = raw.strip(b" \r\n\x0b\x0c")  # not tabs: a leading one means an empty key
    if not line or line[0] == 0x23:  # '#'
        return None
    key_bytes, tab, url_bytes = line.partition(b"\t")
    if not tab:
        url_bytes = line
    url_bytes = url_bytes.strip()
    url = _url_from_bytes(url_bytes)
    if url is None:
        return f"not an http(s) URL: {_preview(url_bytes)}"
    if not tab:
        return url, url, ""
    key_bytes = key_bytes.strip()
    try:
        key = key_bytes.decode()
    except UnicodeDecodeError:
        return f"key is not UTF-8: {_preview(key_bytes)}"
    if not key:
        return "empty key"
    return key, url, key.rpartition("_")[0]


def _url_from_bytes(raw: bytes) -> str | None:
    """An ASCII http(s) URL, or None when ``raw`` is not one."""
    head = raw[:8].lower()
    if head.startswith(b"http://"):
        host_at = 7
    elif head.startswith(b"https://"):
        host_at = 8
    else:
        return None
    if len(raw) == host_at or raw[host_at] in b"/?#":
        return None
    if _UNSAFE_BYTES.search(raw) is None:
        return raw.decode("ascii")
    return _encode_url(raw, host_at)


def _encode_url(raw: bytes, host_at: int) -> str | None:
    """Percent-encode unsafe bytes of path and query; IDNA-encode a non-ASCII host."""
    end = len(raw)
    for stop in b"/?#":
        found = raw.find(bytes([stop]), host_at)
        if found != -1:
            end = min(end, found)
    netloc, rest = raw[host_at:end], raw[end:]
    if _UNSAFE_BYTES.search(netloc):
        try:
            text = netloc.decode()
        except UnicodeDecodeError:
            return None
        userinfo, at, hostport = text.rpartition("@")
        host, colon, port = hostport.partition(":")
        if any(ch.isspace() or ord(ch) < 0x20 for ch in text) or not port.isascii():
            return None
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            return None
        userinfo = _percent_encode(userinfo.encode()).decode("ascii")
        netloc = f"{userinfo}{at}{host}{colon}{port}".encode("ascii")
    encoded = raw[:host_at].lower() + netloc + _percent_encode(rest)
    return encoded.decode("ascii")


def _percent_encode(data: bytes) -> bytes:
    return _UNSAFE_BYTES.sub(lambda match: b"%%%02X" % match[0][0], data)


def _preview(data: bytes, limit: int = 60) -> str:
    text = data.decode("utf-8", "backslashreplace")
    return repr(text if len(text) <= limit else text[:limit] + "...")


# -- parameters ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DownloadParams:
    """How hard to try for each URL, and which bytes count as a usable image."""

    connections: int = 16
    timeout: float = 10.0
    total_timeout: float = 60.0
    retries: int = 3
    backoff: float = 1.0
    max_bytes: int = 20_000_000
    user_agent: str = "imgprep/0.1 (+dataset preparation)"
    retry_failed: bool = False
    min_side: int = 1
    reject_sha256: tuple[str, ...] = ()
    allow_private: bool = False

    def __post_init__(self):
        digests = tuple(str(digest).strip().lower() for digest in self.reject_sha256)
        for digest in digests:
            if not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise ValueError(f"download.reject_sha256: not a sha256 hex digest: {digest!r}")
        object.__setattr__(self, "reject_sha256", digests)
        for name in ("connections", "max_bytes", "min_side"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"download.{name}: must be an integer >= 1, got {value!r}")
        if not _is_int(self.retries) or self.retries < 0:
            raise ValueError(f"download.retries: must be an integer >= 0, got {self.retries!r}")
        for name in ("timeout", "total_timeout"):
            value = getattr(self, name)
            if not _is_number(value) or value <= 0:
                raise ValueError(f"download.{name}: must be a number > 0, got {value!r}")
        if not _is_number(self.backoff) or self.backoff < 0:
            raise ValueError(f"download.backoff: must be a number >= 0, got {self.backoff!r}")
        for name in ("retry_failed", "allow_private"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(
                    f"download.{name}: must be true or false, got {getattr(self, name)!r}"
                )
        if not isinstance(self.user_agent, str) or not self.user_agent.isprintable():
            raise ValueError(
                f"download.user_agent: must be printable text, got {self.user_agent!r}"
            )

    @classmethod
    def from_config(cls, cfg: dict | None) -> DownloadParams:
        """Build from the config's ``download:`` mapping (missing keys take the defaults)."""
        cfg = dict(cfg or {})
        known = [field.name for field in dataclasses.fields(cls)]
        for key in cfg:
            if key not in known:
                raise ValueError(f"download.{key}: unknown key (known: {', '.join(known)})")
        if "reject_sha256" in cfg:
            digests = cfg["reject_sha256"]
            if isinstance(digests, str) or not isinstance(digests, list | tuple):
                raise ValueError(f"download.reject_sha256: must be a list, got {digests!r}")
            cfg["reject_sha256"] = tuple(digests)
        return cls(**cfg)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# -- the cache ------------------------------------------------------------------------------


def cache_paths(cache_dir, url: str) -> tuple[Path, Path]:
    """(image file, failure file) for ``url``: one of them exists once it is finished.

    Fanned out over 256 folders so a cache shared by 14M URLs keeps folders small.
    """
    digest = hashlib.sha256(url.encode("utf-8", "surrogateescape")).hexdigest()
    folder = Path(cache_dir) / digest[:2]
    return folder / f"{digest}.img", folder / f"{digest}.fail"


def _cached(cache_dir, url: str, params: DownloadParams) -> bool:
    image, failure = cache_paths(cache_dir, url)
    if image.exists():
        return True
    if params.retry_failed or not failure.exists():
        return False
    # a refusal is the policy's verdict, not the server's: allowing private addresses
    # later must fetch the URL rather than keep the old refusal
    return not (params.allow_private and _is_refusal(failure.read_text("utf-8", "replace")))


def _store(cache_dir, url: str, data: bytes | None, reason: str) -> None:
    image, failure = cache_paths(cache_dir, url)
    if data is not None:
        with atomic_write(image, "wb") as handle:
            handle.write(data)
        with contextlib.suppress(FileNotFoundError):
            failure.unlink()
    else:
        with atomic_write(failure, "w", **_TEXT) as handle:
            handle.write(_clean(reason) + "\n")


def _load(cache_dir, url: str) -> bytes | str:
    image, failure = cache_paths(cache_dir, url)
    try:
        return image.read_bytes()
    except FileNotFoundError:
        pass
    try:
        return failure.read_text("utf-8", "surrogateescape").rstrip("\n")
    except FileNotFoundError:
        raise RuntimeError(f"{url}: no outcome in the cache after downloading") from None


# -- the shard --------------------------------------------------------------------------------


def download_shard(urls, cache_dir, tar_path, status_path, params, log=None) -> tuple[int, int]:
    """Download ``urls`` (position i is urls[i]); return (ok, failed) position counts.

    Writes, each atomically: ``tar_path`` (USTAR, one ``{position:06d}`` member per
    success holding the bytes as served, in position order) and ``status_path`` (TSV
    with a row per position). URLs already in the cache are not fetched; recorded
    failures are fetched again only with ``params.retry_failed``. The size, placeholder
    and minimum-side checks run when the outputs are assembled, so changing them (say,
    adding a placeholder digest found in a first run) needs no new download.
    """
    urls = [str(url) for url in urls]
    cache_dir = Path(cache_dir)
    unique = list(dict.fromkeys(urls))
    todo = [url for url in unique if not _cached(cache_dir, url, params)]
    progress = _Progress(len(unique), len(unique) - len(todo), log)
    if todo:
        _fetch_all(todo, cache_dir, params, progress)
    progress.finish()
    return _assemble(urls, cache_dir, tar_path, status_path, params, log)


def _fetch_all(todo: list[str], cache_dir: Path, params: DownloadParams, progress) -> None:
    connections = _Connections(params)
    workers = min(params.connections, len(todo))

    def work(url: str) -> tuple[bool, int]:
        data, reason = _download(url, params, connections)
        _store(cache_dir, url, data, reason)
        return data is not None, 0 if data is None else len(data)

    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="download") as pool:
            futures = [pool.submit(work, url) for url in todo]
            try:
                for future in as_completed(futures):
                    progress.add(*future.result())
            except BaseException:
                # what is running finishes (bounded by total_timeout) and stays cached
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    finally:
        connections.close_all()


def _assemble(urls, cache_dir, tar_path, status_path, params, log) -> tuple[int, int]:
    """Write the outputs from the cache alone, so they depend on outcomes, not timing."""
    ok = failed = 0
    verdicts: dict[str, str] = {}  # url -> reason ("" for a usable image)
    reasons: collections.Counter[str] = collections.Counter()
    digests: collections.Counter[str] = collections.Counter()
    with contextlib.ExitStack() as stack:
        tar_file = stack.enter_context(atomic_write(tar_path, "wb"))
        status = stack.enter_context(atomic_write(status_path, "w", **_TEXT))
        tar = stack.enter_context(
            tarfile.open(fileobj=tar_file, mode="w", format=tarfile.USTAR_FORMAT)
        )
        status.write("\t".join(STATUS_COLUMNS) + "\n")
        for position, url in enumerate(urls):
            outcome = _load(cache_dir, url)
            size = digest = ""
            if isinstance(outcome, bytes):
                size, digest = str(len(outcome)), hashlib.sha256(outcome).hexdigest()
                if url not in verdicts:
                    verdicts[url] = _judge(outcome, digest, params)
                    if not verdicts[url]:
                        digests[digest] += 1
                reason = verdicts[url]
            else:
                reason = outcome
            if reason:
                failed += 1
                reasons[_reason_kind(reason)] += 1
                row = [str(position), _clean(url), "failed", _clean(reason), size, digest]
            else:
                ok += 1
                tar.addfile(_tar_info(position, len(outcome)), io.BytesIO(outcome))
                row = [str(position), _clean(url), "ok", "", size, digest]
            status.write("\t".join(row) + "\n")
    if log is not None:
        common = ", ".join(f"{kind} {count}" for kind, count in reasons.most_common(6))
        print(f"download: {ok} ok, {failed} failed ({common or 'none'})", file=log, flush=True)
        for digest, count in digests.most_common(3):
            if count >= 3:
                print(
                    f"download: {count} URLs served identical bytes (sha256 {digest}); "
                    "add it to download.reject_sha256 if it is a placeholder",
                    file=log,
                    flush=True,
                )
    return ok, failed


def _judge(data: bytes, digest: str, params: DownloadParams) -> str:
    """Why a decodable download is still not usable, or "" when it is."""
    if len(data) > params.max_bytes:
        return f"too large (> {params.max_bytes} bytes)"
    if digest in params.reject_sha256:
        return "placeholder image"
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Exception as error:  # cached bytes decoded once; only a changed Pillow gets here
        return f"not an image ({type(error).__name__})"
    if min(width, height) < params.min_side:
        return f"too small ({width}x{height})"
    return ""


def _reason_kind(reason: str) -> str:
    """A reason without its numbers, for the summary line."""
    return re.sub(r" \(.*\)| after \d+ attempts|(?<=^refused address) \S+", "", reason)


def _tar_info(position: int, size: int) -> tarfile.TarInfo:
    return reproducible_tar_info(f"{position:06d}", size)


def _clean(text: str) -> str:
    return text.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def read_downloads(tar_path, status_path) -> dict[int, bytes | str]:
    """{position: image bytes, or the failure reason} for every position of a shard."""
    results: dict[int, bytes | str] = {}
    expected: dict[int, tuple[int, str]] = {}
    with open(status_path, **_TEXT) as handle:
        header = handle.readline().rstrip("\n").split("\t")
        if tuple(header) != STATUS_COLUMNS:
            raise ValueError(f"{status_path}: unexpected header {header}")
        for line in handle:
            position, _url, status, reason, size, digest = line.rstrip("\n").split("\t")
            if status == "ok":
                expected[int(position)] = (int(size), digest)
            else:
                results[int(position)] = reason
    with tarfile.open(tar_path, mode="r|") as tar:
        for member in tar:
            if not member.isfile() or not member.name.isdigit():
                raise ValueError(f"{tar_path}: unexpected member {member.name!r}")
            position = int(member.name)
            data = tar.extractfile(member).read()
            if expected.get(position) != (len(data), hashlib.sha256(data).hexdigest()):
                raise ValueError(f"{tar_path}: member {member.name} does not match the status")
            results[position] = data
    missing = sorted(set(expected) - {p for p, v in results.items() if isinstance(v, bytes)})
    if missing:
        raise ValueError(f"{tar_path}: no member for ok positions {missing[:5]}")
    return dict(sorted(results.items()))


class _Progress:
    """Counts outcomes and prints a line now and then (time-based, so logs stay short)."""

    def __init__(self, total: int, cached: int, log):
        self.total, self.cached, self.log = total, cached, log
        self.done = self.ok = self.failed = self.bytes = 0
        self.started = self.last = time.monotonic()

    def add(self, ok: bool, size: int) -> None:
        self.done += 1
        self.ok += ok
        self.failed += not ok
        self.bytes += size
        now = time.monotonic()
        if now - self.last >= _LOG_EVERY_S:
            self.last = now
            self._print(now)

    def finish(self) -> None:
        self._print(time.monotonic())

    def _print(self, now: float) -> None:
        if self.log is None:
            return
        elapsed = max(now - self.started, 1e-9)
        print(
            f"download: {self.cached + self.done}/{self.total} URLs done "
            f"({self.cached} from cache; fetched: {self.ok} images, {self.failed} failures), "
            f"{self.bytes / 1e6:.1f} MB, {self.done / elapsed:.1f} URLs/s, "
            f"{self.bytes / 1e6 / elapsed:.2f} MB/s",
            file=self.log,
            flush=True,
        )


# -- one URL ----------------------------------------------------------------------------------


class _Failure(Exception):
    """One attempt's failure; ``transient`` ones are worth another attempt."""

    def __init__(self, reason: str, transient: bool = False, wait: float = 0.0):
        super().__init__(reason)
        self.reason, self.transient, self.wait = reason, transient, wait


def _download(url: str, params: DownloadParams, connections) -> tuple[bytes | None, str]:
    """(image bytes, "") or (None, reason). Never raises for what a server does."""
    deadline = time.monotonic() + params.total_timeout
    attempt = 0
    while True:
        attempt += 1
        try:
            data, content_type = _attempt(url, params, connections, deadline)
        except _Failure as failure:
            reason = failure.reason
            if reason == _TOO_SLOW:
                reason = f"too slow (over {params.total_timeout:g} s)"
            if attempt > 1:
                reason += f" after {attempt} attempts"
            if not failure.transient or attempt > params.retries:
                return None, reason
            delay = max(_backoff(url, attempt, params.backoff), failure.wait)
            if time.monotonic() + delay >= deadline:
                return None, reason
            time.sleep(delay)
            continue
        except Exception as error:
            # a URL that trips up http.client or socket in a way not mapped above must not
            # fail the shard on every rerun; the row names the error so it can be mapped
            return None, f"unexpected error ({type(error).__name__}: {_short(error)})"
        return _check_image(data, content_type)


def _backoff(url: str, attempt: int, base: float) -> float:
    """Exponential, with jitter seeded by URL and attempt so reruns wait alike."""
    jitter = random.Random(f"{attempt}\0{url}").random()
    return base * 2 ** (attempt - 1) * (0.5 + jitter)


def _check_image(data: bytes, content_type: str) -> tuple[bytes | None, str]:
    """Judge by content: servers send HTML error pages with 200 and any Content-Type."""
    if not data:
        return None, "empty body"
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            limit = Image.MAX_IMAGE_PIXELS
            if limit and width * height > limit:
                return None, f"too many pixels ({width}x{height})"
            image.load()
    except Image.DecompressionBombError:
        return None, "too many pixels"
    except UnidentifiedImageError:
        return None, f"not an image ({content_type or 'no Content-Type'})"
    except Exception as error:  # decoders raise OSError, SyntaxError, ValueError, ...
        return None, f"broken image ({_short(error)})"
    return data, ""


def _short(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text[:80]


def _attempt(url: str, params: DownloadParams, connections, deadline: float) -> tuple[bytes, str]:
    """One try: follow redirects, then read the body within every limit."""
    for hop in range(MAX_REDIRECTS + 1):
        try:
            target = _Target.parse(url)
        except _Failure as failure:
            raise _Failure(f"bad redirect ({failure.reason})") if hop else failure from None
        exchange = connections.request(target, deadline)
        response = exchange.response
        status = response.status
        if status in (301, 302, 303, 307, 308):
            location = response.getheader("Location")
            connections.discard(exchange, deadline)
            if not location:
                raise _Failure(f"HTTP {status} without Location")
            url = urljoin(url, _location(location))
            continue
        if status >= 300:
            wait = _retry_after(response.getheader("Retry-After"))
            connections.discard(exchange, deadline)
            transient = status in (408, 429) or status >= 500
            raise _Failure(f"HTTP {status}", transient=transient, wait=wait)
        content_type = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
        data = _read_body(exchange, params, deadline)
        connections.release(exchange)
        return data, content_type
    raise _Failure("too many redirects")


def _location(value: str) -> str:
    """A Location header as text, its non-ASCII bytes percent-encoded."""
    raw = value.encode("latin-1", "replace")  # http.client decoded the header as latin-1
    return _percent_encode(raw.strip()).decode("ascii")


def _retry_after(value: str | None) -> float:
    """Seconds a 429/503 asks for (integer form only), capped so one URL cannot stall."""
    if value and value.strip().isdigit():
        return min(float(value.strip()), 60.0)
    return 0.0


def _read_body(exchange, params: DownloadParams, deadline: float) -> bytes:
    """Stream the body, stopping at max_bytes and at the URL's deadline."""
    response = exchange.response
    length = response.length  # None when the server did not say
    too_large = f"too large (> {params.max_bytes} bytes)"
    if length is not None and length > params.max_bytes:
        exchange.close()
        raise _Failure(too_large)
    chunks, received = [], 0
    try:
        while True:
            exchange.arm(params.timeout, deadline)
            chunk = response.read1(_CHUNK)
            if not chunk:
                break
            received += len(chunk)
            if received > params.max_bytes:
                raise _Failure(too_large)
            chunks.append(chunk)
    except http.client.IncompleteRead:
        exchange.close()
        raise _Failure(f"truncated (got {received} bytes)", transient=True) from None
    except _Failure:
        exchange.close()
        raise
    except (OSError, http.client.HTTPException) as error:
        exchange.close()
        raise _network_failure(error, deadline) from None
    if length is not None and received < length:
        exchange.close()
        raise _Failure(f"truncated (got {received} of {length} bytes)", transient=True)
    return b"".join(chunks)


def _network_failure(error: BaseException, deadline: float) -> _Failure:
    """Map a socket-level error to a reason; refused and unknown hosts are final."""
    if isinstance(error, TimeoutError):
        # the socket timeout is cut to what is left of the URL's time, so a timeout at
        # the deadline means a server too slow overall, not an idle one
        if time.monotonic() >= deadline - _DEADLINE_SLACK_S:
            return _too_slow()
        return _Failure("timeout", transient=True)
    if isinstance(error, ConnectionRefusedError):
        return _Failure("connection refused")
    if isinstance(error, socket.gaierror):
        if error.errno == socket.EAI_AGAIN:
            return _Failure("DNS lookup failed", transient=True)
        return _Failure("unknown host")
    if isinstance(error, ssl.SSLCertVerificationError):
        return _Failure(f"TLS certificate error ({error.verify_message})")
    if isinstance(error, ssl.SSLError):
        return _Failure(f"TLS error ({error.reason or _short(error)})")
    if isinstance(error, http.client.RemoteDisconnected | ConnectionResetError | BrokenPipeError):
        return _Failure("connection closed", transient=True)
    if isinstance(error, http.client.HTTPException):
        return _Failure(f"bad HTTP response ({type(error).__name__})")
    return _Failure(f"connection error ({error.strerror or type(error).__name__})", transient=True)


def _too_slow() -> _Failure:
    """Out of the URL's time; _download adds the limit (bytes so far would vary by run)."""
    return _Failure(_TOO_SLOW)


# -- which addresses a URL may reach -------------------------------------------------------

_REFUSED = "refused address"
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# checked in this order, so an address gets its most telling name
_NON_PUBLIC = (
    ("unspecified", lambda address: address.is_unspecified),
    ("loopback", lambda address: address.is_loopback),
    ("link-local", lambda address: address.is_link_local),
    ("multicast", lambda address: address.is_multicast),
    ("site-local", lambda address: getattr(address, "is_site_local", False)),
    ("reserved", lambda address: address.is_reserved),
    ("private", lambda address: address.is_private),
    ("not globally routable", lambda address: not address.is_global),
)


def address_refusal(address: str) -> str | None:
    """Why ``address`` (an IP in text form) is off limits by default, or None if public.

    IPv6 forms that carry an IPv4 address (``::ffff:127.0.0.1``, 6to4, NAT64) are
    judged by the IPv4 address they reach.
    """
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        ip = ip.ipv4_mapped or ip.sixtofour or _nat64_ipv4(ip) or ip
    for kind, applies in _NON_PUBLIC:
        if applies(ip):
            return f"{_REFUSED} {address} ({kind})"
    return None


def _nat64_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _is_refusal(reason: str) -> bool:
    return reason.startswith(_REFUSED)


def _literal_refusal(host: str) -> str | None:
    """The refusal for a host that names an address without DNS (``127.0.0.1``,
    ``[::1]``, ``2130706433``, ``0x7f.1``, ``localhost``), or None.

    Used where a proxy resolves the name, so only what the URL itself says can be
    checked here.
    """
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):  # RFC 6761: always loopback
        return f"{_REFUSED} {host} (loopback)"
    try:
        return address_refusal(str(ipaddress.ip_address(name.partition("%")[0])))
    except ValueError:
        pass
    if re.fullmatch(r"[0-9a-fx.]+", name):  # the decimal, octal and hex forms inet_aton reads
        try:
            return address_refusal(socket.inet_ntoa(socket.inet_aton(name)))
        except OSError:
            return None
    return None


def _resolve(host: str, port: int) -> list[tuple]:
    """getaddrinfo's answers for a TCP connection (a seam for the tests)."""
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)


def _allowed_addresses(host: str, port: int, allow_private: bool) -> list[tuple]:
    """Resolve ``host`` once; the answers a connection may use, or a refusal."""
    answers = list(dict.fromkeys(_resolve(host, port)))
    if not answers:
        raise _Failure("unknown host")
    if allow_private:
        return answers
    allowed, refusals = [], []
    for answer in answers:
        refusal = address_refusal(answer[4][0])
        if refusal is None:
            allowed.append(answer)
        else:
            refusals.append(refusal)
    if not allowed:
        raise _Failure(refusals[0])
    return allowed


def _pinned_connection(answers, _address, timeout=None, source_address=None):
    """``HTTPConnection._create_connection`` for a connection pinned to ``answers``."""
    return _open_socket(answers, timeout, source_address)


def _open_socket(answers: list[tuple], timeout, source_address=None) -> socket.socket:
    """Connect to the first of the checked ``answers`` that accepts, as
    ``socket.create_connection`` would after its own lookup."""
    error = None
    for family, kind, proto, _canonical, sockaddr in answers:
        sock = socket.socket(family, kind, proto)
        try:
            if isinstance(timeout, int | float):
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as failure:
            sock.close()
            error = failure
    raise error


class _Target(NamedTuple):
    scheme: str
    host: str
    port: int
    request_path: str
    host_header: str

    @classmethod
    def parse(cls, url: str) -> _Target:
        if not url.isascii() or _UNSAFE_BYTES.search(url.encode("ascii")):
            # a URL not from parse_url_list: encode it the same way
            url = _url_from_bytes(url.strip().encode("utf-8", "surrogateescape")) or ""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise _Failure("bad URL") from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise _Failure(f"bad URL (scheme {scheme})" if scheme else "bad URL")
        host = parts.hostname
        if not host:
            raise _Failure("bad URL")
        default = 443 if scheme == "https" else 80
        port = port or default
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host_header = f"[{host}]" if ":" in host else host
        if port != default:
            host_header += f":{port}"
        return cls(scheme, host, port, path, host_header)


@dataclasses.dataclass
class _Exchange:
    """A request's connection, its response, and the socket (kept: http.client drops
    ``conn.sock`` for Connection: close responses while the body is still unread)."""

    conn: http.client.HTTPConnection
    response: http.client.HTTPResponse
    sock: socket.socket | None
    key: tuple

    def arm(self, timeout: float, deadline: float) -> None:
        """Give the next read the idle timeout, or what is left of the URL's time."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise _too_slow()
        if self.sock is not None:
            self.sock.settimeout(min(timeout, left))

    def close(self) -> None:
        self.response.close()
        self.conn.close()


class _Connections:
    """Keep-alive connections per thread: Flickr-heavy lists hit a few hosts again and again.

    A TLS handshake costs more than a typical 100 KB image, so reuse matters. Each
    thread has its own small pool (http.client connections are not thread-safe); all of
    them are closed at the end of the shard.
    """

    def __init__(self, params: DownloadParams):
        self.params = params
        self.local = threading.local()
        self.lock = threading.Lock()
        self.pools: list[collections.OrderedDict] = []  # every thread's, to close at the end
        self.proxies = urllib.request.getproxies()
        self.tls = ssl.create_default_context()

    def _pool(self) -> collections.OrderedDict:
        pool = getattr(self.local, "pool", None)
        if pool is None:
            pool = self.local.pool = collections.OrderedDict()
            with self.lock:
                self.pools.append(pool)
        return pool

    def request(self, target: _Target, deadline: float) -> _Exchange:
        """Send a GET and return the exchange with the response headers read."""
        key = (target.scheme, target.host, target.port)
        conn = self._pool().pop(key, None)
        reused = conn is not None
        if conn is None:
            conn = self._connect(target, deadline)
        try:
            return self._send(conn, target, key, deadline)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as error:
            conn.close()
            if not reused:
                raise _network_failure(error, deadline) from None
        # the server dropped an idle keep-alive connection: a new one, not a new attempt
        conn = self._connect(target, deadline)
        try:
            return self._send(conn, target, key, deadline)
        except (OSError, http.client.HTTPException) as error:
            conn.close()
            raise _network_failure(error, deadline) from None

    def _send(self, conn, target: _Target, key: tuple, deadline: float) -> _Exchange:
        left = deadline - time.monotonic()
        if left <= 0:
            conn.close()
            raise _too_slow()
        conn.timeout = min(self.params.timeout, left)
        if conn.sock is not None:
            conn.sock.settimeout(conn.timeout)
        try:
            conn.putrequest("GET", self._request_target(conn, target), skip_host=True)
            conn.putheader("Host", target.host_header)
            conn.putheader("User-Agent", self.params.user_agent)
            conn.putheader("Accept", "image/*,*/*;q=0.5")
            conn.putheader("Accept-Encoding", "identity")
            if getattr(conn, "proxy_auth", None):
                conn.putheader("Proxy-Authorization", conn.proxy_auth)
            conn.endheaders()
            sock = conn.sock
            response = conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            raise
        except (http.client.InvalidURL, UnicodeError):  # UnicodeError: IDNA, e.g. "a..b"
            conn.close()
            raise _Failure("bad URL") from None
        except (OSError, http.client.HTTPException) as error:
            conn.close()
            raise _network_failure(error, deadline) from None
        return _Exchange(conn, response, sock, key)

    def _connect(self, target: _Target, deadline: float) -> http.client.HTTPConnection:
        """A new, not yet opened connection (it opens on the first request).

        Without a proxy the host is resolved here, once, and the connection is pinned
        to the checked answers; TLS still sends the host name (SNI) and checks the
        certificate against it. Through a proxy, which resolves the name itself, only
        an address written in the URL can be checked.
        """
        proxy = self._proxy(target)
        answers = None
        if proxy is None:
            host, port, auth = target.host, target.port, None
            try:
                answers = _allowed_addresses(host, port, self.params.allow_private)
            except UnicodeError:  # IDNA, e.g. "a..b"
                raise _Failure("bad URL") from None
            except OSError as error:
                raise _network_failure(error, deadline) from None
        else:
            host, port, auth = proxy
            refusal = None if self.params.allow_private else _literal_refusal(target.host)
            if refusal:
                raise _Failure(refusal)
        if target.scheme == "https":
            conn = http.client.HTTPSConnection(host, port, context=self.tls)
            if proxy is not None:
                headers = {"Proxy-Authorization": auth} if auth else None
                conn.set_tunnel(target.host, target.port, headers=headers)
        else:
            conn = http.client.HTTPConnection(host, port)
            conn.via_proxy = proxy is not None
            conn.proxy_auth = auth
        if answers is not None:
            # http.client opens its socket through this attribute (its lookup and
            # connect in one); replaced so no second lookup can pick another address
            conn._create_connection = functools.partial(_pinned_connection, answers)
        return conn

    def _proxy(self, target: _Target) -> tuple[str, int, str | None] | None:
        """(host, port, Proxy-Authorization value) of the proxy the environment names
        (http_proxy, https_proxy, no_proxy), or None."""
        proxy = self.proxies.get(target.scheme)
        if not proxy or urllib.request.proxy_bypass(target.host):
            return None
        parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if not parts.hostname:
            return None
        auth = None
        if parts.username is not None:
            user, password = unquote(parts.username), unquote(parts.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            auth = f"Basic {token}"
        return parts.hostname, parts.port or 80, auth

    @staticmethod
    def _request_target(conn, target: _Target) -> str:
        """Origin form, or the absolute form a plain-HTTP proxy needs."""
        if getattr(conn, "via_proxy", False):
            return f"{target.scheme}://{target.host_header}{target.request_path}"
        return target.request_path

    def release(self, exchange: _Exchange) -> None:
        """Pool the connection if its response was read to the end and may be reused."""
        response = exchange.response
        finished = response.isclosed() or response.length == 0
        if response.will_close or not finished:
            exchange.conn.close()
            response.close()
            return
        response.close()
        pool = self._pool()
        pool[exchange.key] = exchange.conn
        while len(pool) > _KEEPALIVE_PER_THREAD:
            _key, old = pool.popitem(last=False)
            old.close()

    def discard(self, exchange: _Exchange, deadline: float) -> None:
        """Finish with a response whose body is not wanted; keep the connection if cheap."""
        response = exchange.response
        length = response.length
        if response.will_close or length is None or length > _DRAIN_LIMIT:
            exchange.conn.close()
            response.close()
            return
        try:
            exchange.arm(self.params.timeout, deadline)
            response.read()
        except (_Failure, OSError, http.client.HTTPException):
            exchange.conn.close()
            response.close()
            return
        self.release(exchange)

    def close_all(self) -> None:
        """Close the pooled connections; the others were closed when they failed."""
        with self.lock:
            for pool in self.pools:
                while pool:
                    pool.popitem()[1].close()
