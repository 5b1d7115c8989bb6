"""S3 at parse time: index an ``s3://`` source, publish the index lists to S3 storage.

With ``--default-storage-provider s3`` Snakemake maps every relative path to the storage
prefix, the index lists included; but the scan writes them locally, at parse time, and
Snakemake only uploads job outputs. So they are uploaded here, each only when its
content differs from the stored copy: an unchanged list keeps its S3 mtime, and a
re-run has nothing to do.
"""

from __future__ import annotations

import hashlib
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from imgprep.config import ConfigError
from imgprep.s3 import (
    PLUGIN_ENV,
    REQUESTS_IN_FLIGHT,
    SCHEME,
    client,
    is_s3_url,
    list_folder,
    list_objects,
    split_url,
)
from imgprep.sourcefile import HIDDEN, NOT_AN_IMAGE_EXTENSION, TAB_OR_NEWLINE

# -- indexing ----------------------------------------------------------------------------


def _index_class(url: str, cls: str, extensions) -> tuple[list, list]:
    """What ``index._walk`` makes of one class folder: (relpath, size, mtime_ns) of its
    images, and (relpath, reason) of what it ignores."""
    found, ignored, hidden = [], [], set()
    for relpath, size, mtime_ns, _ in list_objects(f"{url}/{cls}"):
        parts = relpath.split("/")
        dot = next((i for i, part in enumerate(parts) if part.startswith(".")), None)
        if dot is not None:  # a hidden folder is not descended into: reported once
            hidden.add(f"{cls}/{'/'.join(parts[: dot + 1])}")
            continue
        name = parts[-1]
        path = f"{cls}/{relpath}"
        if "\t" in name or "\n" in name or "\r" in name:
            ignored.append((path, TAB_OR_NEWLINE))  # a clean TSV field when written
        elif "." not in name or name.rpartition(".")[2].lower() not in extensions:
            ignored.append((path, NOT_AN_IMAGE_EXTENSION))
        else:
            found.append((path, size, mtime_ns))
    ignored += [(path, HIDDEN) for path in sorted(hidden)]
    return found, ignored


def _index_tree(url: str, extensions, place, plan) -> tuple[list, list, set]:
    """``index._index_tree`` for ``url/<class>/...``: the same rows, paths as s3:// URLs.

    The class folders are listed in parallel: ImageNet's 1.28M objects are 1281 pages,
    too many to fetch one after the other at every workflow start.
    """
    url = url.rstrip("/")
    folders, files = list_folder(url)
    ignored = [
        (name, HIDDEN if name.startswith(".") else "not inside a class folder") for name in files
    ]
    ignored += [(name, HIDDEN) for name in folders if name.startswith(".")]
    classes = sorted(name for name in folders if not name.startswith("."))
    rows, found_classes = [], set()
    with ThreadPoolExecutor(REQUESTS_IN_FLIGHT) as pool:
        listed = pool.map(lambda cls: _index_class(url, cls, extensions), classes)
        for cls, (found, skipped) in zip(classes, listed, strict=True):
            ignored += skipped
            for relpath, size, mtime_ns in found:
                split, shard, order = place(relpath, plan)
                rows.append(
                    (split, shard, order, f"{url}/{relpath}\t{cls}\t{size}\t{mtime_ns}\t-1\t")
                )
            if found:
                found_classes.add(cls)
    return rows, ignored, found_classes


def index_folders(config: dict, extensions, place, drawn) -> tuple[list, list, set]:
    """Index a folders source under ``s3://``: (rows, ignored, classes) as ``index.scan``
    builds them for a local root, so the shard lists differ only in the paths.

    ``place`` is the scan's placer; ``drawn`` the fraction plan of the class-folders
    layout (None for split-folders, where each split is a folder).
    """
    root = config["source"]["root"].rstrip("/")
    try:
        return _index_folders(root, config["splits"], extensions, place, drawn)
    except client().exceptions.NoSuchBucket:
        bucket = split_url(root)[0]
        raise ConfigError(f"config key 'source.root': no S3 bucket {bucket}") from None


def _index_folders(root: str, splits: dict, extensions, place, drawn) -> tuple[list, list, set]:
    if drawn is not None:
        return _index_tree(root, extensions, place, drawn)
    rows, ignored, classes = [], [], set()
    for name, split in splits.items():
        folder = split.get("dir", name)
        url = f"{root}/{folder}"
        found, skipped, found_classes = _index_tree(
            url, extensions, place, ((name, 1.0, split["shards"]),)
        )
        if not found and not skipped:
            raise ConfigError(f"config key 'splits.{name}.dir': nothing found under {url}/")
        rows += found
        classes |= found_classes
        ignored += [(f"{folder}/{path}", reason) for path, reason in skipped]
    return rows, ignored, classes


# -- Snakemake's default storage --------------------------------------------------------


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
    from imgprep.index import ignored_path, index_dir, labels_path, shard_index_path

    results = config["results"]
    local = [labels_path(results), ignored_path(results)]
    for split, lists in result.shards.items():
        local += [shard_index_path(results, split, shard) for shard in range(len(lists))]
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
    split_folders = tuple(target.url(index_dir(results) / split) + "/" for split in result.shards)
    stale = [
        url
        for url in sorted(stored)
        if url.startswith(split_folders) and url.endswith(".tsv") and url not in wanted
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
