"""S3 access: list and read objects with one boto3 client per process.

The source images of an ``s3://`` root are no job inputs (the per-shard index lists
are), so Snakemake's S3 plugin never fetches them: the scan lists them here and the
resize workers read them here. The client takes the settings the user gave Snakemake
(--storage-s3-*), which reach the job scripts through the plugin's environment
variables, and falls back to boto3's own chain. boto3 is imported on first use: local
runs never need it.
"""

from __future__ import annotations

import calendar
import errno
import os
import posixpath
from collections.abc import Iterator
from urllib.parse import urlparse

SCHEME = "s3://"
# The S3 storage plugin's own variables (SNAKEMAKE_STORAGE_S3_<SETTING>): the settings a
# user gives Snakemake (--storage-s3-endpoint-url ...) reach the job scripts through them.
PLUGIN_ENV = {
    "endpoint_url": "SNAKEMAKE_STORAGE_S3_ENDPOINT_URL",
    "region": "SNAKEMAKE_STORAGE_S3_REGION",
    "access_key": "SNAKEMAKE_STORAGE_S3_ACCESS_KEY",
    "secret_key": "SNAKEMAKE_STORAGE_S3_SECRET_KEY",
    "token": "SNAKEMAKE_STORAGE_S3_TOKEN",
}
# parallel list and put requests: S3 answers each in tens of milliseconds
REQUESTS_IN_FLIGHT = 16


def is_s3_url(path) -> bool:
    return str(path).startswith(SCHEME)


def split_url(url: str) -> tuple[str, str]:
    """(bucket, key) of ``s3://bucket/key``, the key normalised as the S3 plugin does."""
    parsed = urlparse(str(url))
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"not an s3://bucket/key URL: {url}")
    key = posixpath.normpath(parsed.path.lstrip("/")) if parsed.path.strip("/") else ""
    return parsed.netloc, key


# -- one client per process ------------------------------------------------------------

_CLIENT: tuple[int, object] | None = None


def client():
    """This process's S3 client; a forked pool worker makes its own (sockets do not fork)."""
    global _CLIENT
    if _CLIENT is None or _CLIENT[0] != os.getpid():
        _CLIENT = (os.getpid(), _new_client())
    return _CLIENT[1]


def _new_client():
    import boto3

    def setting(name):
        return os.environ.get(PLUGIN_ENV[name]) or None

    config = boto3.session.Config(
        retries={"max_attempts": 5, "mode": "standard"},
        max_pool_connections=REQUESTS_IN_FLIGHT,
        # checksum trailers confuse S3-compatible servers; ETags stay plain MD5s
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    # unset settings fall back to boto3's own chain (AWS_ENDPOINT_URL, ~/.aws, instance role)
    return boto3.client(
        "s3",
        endpoint_url=setting("endpoint_url"),
        region_name=setting("region"),
        aws_access_key_id=setting("access_key"),
        aws_secret_access_key=setting("secret_key"),
        aws_session_token=setting("token"),
        config=config,
    )


def _error_code(error) -> str:
    return str(getattr(error, "response", {}).get("Error", {}).get("Code", ""))


# -- reading ---------------------------------------------------------------------------


def read_object(url: str, offset: int = 0, size: int | None = None) -> bytes:
    """The bytes of an object (``size`` bytes from ``offset``; all of it by default).

    A missing or forbidden object raises FileNotFoundError / PermissionError, which the
    resize stage turns into a reject, as for a local file; any other failure (network,
    throttling past the retries) raises, so the job fails and can be retried instead of
    rejecting good images.
    """
    if size == 0:
        return b""
    bucket, key = split_url(url)
    s3 = client()
    request = {"Bucket": bucket, "Key": key}
    if offset or size is not None:
        request["Range"] = f"bytes={offset}-{'' if size is None else offset + size - 1}"
    try:
        return s3.get_object(**request)["Body"].read()
    except s3.exceptions.ClientError as error:
        code = _error_code(error)
        if code in ("NoSuchKey", "NoSuchBucket", "404"):
            raise FileNotFoundError(errno.ENOENT, f"no such S3 object ({code})", url) from None
        if code in ("AccessDenied", "403"):
            raise PermissionError(errno.EACCES, "S3 access denied", url) from None
        raise


# -- listing ---------------------------------------------------------------------------


def _mtime_ns(last_modified) -> int:
    """LastModified (an aware datetime) in integer nanoseconds, without float rounding."""
    return calendar.timegm(last_modified.utctimetuple()) * 10**9 + last_modified.microsecond * 1000


def _folder_prefix(key: str) -> str:
    return f"{key}/" if key else ""


def list_objects(url: str) -> Iterator[tuple[str, int, int, str]]:
    """(path relative to ``url``, size, mtime_ns, ETag) of every object below ``url``,
    page by page. Folder markers (keys ending in ``/``) are no files and are left out."""
    bucket, key = split_url(url)
    prefix = _folder_prefix(key)
    pages = client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    for page in pages:
        for item in page.get("Contents", ()):
            relpath = item["Key"][len(prefix) :]
            if relpath and not relpath.endswith("/"):
                yield relpath, item["Size"], _mtime_ns(item["LastModified"]), item["ETag"]


def list_folder(url: str) -> tuple[list[str], list[str]]:
    """Names of the folders and of the files directly below ``url``."""
    bucket, key = split_url(url)
    prefix = _folder_prefix(key)
    folders, files = [], []
    pages = client().get_paginator("list_objects_v2")
    for page in pages.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        folders += [p["Prefix"][len(prefix) : -1] for p in page.get("CommonPrefixes", ())]
        files += [c["Key"][len(prefix) :] for c in page.get("Contents", ())]
    return folders, [name for name in files if name]  # not the folder's own marker
