"""source.type 'folders': ``<split>/<class>/...`` (split-folders) or ``<class>/...`` drawn
into splits by fraction (class-folders), on local disk or under ``s3://``
(``imgprep.sources.s3_folders``)."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from stat import S_ISDIR
from typing import NamedTuple

from imgprep.errors import ConfigError
from imgprep.files.tables import IndexRow
from imgprep.parsecache import ShardLists
from imgprep.s3 import is_s3_url
from imgprep.sources import dircache, folder_lists, voc_boxes
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
    source = config["source"]
    if is_s3_url(source["root"]):
        from imgprep.sources import s3_folders

        return s3_folders.scan(config, cache)
    rows: list[Placed] = []
    ignored: list[tuple[str, str]] = []
    classes: set[str] = set()
    for prefix, tree in _trees(config, cache):
        found, skipped, found_classes = tree_rows(tree)
        boxes = {}
        for name in tree.splits:  # a split folder's boxes are for its images only
            boxes.update(voc_boxes.split_boxes(config, name, cache, ignored))
        rows.extend(with_boxes(found, boxes))
        classes |= found_classes
        ignored.extend((prefix + path, reason) for path, reason in skipped)
    return Found(rows, ignored, classes, Path(source["root"]))


def shard_lists(config: dict, cache: Path) -> ShardLists | None:
    """The shard lists by digest, from the scan cache (``sources.folder_lists``), for a
    local source without box annotations; None: the index sorts ``scan``'s rows."""
    source, splits = config["source"], config["splits"]
    if is_s3_url(source["root"]) or any(split.get("boxes") for split in splits.values()):
        return None
    trees = list(_trees(config, cache, keep_rows=False))
    return folder_lists.shard_lists(config, cache, trees, Path(source["root"]))


def _trees(config: dict, cache: Path, keep_rows: bool = True):
    """(prefix of its ignored entries, ``TreeScan``) of each tree the source scans: one
    per split folder, or the class folders drawn into splits."""
    source, splits = config["source"], config["splits"]
    root = Path(source["root"])
    image_extensions, seed = extensions(config), config["seed"]
    rescan = source.get("rescan", False)
    if source["layout"] == "split-folders":
        for name in splits:
            folder = split_dir(config, name)
            if not folder.is_dir():
                raise ConfigError(f"config key 'splits.{name}.dir': folder not found: {folder}")
            with listing(f"splits.{name}.dir"):
                plan = single_plan(name)
                tree = scan_tree(folder, image_extensions, seed, plan, cache, rescan, keep_rows)
            yield folder.relative_to(root).as_posix() + "/", tree
    else:
        with listing("source.root"):
            plan = fraction_plan(splits)
            yield "", scan_tree(root, image_extensions, seed, plan, cache, rescan, keep_rows)


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


class TreeScan(NamedTuple):
    """One tree's class folders as the scan cache holds them after this scan.

    ``columns``: every folder's placed rows as ``dircache`` columns (None without a cache);
    ``listed``: the folders listed this time; ``fresh``: their rows (``keep_rows``);
    ``previous``: columns the cache held for those, and for folders gone (what the last
    scan saw of them); ``loaded`` and ``digest``: the cache's sha256 before and after
    (None: none was usable / written);
    ``key``: what the cache is for (root, extensions, seed, plan).
    """

    key: tuple
    names: list[str]
    splits: tuple[str, ...]
    columns: dict[str, tuple] | None
    listed: set[str]
    fresh: dict[str, list]
    skipped: dict[str, list]
    ignored: list
    previous: dict[str, tuple]
    loaded: str | None
    digest: str | None


def scan_tree(
    root: Path,
    image_extensions,
    seed: int,
    plan,
    cache=None,
    rescan: bool = False,
    keep_rows: bool = True,
) -> TreeScan:
    """List ``root/<class>/...``, a class folder unchanged since the last scan taken from
    the scan cache (sources.dircache); many folders are spread over a process pool.
    ``rescan`` lists and stats everything, and rewrites the cache. Without ``keep_rows``
    (a cache is given) the listed rows are kept as columns only (~400 MB less for
    ImageNet's 1.33M)."""
    started_ns = dircache.now_ns()
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
    stored, loaded = ({}, None) if cache_file is None else dircache.load(cache_file, key)
    cached = {} if rescan else stored  # stored stays: what the index's lists were made from
    todo = [
        task
        for task in tasks
        if task[1] not in cached
        or not dircache.unchanged(cached[task[1]][0], task[0], folder_signatures[task[1]])
    ]
    keep_rows = keep_rows or cache_file is None
    fresh, skipped, store = {}, {}, {}
    for name, entry in cached.items():
        if name in folder_signatures:
            store[name] = entry
            skipped[name] = entry[2]
    previous = {task[1]: stored[task[1]][1] for task in todo if task[1] in stored}
    previous.update((name, stored[name][1]) for name in set(stored) - set(folder_signatures))
    for task, (found, folder_skipped, signatures) in zip(todo, _listings(todo), strict=True):
        name = task[1]
        skipped[name] = folder_skipped
        if keep_rows:
            fresh[name] = found
        if cache_file is not None:
            signatures = {"": folder_signatures[name], **signatures}
            trusted = dircache.trusted(signatures, started_ns)  # else: listed again next time
            columns = dircache.to_columns(found, splits)
            store[name] = (signatures if trusted else None, columns, folder_skipped)
    digest = loaded
    if cache_file is not None and (todo or set(stored) != set(folder_signatures)):
        digest = dircache.save(cache_file, key, store)
    columns = {name: entry[1] for name, entry in store.items()} if cache_file else None
    return TreeScan(
        key,
        [task[1] for task in tasks],
        splits,
        columns,
        {task[1] for task in todo},
        fresh,
        skipped,
        ignored,
        previous,
        loaded,
        digest,
    )


def _listings(todo: list):
    """_index_folder of each task, in order; many are spread over a process pool."""
    workers = min(os.cpu_count() or 1, len(todo) // PARALLEL_FOLDERS)
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            yield from pool.imap(_index_folder, todo, chunksize=8)
    else:
        for task in todo:
            yield _index_folder(task)


def index_tree(
    root: Path, image_extensions, seed: int, plan, cache=None, rescan: bool = False
) -> tuple[list, list, set]:
    """Placed rows, ignored entries and classes of ``root/<class>/...`` (``scan_tree``)."""
    return tree_rows(scan_tree(root, image_extensions, seed, plan, cache, rescan))


def tree_rows(tree: TreeScan) -> tuple[list, list, set]:
    """A tree's placed rows, ignored entries and classes."""
    rows: list = []
    ignored = list(tree.ignored)
    classes = set()
    for name in tree.names:
        found = tree.fresh.get(name)
        if found is None:
            # taken from the cache: let its columns go folder by folder (peak memory)
            found = dircache.from_columns(tree.columns.pop(name), tree.splits)
        rows.extend(found)
        ignored.extend(tree.skipped[name])
        if found:
            classes.add(name)
    return rows, ignored, classes
