"""Index: scan the source and write one small member list per shard.

The per-shard lists, not the source images, are what Snakemake sees as job inputs: a
changed, added or removed image rewrites only the list of the shard it hashes to, so only
that shard re-runs, and the scheduler never has to stat a million source files. How each
source type is scanned is ``imgprep.sources``; here: the shard lists, the label map, and
writing them (locked, write-if-changed).
"""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from imgprep import sources
from imgprep.atomic import write_bytes_if_changed
from imgprep.datasets import dataset_list
from imgprep.datasets.selection import plan_files
from imgprep.errors import ConfigError
from imgprep.files.tables import (
    IGNORED_COLUMNS,
    INDEX_COLUMNS,
    INDEX_INTS,
    LABEL_COLUMNS,
    read_tsv,
    row_path,
    table_bytes,
    table_lines,
)
from imgprep.indexlock import IndexBusy, keep_or_release, lock_holder, lock_index
from imgprep.parsecache import ShardList
from imgprep.sourcefile import shown
from imgprep.sources.common import extensions as source_extensions
from imgprep.sources.common import read_lines


@dataclass
class ScanResult:
    """What the scan found: members per split and shard, ignored files, the label map.

    ``shards[split][shard]`` holds the shard's index lines (``IndexRow.line()``) in shard
    order, or the ``ShardList`` a source made (a URL list: its bytes read when needed).
    """

    shards: dict[str, list[list[str]]]
    ignored: list[tuple[str, str]]
    labels: list[tuple[int, int, str, str]]
    # per split, (slot, order, line, class) of every image: what datasets place from
    placed: dict[str, list[tuple[int, bytes, str, str]]] = field(default_factory=dict)
    # index file name -> content of the datasets' own lists (imgprep.datasets.selection)
    dataset_files: dict[str, bytes] = field(default_factory=dict)
    changed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # index file name (train/00001.tsv, labels.tsv) -> the private copy a dry run plans
    # with while another invocation builds from the index (see update_index)
    pending: dict[str, str] = field(default_factory=dict)

    def paths(self, split: str, shard: int) -> list[str]:
        return [row_path(line) for line in self.shards[split][shard]]  # a ShardList too

    def counts(self) -> dict[str, int]:
        return {split: sum(len(s) for s in shards) for split, shards in self.shards.items()}


def shard_name(shard: int) -> str:
    return f"{shard:05d}"


DATASETS = "datasets"  # index/datasets/<name>/: each dataset's own planned lists


def index_dir(results) -> Path:
    return Path(results) / "index"


def shard_index_path(results, split: str, shard: int | str) -> Path:
    name = shard if isinstance(shard, str) else shard_name(shard)
    return index_dir(results) / split / f"{name}.tsv"


def labels_path(results) -> Path:
    return index_dir(results) / "labels.tsv"


def ignored_path(results) -> Path:
    return index_dir(results) / "ignored.tsv"


def cache_dir(results) -> Path:
    """Parsed listings of big sources (tars, box annotations), reused while unchanged."""
    return index_dir(results) / "cache"


def plans_own_lists(config: dict) -> bool:
    """Whether a dataset has shard lists of its own (known from the configuration)."""
    datasets = dataset_list(config) if config.get("datasets") else ()
    return any(dataset.own_lists() for dataset in datasets)


def scan(config: dict) -> ScanResult:
    """Scan the source; sort every placed image into its split's shard, in shard order.

    A source type with ``shard_lists(config, cache)`` (a URL list, local folders) hands
    over its lists ready made (``parsecache.ShardList``: a digest, the bytes only when
    written) unless a dataset plans lists of its own, which places from every row; it
    may answer None (folders with box annotations): then the rows are sorted here.
    """
    started = time.perf_counter()
    splits = config["splits"]
    # what datasets place from (imgprep.datasets.selection): kept only when one of them
    # selects or shards otherwise (~200 MB for ImageNet)
    placed: dict[str, list] = {name: [] for name in splits} if plans_own_lists(config) else {}
    source_type = sources.source_type(config)
    found = None
    if not placed and hasattr(source_type, "shard_lists"):
        found = source_type.shard_lists(config, cache_dir(config["results"]))
    if found is not None:
        shards = found.shards
    else:
        found = sources.scan(config, cache_dir(config["results"]))
        shards = _sorted_shards(found, splits, placed)
    for name, lists in shards.items():
        if not any(lists):
            image_extensions = ", ".join(sorted(source_extensions(config)))
            raise ConfigError(
                f"config key 'splits.{name}': no images found for split '{name}' "
                f"(source {found.where}, extensions {image_extensions})"
            )
    labels = build_label_map(config, sorted(found.classes))
    ignored = sorted(found.ignored)
    return ScanResult(shards, ignored, labels, placed, seconds=time.perf_counter() - started)


