"""Index: scan the sources and write one small member list per shard.

The per-shard lists, not the source images, are what Snakemake sees as job inputs: a
changed, added or removed image rewrites only the list of the shard it hashes to, so only
that shard re-runs, and the scheduler never has to stat a million source files.
"""

from __future__ import annotations

import csv
import hashlib
import math
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISDIR

from imgprep.atomic import write_bytes_if_changed
from imgprep.config import ConfigError, split_dir
from imgprep.s3 import is_s3_url
from imgprep.s3_index import index_folders as index_s3_folders

INDEX_COLUMNS = ("path", "class", "size", "mtime_ns")
LABEL_COLUMNS = ("index", "label", "synset", "text")
IGNORED_COLUMNS = ("path", "reason")
# Below this many class folders per process, a pool costs more than it saves.
PARALLEL_FOLDERS = 64


@dataclass
class ScanResult:
    """What the scan found: members per split and shard, ignored files, the label map.

    ``shards[split][shard]`` holds the shard's index lines (path, class, size, mtime_ns,
    tab-separated) in shard order.
    """

    shards: dict[str, list[list[str]]]
    ignored: list[tuple[str, str]]
    labels: list[tuple[int, int, str, str]]
    changed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def paths(self, split: str, shard: int) -> list[str]:
        return [line.split("\t", 1)[0] for line in self.shards[split][shard]]

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


def _walk(top: str, rel: str, extensions: frozenset, found: list, ignored: list) -> None:
    """Collect (relpath, size, mtime_ns) of image files below one class folder.

    listdir + stat: one syscall per file, measured faster here than scandir's entries.
    """
    for name in os.listdir(top):
        relpath = f"{rel}/{name}"
        if name.startswith("."):
            ignored.append((relpath, "hidden file"))
            continue
        path = f"{top}/{name}"
        try:
            stat = os.stat(path)
        except OSError as error:
            ignored.append((relpath, f"unreadable: {error.strerror}"))
            continue
        if S_ISDIR(stat.st_mode):
            _walk(path, relpath, extensions, found, ignored)
        elif "\t" in name or "\n" in name or "\r" in name:
            ignored.append(
                (relpath.replace("\t", " ").replace("\n", " "), "tab or newline in name")
            )
        elif "." not in name or name.rpartition(".")[2].lower() not in extensions:
            ignored.append((relpath, "not an image extension"))
        else:
            found.append((relpath, stat.st_size, stat.st_mtime_ns))


def _placer(seed: int):
    """Place an image by a 24-byte keyed hash of its key (its path relative to the split
    folder, or as the manifest writes it): bytes 0-8 pick the shard, 8-16 the order inside
    it, 16-24 the split when splits are fractions. Keyed by the seed and independent of
    every other image, so one change moves nothing else."""
    keyed = hashlib.blake2b(digest_size=24, key=str(seed).encode())
    from_bytes = int.from_bytes

    def place(key: str, plan: tuple) -> tuple[str, int, bytes]:
        state = keyed.copy()
        state.update(key.encode("utf-8", "surrogateescape"))
        digest = state.digest()
        split, _, nshards = plan[0]
        if len(plan) > 1:
            u = from_bytes(digest[16:24], "little") / 2.0**64
            split, _, nshards = next((p for p in plan if u < p[1]), plan[-1])
        return split, from_bytes(digest[:8], "little") % nshards, digest[8:16]

    return place


def _index_folder(task: tuple) -> tuple[list, list]:
    """Walk one class folder and place each image: (split, shard, order, index line)."""
    folder, cls, base, extensions, seed, plan = task
    found: list = []
    ignored: list = []
    _walk(folder, cls, extensions, found, ignored)
    place = _placer(seed)
    rows = []
    for relpath, size, mtime_ns in found:
        split, shard, order = place(relpath, plan)
        rows.append((split, shard, order, f"{base}/{relpath}\t{cls}\t{size}\t{mtime_ns}"))
    return rows, ignored


def _index_tree(root: Path, extensions, seed: int, plan: tuple) -> tuple[list, list, set]:
    """Index ``root/<class>/...``; many class folders are spread over a process pool."""
    rows: list = []
    ignored: list = []
    tasks = []
    for name in sorted(os.listdir(root)):
        path = root / name
        if name.startswith("."):
            ignored.append((name, "hidden file"))
        elif path.is_dir():
            tasks.append((str(path), name, str(root), extensions, seed, plan))
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


