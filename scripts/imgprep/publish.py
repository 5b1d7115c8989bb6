"""Publish the index lists to Snakemake's default storage (S3), at parse time.

With ``--default-storage-provider s3`` Snakemake maps every relative path to the storage
prefix, the index lists included; but the scan writes them locally, at parse time, and
Snakemake only uploads job outputs. So they are uploaded here, each only when its
content differs from the stored copy: an unchanged list keeps its S3 mtime, and a
re-run has nothing to do. (Scanning an ``s3://`` source is ``imgprep.sources.s3_folders``.)
"""

from __future__ import annotations

import hashlib
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from imgprep.errors import ConfigError
from imgprep.index import DATASETS, ignored_path, index_dir, labels_path, shard_index_path
from imgprep.s3 import (
    PLUGIN_ENV,
    REQUESTS_IN_FLIGHT,
    SCHEME,
    client,
    is_s3_url,
    list_objects,
    split_url,
)


@dataclass(frozen=True)
class StorageTarget:
    """Snakemake's --default-storage-prefix: where each relative path of the workflow is."""

    prefix: str

    def url(self, path) -> str:
        """The object Snakemake maps ``path`` to (its path modifier's rule, then the
        plugin's key normalisation)."""
        prefix = self.prefix if self.prefix.endswith("/") else f"{self.prefix}/"
        bucket, key = split_url(f"{prefix}{os.path.normpath(str(path))}")
        return f"{SCHEME}{bucket}/{key}"


def adopt_snakemake_settings(workflow) -> StorageTarget | None:
    """Reuse what the user gave Snakemake: the --storage-s3-* settings serve the scan and,
    through the plugin's environment variables, the job scripts (variables already set
    win). Returns the default storage target when it is S3, else None."""
    tagged = (getattr(workflow, "storage_provider_settings", None) or {}).get("s3")
    settings = tagged.get_settings() if tagged is not None else None
    for name, variable in PLUGIN_ENV.items():
        value = getattr(settings, name, None)
        if value is not None:
            os.environ.setdefault(variable, str(value))
    storage = getattr(workflow, "storage_settings", None)
    if storage is None or storage.default_storage_provider != "s3":
        return None
    if not is_s3_url(storage.default_storage_prefix or ""):
        raise ConfigError("--default-storage-prefix must be an s3://bucket/... URL")
    return StorageTarget(storage.default_storage_prefix)


def _ensure_bucket(s3, bucket: str) -> None:
    """Create a missing bucket, as the S3 plugin does before its first upload."""
    region = s3.meta.region_name
    request = {"Bucket": bucket}
    if region and region != "us-east-1":
        request["CreateBucketConfiguration"] = {"LocationConstraint": region}
    s3.create_bucket(**request)


def publish_index(config: dict, result, target: StorageTarget | None, log=sys.stderr) -> list:
    """Put the index files the scan wrote where the jobs look for them in storage.

    Only a file whose MD5 differs from the stored ETag is uploaded (one listing, no
    downloads); lists of shards that no longer exist are deleted, as write_index does
    locally. Returns the URLs uploaded or deleted.
    """
    if target is None:
        return []
    results = config["results"]
    local = [labels_path(results), ignored_path(results)]
    for split, lists in result.shards.items():
        local += [shard_index_path(results, split, shard) for shard in range(len(lists))]
    local += [index_dir(results) / name for name in result.dataset_files]  # the datasets' own
    wanted = {target.url(path): path for path in local}
    index_url = target.url(index_dir(results))
    bucket = split_url(index_url)[0]
    s3 = client()
    try:
        stored = {f"{index_url}/{relpath}": etag for relpath, _, _, etag in list_objects(index_url)}
    except s3.exceptions.NoSuchBucket:
        _ensure_bucket(s3, bucket)
        stored = {}

    def upload(item):
        url, path = item
        data = path.read_bytes()
        if stored.get(url) == f'"{hashlib.md5(data, usedforsecurity=False).hexdigest()}"':
            return None
        s3.put_object(Bucket=bucket, Key=split_url(url)[1], Body=data)
        return url

    with ThreadPoolExecutor(REQUESTS_IN_FLIGHT) as pool:
        changed = [url for url in pool.map(upload, sorted(wanted.items())) if url]
    folders = [*result.shards, DATASETS]
    split_folders = tuple(target.url(index_dir(results) / folder) + "/" for folder in folders)
    stale = [
        url
        for url in sorted(stored)
        if url.startswith(split_folders) and url.endswith((".tsv", ".json")) and url not in wanted
    ]
    for start in range(0, len(stale), 1000):  # DeleteObjects takes 1000 keys at most
        keys = [{"Key": split_url(url)[1]} for url in stale[start : start + 1000]]
        s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    print(
        f"imgprep index: {len(changed)} of {len(wanted)} index files uploaded to "
        f"{index_url}/, {len(stale)} stale ones deleted",
        file=log,
    )
    return changed + stale
