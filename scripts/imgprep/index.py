"""Index: scan the sources and write one small member list per shard.

The per-shard lists, not the source images, are what Snakemake sees as job inputs: a
changed, added or removed image rewrites only the list of the shard it hashes to, so only
that shard re-runs, and the scheduler never has to stat a million source files.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from imgprep.atomic import write_bytes_if_changed
from imgprep.config import ConfigError, split_dir

INDEX_COLUMNS = ("path", "class", "size", "mtime_ns")
LABEL_COLUMNS = ("index", "label", "synset", "text")
IGNORED_COLUMNS = ("path", "reason")


@dataclass
class ScanResult:
    """What the scan found: members per split and shard, ignored files, the label map."""

    shards: dict[str, list[list[tuple]]]
    ignored: list[tuple[str, str]]
    labels: list[tuple[int, int, str, str]]
    changed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        return {split: sum(len(s) for s in shards) for split, shards in self.shards.items()}


def shard_name(shard: int) -> str:
    return f"{shard:05d}"


def index_dir(results) -> Path:
    return Path(results) / "index"


def shard_index_path(results, split: str, shard: int | str) -> Path:
    name = shard if isinstance(shard, str) else shard_name(shard)
    return index_dir(results) / split / f"{name}.tsv"


def labels_path(results) -> Path:
    return index_dir(results) / "labels.tsv"


def ignored_path(results) -> Path:
    return index_dir(results) / "ignored.tsv"


def _walk_class_folder(top: str, rel: str, extensions: frozenset, found: list, ignored: list):
    """Collect (relpath, size, mtime_ns) of image files below one class folder."""
    with os.scandir(top) as entries:
        for entry in entries:
            name = entry.name
            relpath = f"{rel}/{name}"
            if name.startswith("."):
                ignored.append((relpath, "hidden file"))
            elif entry.is_dir():
                _walk_class_folder(entry.path, relpath, extensions, found, ignored)
            elif "\t" in name or "\n" in name or "\r" in name:
                ignored.append(
                    (relpath.replace("\t", " ").replace("\n", " "), "tab or newline in name")
                )
            elif name.rpartition(".")[2].lower() not in extensions or "." not in name:
                ignored.append((relpath, "not an image extension"))
            else:
                stat = entry.stat()
                found.append((relpath, stat.st_size, stat.st_mtime_ns))


def _scan_tree(root: Path, extensions: frozenset) -> tuple[list, list]:
    """Images as (class, relpath, size, mtime_ns) under ``root/<class>/...``, and ignored files."""
    found: list = []
    ignored: list = []
    with os.scandir(root) as entries:
        tops = sorted(entries, key=lambda e: e.name)
    for entry in tops:
        if entry.name.startswith("."):
            ignored.append((entry.name, "hidden file"))
        elif entry.is_dir():
            start = len(found)
            _walk_class_folder(entry.path, entry.name, extensions, found, ignored)
            cls = entry.name
            found[start:] = [(cls, *item) for item in found[start:]]
        else:
            ignored.append((entry.name, "not inside a class folder"))
    return found, ignored


def _hash(key: bytes, relpath: str) -> bytes:
    return hashlib.blake2b(
        relpath.encode("utf-8", "surrogateescape"), digest_size=24, key=key
    ).digest()


def scan(config: dict) -> ScanResult:
    """Walk the source; assign every image a split, a shard and a place in it."""
    started = time.perf_counter()
    source = config["source"]
    root = Path(source["root"])
    if not root.is_dir():
        raise ConfigError(f"config key 'source.root': folder not found: {root}")
    extensions = frozenset(ext.lower() for ext in source["extensions"])
    splits = config["splits"]
    key = str(config["seed"]).encode()
    shards: dict[str, list[list[tuple]]] = {
        name: [[] for _ in range(split["shards"])] for name, split in splits.items()
    }
    ignored: list[tuple[str, str]] = []

    def place(split: str, base: Path, prefix: str, items: list) -> None:
        n = len(shards[split])
        for cls, relpath, size, mtime_ns in items:
            digest = _hash(key, relpath)
            shard = int.from_bytes(digest[:8], "little") % n
            shards[split][shard].append((digest[8:16], f"{base}/{relpath}", cls, size, mtime_ns))

    if source["layout"] == "split-folders":
        for name in splits:
            folder = split_dir(config, name)
            if not folder.is_dir():
                raise ConfigError(f"config key 'splits.{name}.dir': folder not found: {folder}")
            items, skipped = _scan_tree(folder, extensions)
            prefix = folder.relative_to(root).as_posix()
            ignored.extend((f"{prefix}/{path}", reason) for path, reason in skipped)
            place(name, folder, prefix, items)
    else:
        items, ignored = _scan_tree(root, extensions)
        names = sorted(splits)
        bounds, total = [], 0.0
        for name in names:
            total += splits[name]["fraction"]
            bounds.append(total)
        per_split: dict[str, list] = {name: [] for name in names}
        for item in items:
            u = int.from_bytes(_hash(key, item[1])[16:24], "little") / 2.0**64
            chosen = next((n for n, b in zip(names, bounds, strict=True) if u < b), names[-1])
            per_split[chosen].append(item)
        for name in names:
            place(name, root, "", per_split[name])

    for name, lists in shards.items():
        if not any(lists):
            raise ConfigError(
                f"config key 'splits.{name}': no images found for split '{name}' "
                f"(source.root {root}, extensions {', '.join(sorted(extensions))})"
            )
        for members in lists:
            members.sort()
        shards[name] = [[row[1:] for row in members] for members in lists]

    classes = sorted({row[1] for lists in shards.values() for members in lists for row in members})
    labels = build_label_map(config, classes)
    ignored.sort()
    return ScanResult(shards, ignored, labels, seconds=time.perf_counter() - started)


def read_synsets(path) -> dict[str, str]:
    """``n01440764 tench, Tinca tinca`` lines -> {synset: text}."""
    texts = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if line:
                synset, _, text = line.partition(" ")
                texts[synset] = text.strip()
    return texts


def build_label_map(config: dict, classes: list[str]) -> list[tuple[int, int, str, str]]:
    """One label map for every split: the labels file's order, else sorted class names."""
    labels_cfg = config["labels"]
    if labels_cfg["file"]:
        with open(labels_cfg["file"], encoding="utf-8") as handle:
            names = [line.strip() for line in handle if line.strip()]
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


