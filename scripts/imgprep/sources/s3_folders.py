"""The folders source under ``s3://``: the same rows as a local root, paths as s3:// URLs.

The class folders are listed in parallel: ImageNet's 1.28M objects are 1281 pages,
too many to fetch one after the other at every workflow start.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from imgprep.errors import ConfigError
from imgprep.files.tables import IndexRow
from imgprep.s3 import REQUESTS_IN_FLIGHT, client, list_folder, list_objects, split_url
from imgprep.sourcefile import HIDDEN, NOT_AN_IMAGE_EXTENSION, TAB_OR_NEWLINE
from imgprep.sources.common import (
    Found,
    extensions,
    fraction_plan,
    has_tab_or_newline,
    is_image_name,
    placer,
    single_plan,
)


def scan(config: dict, cache: Path) -> Found:
    """(rows, ignored, classes) as the local folders scan builds them, so the shard
    lists differ only in the paths (``cache`` unused: no boxes under s3://)."""
    root = config["source"]["root"].rstrip("/")
    try:
        rows, ignored, classes = _index_folders(root, config)
    except client().exceptions.NoSuchBucket:
        bucket = split_url(root)[0]
        raise ConfigError(f"config key 'source.root': no S3 bucket {bucket}") from None
    return Found(rows, ignored, classes, config["source"]["root"])


def _index_class(url: str, cls: str, image_extensions) -> tuple[list, list]:
    """What ``common.walk`` makes of one class folder: (relpath, size, mtime_ns) of its
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
        if has_tab_or_newline(name):
            ignored.append((path, TAB_OR_NEWLINE))  # a clean TSV field when written
        elif not is_image_name(name, image_extensions):
            ignored.append((path, NOT_AN_IMAGE_EXTENSION))
        else:
            found.append((path, size, mtime_ns))
    ignored += [(path, HIDDEN) for path in sorted(hidden)]
    return found, ignored


def _index_tree(url: str, image_extensions, place, plan) -> tuple[list, list, set]:
    """``folders.index_tree`` for ``url/<class>/...``."""
    url = url.rstrip("/")
    folders, files = list_folder(url)
    ignored = [
        (name, HIDDEN if name.startswith(".") else "not inside a class folder") for name in files
    ]
    ignored += [(name, HIDDEN) for name in folders if name.startswith(".")]
    classes = sorted(name for name in folders if not name.startswith("."))
    rows, found_classes = [], set()
    with ThreadPoolExecutor(REQUESTS_IN_FLIGHT) as pool:
        listed = pool.map(lambda cls: _index_class(url, cls, image_extensions), classes)
        for cls, (found, skipped) in zip(classes, listed, strict=True):
            ignored += skipped
            for relpath, size, mtime_ns in found:
                split, slot, order = place(relpath, plan)
                row = IndexRow(f"{url}/{relpath}", cls, size, mtime_ns)
                rows.append((split, slot, order, row))
            if found:
                found_classes.add(cls)
    return rows, ignored, found_classes


def _index_folders(root: str, config: dict) -> tuple[list, list, set]:
    splits, image_extensions = config["splits"], extensions(config)
    place = placer(config["seed"])
    if config["source"]["layout"] == "class-folders":
        return _index_tree(root, image_extensions, place, fraction_plan(splits))
    rows, ignored, classes = [], [], set()
    for name, split in splits.items():
        folder = split.get("dir", name)
        url = f"{root}/{folder}"
        found, skipped, found_classes = _index_tree(url, image_extensions, place, single_plan(name))
        if not found and not skipped:
            raise ConfigError(f"config key 'splits.{name}.dir': nothing found under {url}/")
        rows += found
        classes |= found_classes
        ignored += [(f"{folder}/{path}", reason) for path, reason in skipped]
    return rows, ignored, classes
