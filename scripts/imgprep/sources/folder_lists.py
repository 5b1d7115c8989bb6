"""A folder source's shard lists, made from the scan cache and known by digest, so that
a warm scan builds no index row: the "nothing changed" dry run of ImageNet skips the
1.33M rows (5-8 s, ~700 MB) that only confirmed the lists on disk.

``<cache>/folders/<digest>.lists`` (``parsecache`` format, no sections) holds each shard
list's line count, size and sha256, and the sha256 of the scan caches they were made
from (``sources.dircache``, one per tree). A scan that finds those caches unchanged hands
the index ``ShardList``s straight from it; one that rewrote them because folders changed
compares the changed folders' rows before and after and rebuilds only the shards a row
was added to, removed from or changed in (an image added: one shard, not 1024). Anything
else (no summary, another one, a change touching most shards) builds every list. A list
the index must write (its file is not as last written) is built from the cache then.
"""

from __future__ import annotations

from imgprep import parsecache
from imgprep.files.tables import INDEX_COLUMNS, table_lines
from imgprep.parsecache import ShardList, ShardLists
from imgprep.sources import dircache

_FORMAT = f"folder-lists 1 {' '.join(INDEX_COLUMNS)}"
# a change touching more shards than this share rebuilds them all in one pass
_PARTIAL_SHARE = 0.25


def shard_lists(config: dict, cache, trees: list, where) -> ShardLists:
    """``trees``: (prefix of its ignored entries, ``folders.TreeScan``) per scanned tree."""
    counts = {name: split["shards"] for name, split in config["splits"].items()}
    key = {
        "format": _FORMAT,
        "trees": [repr(tree.key) for _, tree in trees],
        "shards": counts,
        "seed": config["seed"],
    }
    path = dircache.cache_path(cache, ("lists", key["trees"])).with_suffix(".lists")
    loaded = parsecache.load(path, key)
    meta = loaded[0] if loaded else {}
    now = [tree.digest for _, tree in trees]
    before = [tree.loaded for _, tree in trees]
    known = meta.get("shards") if meta.get("made_from") in (now, before) else None
    scans = [tree for _, tree in trees]
    tables = _Tables(scans, counts)
    if None in now:  # a scan cache could not be written: nothing to build on next time
        known = None
    elif known is not None and meta["made_from"] != now:
        touched = _touched(scans, counts)
        if touched is None or len(touched) > _PARTIAL_SHARE * sum(counts.values()):
            known = None
        elif touched:
            tables.build(touched)
    if known is None:
        tables.build(None)
    lists = {}
    for split, count in counts.items():
        lists[split] = []
        for shard in range(count):
            if (split, shard) in tables.made:
                lists[split].append(ShardList.in_memory(*tables.made[split, shard]))
            else:
                lines, size, sha256 = known[split][shard]
                load = tables.loader(split, shard)
                lists[split].append(ShardList(lines, size, sha256, load))
    summary = {
        split: [[len(item), item.size, item.sha256] for item in items]
        for split, items in lists.items()
    }
    if None not in now and (meta.get("made_from") != now or meta.get("shards") != summary):
        parsecache.write(path, key, {"made_from": now, "shards": summary}, [])
    ignored, classes = _ignored_and_classes(trees)
    return ShardLists(lists, ignored, classes, where)


def _touched(trees: list, counts: dict) -> set[tuple[str, int]] | None:
    """(split, shard) of every row added, removed or changed in the folders listed again
    (and those gone); None when a tree has no cache to compare with."""
    touched = set()
    for tree in trees:
        if tree.loaded is None:
            return None
        changed = tree.listed | set(tree.previous)
        for name in changed:
            old = dircache.row_keys(tree.previous[name]) if name in tree.previous else set()
            new = dircache.row_keys(tree.columns[name]) if name in tree.columns else set()
            for _, _, _, split, slot in old ^ new:
                split_name = tree.splits[split]
                touched.add((split_name, slot % counts[split_name]))
    return touched


class _Tables:
    """Shard lists built from the trees' columns: all of them, or the wanted ones."""

    def __init__(self, trees: list, counts: dict):
        self.trees, self.counts = trees, counts
        self.made: dict[tuple[str, int], tuple[int, bytes]] = {}

    def build(self, wanted: set[tuple[str, int]] | None) -> None:
        members = {}
        for split, count in self.counts.items():
            for shard in range(count):
                if wanted is None or (split, shard) in wanted:
                    members[split, shard] = []
        for tree in self.trees:
            counts = [self.counts[split] for split in tree.splits]
            chosen = None
            if wanted is not None:  # per split index, its wanted shards
                chosen = [{shard for at, shard in wanted if at == split} for split in tree.splits]
            for name in tree.names:
                columns = tree.columns[name]
                picked = None if chosen is None else _picked(columns, counts, chosen)
                for split, slot, order, line in dircache.placed_lines(columns, picked):
                    members[tree.splits[split], slot % counts[split]].append((order, line))
        for place, rows in members.items():
            rows.sort()  # ties: by line
            self.made[place] = (len(rows), table_lines(INDEX_COLUMNS, [line for _, line in rows]))

    def loader(self, split: str, shard: int):
        def load() -> bytes:
            if (split, shard) not in self.made:
                self.build({(split, shard)})
            return self.made[split, shard][1]

        return load


def _picked(columns: tuple, counts: list[int], chosen: list[set[int]]) -> list[int]:
    """Indices of a folder's rows whose shard (slot % its split's count) is chosen."""
    slots = memoryview(columns[4]).cast("Q")
    split_index = columns[6]
    if split_index:
        return [
            i
            for i, slot in enumerate(slots)
            if slot % counts[split_index[i]] in chosen[split_index[i]]
        ]
    count, shards = counts[0], chosen[0]
    return [i for i, slot in enumerate(slots) if slot % count in shards]


def _ignored_and_classes(trees: list) -> tuple[list, set]:
    ignored, classes = [], set()
    for prefix, tree in trees:
        ignored.extend((prefix + path, reason) for path, reason in tree.ignored)
        for name in tree.names:
            ignored.extend((prefix + path, reason) for path, reason in tree.skipped[name])
            if dircache.has_rows(tree.columns[name]):
                classes.add(name)
    return ignored, classes
