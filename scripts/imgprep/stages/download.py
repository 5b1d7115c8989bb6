"""The download stage: one shard's URLs into a tar of original bytes plus a status table.

Dead links are the normal case for old URL lists (ImageNet's ``fall11_urls.txt`` loses
about a third of its Flickr links), so every URL ends as a row with a short reason rather
than as an error. Each finished outcome is cached under ``cache_dir`` as soon as it is
known, keyed by the URL, so a killed job fetches only what is missing and nothing that
finished is ever fetched twice. The shard's outputs are assembled from that cache in
position order, which makes them independent of thread count and completion order.
Fetching (retries, the private-address guard) is ``imgprep.http``; parsing the list,
``imgprep.sources.url_list``.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import io
import re
import tarfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from imgprep.atomic import atomic_write
from imgprep.files.tables import INDEX_COLUMNS, INDEX_INTS, STATUS_COLUMNS, TEXT, clean, read_tsv
from imgprep.files.tars import reproducible_tar_info
from imgprep.http import Connections, fetch, is_refusal, short_error
from imgprep.progress import Progress
from imgprep.sections import require_keys

__all__ = ["DownloadParams", "cache_paths", "download_shard", "read_downloads"]


# -- parameters ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DownloadParams:
    """How hard to try for each URL, and which bytes count as a usable image.

    No defaults here: they are the schema's (``download:``), filled in by config
    validation; ``from_config`` takes that validated mapping.
    """

    connections: int
    timeout: float
    total_timeout: float
    retries: int
    backoff: float
    max_bytes: int
    user_agent: str
    retry_failed: bool
    min_side: int
    reject_sha256: tuple[str, ...]
    allow_private: bool

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
    def from_config(cls, cfg: dict) -> DownloadParams:
        """Build from the validated config's ``download:`` mapping (every key present)."""
        cfg = dict(cfg)
        known = [field.name for field in dataclasses.fields(cls)]
        require_keys("download", cfg, known)
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
    return not (params.allow_private and is_refusal(failure.read_text("utf-8", "replace")))


def _store(cache_dir, url: str, data: bytes | None, reason: str) -> None:
    image, failure = cache_paths(cache_dir, url)
    if data is not None:
        with atomic_write(image, "wb") as handle:
            handle.write(data)
        with contextlib.suppress(FileNotFoundError):
            failure.unlink()
    else:
        with atomic_write(failure, "w", **TEXT) as handle:
            handle.write(clean(reason) + "\n")


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
    connections = Connections(params)
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
        status = stack.enter_context(atomic_write(status_path, "w", **TEXT))
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
                row = [str(position), clean(url), "failed", clean(reason), size, digest]
            else:
                ok += 1
                tar.addfile(_tar_info(position, len(outcome)), io.BytesIO(outcome))
                row = [str(position), clean(url), "ok", "", size, digest]
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


def read_downloads(tar_path, status_path) -> dict[int, bytes | str]:
    """{position: image bytes, or the failure reason} for every position of a shard."""
    results: dict[int, bytes | str] = {}
    expected: dict[int, tuple[int, str]] = {}
    with open(status_path, **TEXT) as handle:
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


def downloads_for(urls: list[str], fetched) -> dict[int, bytes | str]:
    """{position in ``urls``: bytes, or the failure reason} from the download jobs that
    fetched them: ``fetched`` yields (tar, status, source shard list) of each. A dataset
    shard draws from the source shards its images hash to; a URL the list holds twice
    has one download."""
    by_url: dict[str, bytes | str] = {}
    for tar_path, status_path, index_path in fetched:
        source_urls = list(read_tsv(index_path, INDEX_COLUMNS, ints=INDEX_INTS)["path"])
        for position, result in read_downloads(tar_path, status_path).items():
            by_url[source_urls[position]] = result
    missing = [url for url in urls if url not in by_url]
    if missing:
        raise ValueError(f"{len(missing)} URL(s) in no download of this shard: {missing[:3]}")
    return {position: by_url[url] for position, url in enumerate(urls)}


class _Progress(Progress):
    """URLs done (those found in the cache count as done from the start), with the fetch's
    own counts on every line."""

    def __init__(self, total: int, cached: int, log):
        self.cached, self.ok, self.failed, self.bytes = cached, 0, 0, 0
        super().__init__("download", total, unit="URLs", out=log, done=cached)

    def add(self, ok: bool, size: int) -> None:
        self.ok += ok
        self.failed += not ok
        self.bytes += size
        self.advance()

    def line(self, now: float) -> str:
        return (
            f"{super().line(now)}; {self.cached} from cache; fetched: {self.ok} images, "
            f"{self.failed} failures, {self.bytes / 1e6:.1f} MB"
        )


# -- one URL ----------------------------------------------------------------------------------


def _download(url: str, params: DownloadParams, connections) -> tuple[bytes | None, str]:
    """(image bytes, "") or (None, reason). Never raises for what a server does."""
    data, content_type = fetch(url, params, connections)
    if data is None:
        return None, content_type
    return _check_image(data, content_type)


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
        return None, f"broken image ({short_error(error)})"
    return data, ""