def _sorted_shards(found, splits: dict, placed: dict) -> dict[str, list[list[str]]]:
    """Each shard's index lines in shard order; ``placed`` gets every row's placement."""
    shards: dict[str, list[list]] = {
        name: [[] for _ in range(split["shards"])] for name, split in splits.items()
    }
    for split, slot, order, row in found.rows:
        line = row.line()
        shards[split][slot % splits[split]["shards"]].append((order, line))  # ties: by line
        if placed:
            placed[split].append((slot, order, line, row.cls))
    for name, lists in shards.items():
        for members in lists:
            members.sort()
        shards[name] = [[line for _, line in members] for members in lists]
    return shards


def read_synsets(path) -> dict[str, str]:
    """``n01440764 tench, Tinca tinca`` lines -> {synset: text}."""
    texts = {}
    for line in read_lines(path, "labels.synsets"):
        synset, _, text = line.partition(" ")
        texts[synset] = text.strip()
    return texts


def build_label_map(config: dict, classes: list[str]) -> list[tuple[int, int, str, str]]:
    """One label map for every split: the labels file's order, else sorted class names."""
    labels_cfg = config["labels"]
    if labels_cfg["file"]:
        names = read_lines(labels_cfg["file"], "labels.file")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"config key 'labels.file': duplicate classes {dupes[:5]}")
        unknown = sorted(set(classes) - set(names))
        if unknown:
            raise ConfigError(
                f"config key 'labels.file': {len(unknown)} class folder(s) are not in "
                f"{labels_cfg['file']}: {', '.join(unknown[:10])}"
            )
    else:
        names = classes
    texts = read_synsets(labels_cfg["synsets"]) if labels_cfg["synsets"] else {}
    base = labels_cfg["base"]
    return [(i, i + base, name, texts.get(name, "")) for i, name in enumerate(names)]


def _index_files(result: ScanResult):
    """(name under index/, content) of every index file the scan result makes; a list a
    source made itself stays a ``ShardList`` (its bytes made when written)."""
    for split, lists in result.shards.items():
        for shard, members in enumerate(lists):
            name = f"{split}/{shard_name(shard)}.tsv"
            if isinstance(members, ShardList):
                yield name, members
            else:
                yield name, table_lines(INDEX_COLUMNS, members)
    yield labels_path("").name, table_bytes(LABEL_COLUMNS, result.labels)
    ignored = [(shown(path), shown(reason)) for path, reason in result.ignored]
    yield ignored_path("").name, table_bytes(IGNORED_COLUMNS, ignored)
    yield from result.dataset_files.items()


def _holds(path: Path, data: bytes) -> bool:
    try:
        return path.stat().st_size == len(data) and path.read_bytes() == data
    except FileNotFoundError:
        return False


# index/cache/written.tsv: per index file written from a ShardList, the sha256 it holds and
# the file's inode, size, mtime and ctime then. A warm run compares digests and stats, not
# a URL list's 1.4 GB of lists; an index file replaced (atomic_write: a new inode) or
# edited since no longer matches, and is compared and rewritten from its bytes.
_WRITTEN = "written.tsv"


def _stamp(path: Path) -> str:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return ""
    return f"{stat.st_ino} {stat.st_size} {stat.st_mtime_ns} {stat.st_ctime_ns}"


def _read_written(results) -> dict[str, tuple[str, str]]:
    try:
        text = (cache_dir(results) / _WRITTEN).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    rows = (line.split("\t") for line in text.splitlines())
    return {row[0]: (row[1], row[2]) for row in rows if len(row) == 3}


def _known(written: dict, name: str, shard: ShardList, stamp: str) -> bool:
    """Whether the file (of ``_stamp`` ``stamp``) holds the list, as last written or
    checked."""
    return bool(stamp) and written.get(name) == (shard.sha256, stamp)


def write_index(config: dict, result: ScanResult) -> ScanResult:
    """Write every list whose content changed; leave the others (and their mtimes) alone."""
    folder = index_dir(config["results"])
    changed = []
    written = _read_written(config["results"])
    stamps = {}
    for name, data in _index_files(result):
        if isinstance(data, ShardList):
            path = folder / name
            stamp = _stamp(path)
            if not _known(written, name, data, stamp):
                if write_bytes_if_changed(path, data.data()):
                    changed.append(name)
                stamp = _stamp(path)
            stamps[name] = (data.sha256, stamp)
        elif write_bytes_if_changed(folder / name, data):
            changed.append(name)
    if stamps != written:
        lines = "".join(f"{name}\t{sha}\t{stamp}\n" for name, (sha, stamp) in stamps.items())
        write_bytes_if_changed(cache_dir(config["results"]) / _WRITTEN, lines.encode())
    for split, lists in result.shards.items():
        wanted = {f"{shard_name(shard)}.tsv" for shard in range(len(lists))}
        for stale in (folder / split).glob("*.tsv"):
            if stale.name not in wanted:
                stale.unlink()
                changed.append(f"{split}/{stale.name} (removed)")
    for stale in sorted((folder / DATASETS).rglob("*.*")):
        name = stale.relative_to(folder).as_posix()
        if name not in result.dataset_files:
            stale.unlink()
            changed.append(f"{name} (removed)")
    result.changed = changed
    return result