def _tsv(columns, rows) -> bytes:
    lines = ["\t".join(columns)]
    lines.extend("\t".join(str(value) for value in row) for row in rows)
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")


def write_index(config: dict, result: ScanResult) -> ScanResult:
    """Write every list whose content changed; leave the others (and their mtimes) alone."""
    results = config["results"]
    changed = []
    for split, lists in result.shards.items():
        wanted = set()
        for shard, members in enumerate(lists):
            path = shard_index_path(results, split, shard)
            wanted.add(path.name)
            if write_bytes_if_changed(path, _tsv(INDEX_COLUMNS, members)):
                changed.append(f"{split}/{path.name}")
        for stale in (index_dir(results) / split).glob("*.tsv"):
            if stale.name not in wanted:
                stale.unlink()
                changed.append(f"{split}/{stale.name} (removed)")
    if write_bytes_if_changed(labels_path(results), _tsv(LABEL_COLUMNS, result.labels)):
        changed.append("labels.tsv")
    if write_bytes_if_changed(ignored_path(results), _tsv(IGNORED_COLUMNS, result.ignored)):
        changed.append("ignored.tsv")
    result.changed = changed
    return result


def update_index(config: dict, log=sys.stderr) -> ScanResult:
    """Scan and write; cheap when nothing changed. Run once per workflow invocation."""
    result = write_index(config, scan(config))
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


def read_tsv(path):
    """A TSV of ours as strings: no NA guessing, so a class called 'NA' stays 'NA'."""
    import pandas as pd

    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=3)


def read_shard_index(path):
    table = read_tsv(path)
    table["size"] = table["size"].astype("int64")
    table["mtime_ns"] = table["mtime_ns"].astype("int64")
    return table


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
    ]
    table = table[columns]
    with atomic_write(out_path, "w", newline="") as handle:
        table.to_csv(handle, sep="\t", index=False)
    return table