def _fraction_plan(splits: dict) -> tuple:
    """(split, cumulative fraction, shards) in name order, for hash-drawn splits."""
    plan, bound = [], 0.0
    for name in sorted(splits):
        bound += splits[name]["fraction"]
        plan.append((name, bound, splits[name]["shards"]))
    if not math.isclose(bound, 1.0, abs_tol=1e-9):
        raise ConfigError(f"config key 'splits.*.fraction': the fractions add up to {bound}, not 1")
    return tuple(plan)


def _index_manifest(config: dict) -> tuple[list, list, set]:
    """Index a CSV/TSV manifest with columns path, label[, split].

    Paths are relative to ``source.root`` (default: the manifest's folder). A listed file
    that is missing is still indexed: the resize stage rejects it with the reason, so
    records + rejects still add up to the manifest.
    """
    source, splits = config["source"], config["splits"]
    manifest = Path(source["manifest"])
    base = Path(source["root"]) if source.get("root") else manifest.parent
    delimiter = "\t" if manifest.suffix.lower() in (".tsv", ".tab") else ","
    key = "config key 'source.manifest'"
    place = _placer(config["seed"])
    rows, ignored, classes, seen = [], [], set(), {}
    with open(manifest, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        columns = set(reader.fieldnames or ())
        if not {"path", "label"} <= columns:
            raise ConfigError(f"{key}: {manifest} needs columns path and label, has {columns}")
        has_split = "split" in columns
        fractions = [name for name, split in splits.items() if "fraction" in split]
        if has_split and fractions:
            raise ConfigError(
                f"config key 'splits.{fractions[0]}.fraction': {manifest} has a split column"
            )
        if not has_split and len(fractions) != len(splits):
            missing = next(name for name in splits if name not in fractions)
            raise ConfigError(
                f"config key 'splits.{missing}.fraction' is required: {manifest} has no "
                "split column"
            )
        plans = {name: ((name, 1.0, split["shards"]),) for name, split in splits.items()}
        drawn = None if has_split else _fraction_plan(splits)
        for number, row in enumerate(reader, start=2):
            where = f"{manifest.name}:{number}"
            path, label = (row.get("path") or "").strip(), (row.get("label") or "").strip()
            if not path or not label:
                ignored.append((where, "row without path or label"))
                continue
            if any(c in path + label for c in "\t\n\r"):
                ignored.append((where, "tab or newline in path or label"))
                continue
            if path in seen:
                ignored.append((where, f"duplicate of row {seen[path]}"))
                continue
            seen[path] = number
            split = (row.get("split") or "").strip() if has_split else None
            if has_split and split not in plans:
                raise ConfigError(f"{key}: {where}: split '{split}' is not in config 'splits'")
            full = path if os.path.isabs(path) else f"{base}/{path}"
            try:
                stat = os.stat(full)
                size, mtime_ns = stat.st_size, stat.st_mtime_ns
            except OSError:
                size, mtime_ns = -1, 0
            split, shard, order = place(path, plans[split] if has_split else drawn)
            rows.append((split, shard, order, f"{full}\t{label}\t{size}\t{mtime_ns}"))
            classes.add(label)
    return rows, ignored, classes


KAGGLE_SPLITS = {"train": "train", "validation": "val"}  # our split -> CLS-LOC folder


def _index_kaggle(config: dict, extensions) -> tuple[list, list, set]:
    """Kaggle's imagenet-object-localization-challenge folder, as downloaded.

    train: the synset folders of ILSVRC/Data/CLS-LOC/train; validation: the flat
    ILSVRC/Data/CLS-LOC/val, labelled by the first synset of each LOC_val_solution.csv
    row. A validation image without a row is listed in ignored.tsv, not guessed.
    """
    root, splits, seed = Path(config["source"]["root"]), config["splits"], config["seed"]
    data = root / "ILSVRC" / "Data" / "CLS-LOC"
    rows, ignored, classes = [], [], set()
    if "train" in splits:
        folder = data / "train"
        if not folder.is_dir():
            raise ConfigError(f"config key 'source.root': no {folder.relative_to(root)} in {root}")
        plan = (("train", 1.0, splits["train"]["shards"]),)
        found, skipped, classes = _index_tree(folder, extensions, seed, plan)
        rows.extend(found)
        ignored.extend((f"train/{path}", reason) for path, reason in skipped)
    if "validation" in splits:
        solution = root / "LOC_val_solution.csv"
        if not solution.is_file():
            raise ConfigError(f"config key 'source.root': no LOC_val_solution.csv in {root}")
        with open(solution, newline="", encoding="utf-8") as handle:
            labels = {
                row["ImageId"].strip(): row["PredictionString"].split()[0]
                for row in csv.DictReader(handle)
                if row.get("PredictionString", "").split()
            }
        if not (data / "val").is_dir():
            raise ConfigError(f"config key 'source.root': no ILSVRC/Data/CLS-LOC/val in {root}")
        plan = (("validation", 1.0, splits["validation"]["shards"]),)
        place = _placer(seed)
        for name in sorted(os.listdir(data / "val")):
            stem, _, ext = name.rpartition(".")
            if name.startswith(".") or ext.lower() not in extensions:
                ignored.append((f"val/{name}", "not an image extension"))
            elif stem not in labels:
                ignored.append((f"val/{name}", "no row in LOC_val_solution.csv"))
            else:
                stat = os.stat(data / "val" / name)
                split, shard, order = place(f"val/{name}", plan)
                line = f"{data}/val/{name}\t{labels[stem]}\t{stat.st_size}\t{stat.st_mtime_ns}"
                rows.append((split, shard, order, line))
                classes.add(labels[stem])
    return rows, ignored, classes


def scan(config: dict) -> ScanResult:
    """Walk the source; assign every image a split, a shard and a place in it."""
    started = time.perf_counter()
    source = config["source"]
    extensions = frozenset(ext.lower() for ext in source["extensions"])
    splits = config["splits"]
    seed = config["seed"]
    rows: list = []
    ignored: list[tuple[str, str]] = []
    classes: set[str] = set()
    if source["type"] == "manifest":
        root = Path(source["manifest"])
        rows, ignored, classes = _index_manifest(config)
    elif source["type"] == "kaggle":
        root = Path(source["root"])
        rows, ignored, classes = _index_kaggle(config, extensions)
    elif is_s3_url(source["root"]):
        root = source["root"]
        drawn = _fraction_plan(splits) if source["layout"] == "class-folders" else None
        rows, ignored, classes = index_s3_folders(config, extensions, _placer(seed), drawn)
    elif source["layout"] == "split-folders":
        root = Path(source["root"])
        for name, split in splits.items():
            folder = split_dir(config, name)
            if not folder.is_dir():
                raise ConfigError(f"config key 'splits.{name}.dir': folder not found: {folder}")
            plan = ((name, 1.0, split["shards"]),)
            found, skipped, found_classes = _index_tree(folder, extensions, seed, plan)
            prefix = folder.relative_to(root).as_posix()
            rows.extend(found)
            classes |= found_classes
            ignored.extend((f"{prefix}/{path}", reason) for path, reason in skipped)
    else:
        root = Path(source["root"])
        rows, ignored, classes = _index_tree(root, extensions, seed, _fraction_plan(splits))

    shards: dict[str, list[list]] = {
        name: [[] for _ in range(split["shards"])] for name, split in splits.items()
    }
    for split, shard, order, line in rows:
        shards[split][shard].append((order, line))
    for name, lists in shards.items():
        if not any(lists):
            raise ConfigError(
                f"config key 'splits.{name}': no images found for split '{name}' "
                f"(source {root}, extensions {', '.join(sorted(extensions))})"
            )
        for members in lists:
            members.sort()
        shards[name] = [[line for _, line in members] for members in lists]

    labels = build_label_map(config, sorted(classes))
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
    return _lines(columns, ("\t".join(str(value) for value in row) for row in rows))


def _lines(columns, lines) -> bytes:
    return ("\n".join(["\t".join(columns), *lines]) + "\n").encode("utf-8", "surrogateescape")


def write_index(config: dict, result: ScanResult) -> ScanResult:
    """Write every list whose content changed; leave the others (and their mtimes) alone."""
    results = config["results"]
    changed = []
    for split, lists in result.shards.items():
        wanted = set()
        for shard, members in enumerate(lists):
            path = shard_index_path(results, split, shard)
            wanted.add(path.name)
            if write_bytes_if_changed(path, _lines(INDEX_COLUMNS, members)):
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


def read_shard_index(path):
    from imgprep.tables import read_tsv

    return read_tsv(path, INDEX_COLUMNS, ints=("size", "mtime_ns"))


def write_split_table(shard_paths, labels_tsv, out_path):
    """One table per split: where each image is, its label and text, its shard and place."""
    import pandas as pd

    from imgprep.atomic import atomic_write
    from imgprep.tables import read_tsv

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