def plan_index(config: dict, result: ScanResult) -> ScanResult:
    """Write nothing under results/: each index file whose content changed goes to a
    private folder (removed at exit) and ``result.pending`` names it, so a dry run plans
    with the files as they would be, while a running build keeps reading its own."""
    folder = index_dir(config["results"])
    written = _read_written(config["results"])
    private = None
    for name, data in _index_files(result):
        if isinstance(data, ShardList):
            if _known(written, name, data, _stamp(folder / name)):
                continue
            data = data.data()
        if not _holds(folder / name, data):
            if private is None:
                private = Path(tempfile.mkdtemp(prefix="imgprep-index-"))
                atexit.register(shutil.rmtree, private, ignore_errors=True)
            path = private / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            result.pending[name] = str(path)
    result.changed = sorted(result.pending)
    return result


def update_index(config: dict, log=sys.stderr, dryrun: bool = False) -> ScanResult:
    """Scan and write; cheap when nothing changed. Run once per workflow invocation.

    A build holds ``index/.lock`` until it ends, so that no other invocation rewrites the
    lists its jobs read (a list changed under a running job made verification fail). A
    dry run that finds the lock held writes nothing and plans from private copies
    (``pending``); any other invocation stops with IndexBusy. A dry run holds the lock
    only while it writes; a build that finds such a writer waits for it.
    """
    results = config["results"]
    result = scan(config)
    for dataset in dataset_list(config) if config.get("datasets") else ():
        result.dataset_files.update(plan_files(dataset, config, result))
    role = "dry-run" if dryrun else "build"
    folder = index_dir(results)
    fd = lock_index(folder, role)
    deadline = time.monotonic() + 60
    while fd is None and not dryrun and time.monotonic() < deadline:
        if not lock_holder(folder).endswith(" dry-run"):
            break
        time.sleep(0.2)  # a dry run writing its lists: a moment
        fd = lock_index(folder, role)
    if fd is None and not dryrun:
        raise IndexBusy(
            f"another snakemake invocation (pid, role: {lock_holder(folder)}) is building "
            f"from {index_dir(results)}; its shard lists must not change under its jobs. Wait "
            "for it to finish (`snakemake -n` shows what will be outstanding then)."
        )
    if fd is None:
        result = plan_index(config, result)
        print(
            f"imgprep index: a build is running on {index_dir(results)} (pid, role: "
            f"{lock_holder(folder)}); index left as it is, outstanding work planned from "
            f"{len(result.pending)} changed index file(s) kept aside",
            file=log,
        )
    else:
        try:
            result = write_index(config, result)
        finally:
            keep_or_release(folder, fd, held=not dryrun)
    counts = ", ".join(f"{split} {n}" for split, n in result.counts().items())
    empty = sum(1 for lists in result.shards.values() for members in lists if not members)
    print(
        f"imgprep index: {counts} images, {len(result.labels)} classes, "
        f"{len(result.ignored)} ignored files, {len(result.changed)} index files changed "
        f"({result.seconds:.2f} s scan)",
        file=log,
    )
    if empty:
        print(f"imgprep index: warning: {empty} shard(s) have no images", file=log)
    return result


def read_shard_index(path):
    return read_tsv(path, INDEX_COLUMNS, ints=INDEX_INTS)


def write_split_table(shard_paths, labels_tsv, out_path):
    """One table per split: where each image is, its label and text, its shard and place."""
    import pandas as pd

    from imgprep.atomic import atomic_write

    labels = read_tsv(labels_tsv).rename(columns={"synset": "class"})
    parts = []
    for path in shard_paths:
        part = read_shard_index(path)
        part.insert(0, "position", range(len(part)))
        part.insert(0, "shard", Path(path).stem)
        parts.append(part)
    table = pd.concat(parts, ignore_index=True)
    table = table.merge(labels[["class", "label", "text"]], on="class", how="left", validate="m:1")
    unlabelled = table["class"] == ""
    table.loc[unlabelled, "label"] = "-1"
    table.loc[unlabelled, "text"] = ""
    missing = table[table["label"].isna()]
    if len(missing):
        raise ValueError(f"classes without a label: {sorted(set(missing['class']))[:10]}")
    table.insert(2, "filename", table["path"].map(lambda p: p.rpartition("/")[2]))
    columns = [
        "path",
        "filename",
        "class",
        "label",
        "text",
        "shard",
        "position",
        "size",
        "mtime_ns",
        "offset",
        "boxes",
    ]
    table = table[columns]
    with atomic_write(out_path, "w", newline="") as handle:
        table.to_csv(handle, sep="\t", index=False)
    return table
