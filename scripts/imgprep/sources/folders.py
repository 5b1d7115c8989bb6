"""source.type 'folders': ``<split>/<class>/...`` (split-folders) or ``<class>/...`` drawn
into splits by fraction (class-folders), on local disk or under ``s3://``
(``imgprep.sources.s3_folders``)."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from stat import S_ISDIR

from imgprep.errors import ConfigError
from imgprep.files.tables import IndexRow
from imgprep.s3 import is_s3_url
from imgprep.sources import voc_boxes
from imgprep.sources.common import (
    Found,
    Placed,
    check_boxes,
    entries,
    extensions,
    fraction_plan,
    listing,
    only,
    placer,
    single_plan,
    walk,
    with_boxes,
)

# Below this many class folders per process, a pool costs more than it saves.
PARALLEL_FOLDERS = 64


def check(config: dict) -> None:
    source, splits = config["source"], config["splits"]
    layout = source["layout"]
    for name, split in splits.items():
        only(split, name, ("dir", "fraction", "boxes"), "source.type 'folders'")
        check_boxes(split, name)
        if layout == "split-folders" and "fraction" in split:
            raise ConfigError(
                f"config key 'splits.{name}.fraction' only applies to source.layout "
                "'class-folders'; with 'split-folders' each split is a folder (splits.<name>.dir)"
            )
        if layout == "class-folders" and "fraction" not in split:
            raise ConfigError(
                f"config key 'splits.{name}.fraction' is required with "
                "source.layout 'class-folders'"
            )
        if layout == "class-folders" and "dir" in split:
            raise ConfigError(
                f"config key 'splits.{name}.dir' only applies to source.layout 'split-folders'"
            )
    if layout == "class-folders":
        fraction_plan(splits)
    if "root" not in source:
        raise ConfigError("config key 'source.root' is required with source.type 'folders'")
    if not is_s3_url(source["root"]) and not Path(source["root"]).is_dir():
        raise ConfigError(f"config key 'source.root': folder not found: {source['root']}")


def split_dir(config: dict, split: str) -> Path:
    """Folder of a split in the split-folders layout."""
    return Path(config["source"]["root"]) / config["splits"][split].get("dir", split)


def scan(config: dict, cache: Path) -> Found:
    source, splits = config["source"], config["splits"]
    if is_s3_url(source["root"]):
        from imgprep.sources import s3_folders

        return s3_folders.scan(config, cache)
    root = Path(source["root"])
    image_extensions, seed = extensions(config), config["seed"]
    rows: list[Placed] = []
    ignored: list[tuple[str, str]] = []
    classes: set[str] = set()
    if source["layout"] == "split-folders":
        for name in splits:
            folder = split_dir(config, name)
            if not folder.is_dir():
                raise ConfigError(f"config key 'splits.{name}.dir': folder not found: {folder}")
            with listing(f"splits.{name}.dir"):
                found, skipped, found_classes = index_tree(
                    folder, image_extensions, seed, single_plan(name)
                )
            prefix = folder.relative_to(root).as_posix()
            rows.extend(with_boxes(found, voc_boxes.split_boxes(config, name, cache, ignored)))
            classes |= found_classes
            ignored.extend((f"{prefix}/{path}", reason) for path, reason in skipped)
    else:
        with listing("source.root"):
            rows, ignored, classes = index_tree(root, image_extensions, seed, fraction_plan(splits))
        boxes = {}
        for name in splits:
            boxes.update(voc_boxes.split_boxes(config, name, cache, ignored))
        rows = with_boxes(rows, boxes)
    return Found(rows, ignored, classes, root)


def _index_folder(task: tuple) -> tuple[list[Placed], list]:
    """Walk one class folder and place each image."""
    folder, cls, base, image_extensions, seed, plan = task
    found: list = []
    ignored: list = []
    walk(folder, cls, image_extensions, found, ignored)
    place = placer(seed)
    rows = []
    for relpath, size, mtime_ns in found:
        split, slot, order = place(relpath, plan)
        rows.append((split, slot, order, IndexRow(f"{base}/{relpath}", cls, size, mtime_ns)))
    return rows, ignored


def index_tree(root: Path, image_extensions, seed: int, plan) -> tuple[list, list, set]:
    """Index ``root/<class>/...``; many class folders are spread over a process pool."""
    rows: list = []
    ignored: list = []
    tasks = []
    names = sorted(os.listdir(root))  # an unreadable split folder: the caller names the key
    for name, path, stat in entries(str(root), "", ignored, names):
        if S_ISDIR(stat.st_mode):
            tasks.append((path, name, str(root), image_extensions, seed, plan))
        else:
            ignored.append((name, "not inside a class folder"))
    workers = min(os.cpu_count() or 1, len(tasks) // PARALLEL_FOLDERS)
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            results = list(pool.imap(_index_folder, tasks, chunksize=8))
    else:
        results = [_index_folder(task) for task in tasks]
    classes = set()
    for task, (found, skipped) in zip(tasks, results, strict=True):
        rows.extend(found)
        ignored.extend(skipped)
        if found:
            classes.add(task[1])
    return rows, ignored, classes
