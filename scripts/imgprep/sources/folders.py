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
from imgprep.sources import dircache, voc_boxes
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
    rescan = source.get("rescan", False)
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
                    folder, image_extensions, seed, single_plan(name), cache, rescan
                )
            prefix = folder.relative_to(root).as_posix()
            rows.extend(with_boxes(found, voc_boxes.split_boxes(config, name, cache, ignored)))
            classes |= found_classes
            ignored.extend((f"{prefix}/{path}", reason) for path, reason in skipped)
    else:
        with listing("source.root"):
            plan = fraction_plan(splits)
            rows, ignored, classes = index_tree(root, image_extensions, seed, plan, cache, rescan)
        boxes = {}
        for name in splits:
            boxes.update(voc_boxes.split_boxes(config, name, cache, ignored))
        rows = with_boxes(rows, boxes)
    return Found(rows, ignored, classes, root)


def _index_folder(task: tuple) -> tuple[list[Placed], list, dict]:
    """Walk one class folder and place each image; also the lstat of its subfolders."""
    folder, cls, base, image_extensions, seed, plan = task
    found: list = []
    ignored: list = []
    subfolders: dict = {}
    walk(folder, cls, image_extensions, found, ignored, subfolders)
    place = placer(seed)
    rows = []
    for relpath, size, mtime_ns in found:
        split, slot, order = place(relpath, plan)
        rows.append((split, slot, order, IndexRow(f"{base}/{relpath}", cls, size, mtime_ns)))
    inner = len(cls) + 1
    signatures = {rel[inner:]: dircache.signature(stat) for rel, stat in subfolders.items()}
    return rows, ignored, signatures


def index_tree(
    root: Path, image_extensions, seed: int, plan, cache=None, rescan: bool = False
) -> tuple[list, list, set]:
    """Index ``root/<class>/...``; many class folders are spread over a process pool.

    With ``cache`` (the index's cache folder), a class folder that did not change since
    the last scan is taken from the scan cache without listing it (sources.dircache);
    ``rescan`` lists and stats everything, and rewrites the cache.
    """
    started_ns = dircache.now_ns()
    rows: list = []
    ignored: list = []
    tasks = []
    folder_signatures = {}
    names = sorted(os.listdir(root))  # an unreadable split folder: the caller names the key
    for name, path, stat in entries(str(root), "", ignored, names):
        if S_ISDIR(stat.st_mode):
            tasks.append((path, name, str(root), image_extensions, seed, plan))
            folder_signatures[name] = dircache.signature(stat)
        else:
            ignored.append((name, "not inside a class folder"))
    splits = tuple(name for name, _ in plan)
    key = (os.path.abspath(root), tuple(sorted(image_extensions)), seed, plan)
    cache_file = dircache.cache_path(cache, key) if cache is not None else None
    cached = {} if cache_file is None or rescan else dircache.load(cache_file, key)
    reused = [
        task
        for task in tasks
        if task[1] in cached
        and dircache.unchanged(cached[task[1]][0], task[0], folder_signatures[task[1]])
    ]
    reused_names = {task[1] for task in reused}
    todo = [task for task in tasks if task[1] not in reused_names]
    rewrite = cache_file is not None and (todo or set(cached) != set(folder_signatures))
    results: dict[str, tuple] = {}
    for task in reused:
        # a cache that is not rewritten is let go folder by folder (peak memory)
        _, columns, skipped = cached[task[1]] if rewrite else cached.pop(task[1])
        results[task[1]] = (dircache.from_columns(columns, splits), skipped)
    fresh = {}
    workers = min(os.cpu_count() or 1, len(todo) // PARALLEL_FOLDERS)
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            done = list(pool.imap(_index_folder, todo, chunksize=8))
    else:
        done = [_index_folder(task) for task in todo]
    for task, (found, skipped, signatures) in zip(todo, done, strict=True):
        results[task[1]] = (found, skipped)
        fresh[task[1]] = {"": folder_signatures[task[1]], **signatures}
    if rewrite:
        store = {name: cached[name] for name in results if name not in fresh}
        for name, signatures in fresh.items():
            if dircache.trusted(signatures, started_ns):  # else: listed again next time
                found, skipped = results[name]
                store[name] = (signatures, dircache.to_columns(found, splits), skipped)
        dircache.save(cache_file, key, store)
    classes = set()
    for task in tasks:
        found, skipped = results[task[1]]
        rows.extend(found)
        ignored.extend(skipped)
        if found:
            classes.add(task[1])
    return rows, ignored, classes
