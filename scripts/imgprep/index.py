"""Index: scan the sources and write one small member list per shard.

The per-shard lists, not the source images, are what Snakemake sees as job inputs: a
changed, added or removed image rewrites only the list of the shard it hashes to, so only
that shard re-runs, and the scheduler never has to stat a million source files.
"""

from __future__ import annotations

import atexit
import contextlib
import csv
import fcntl
import hashlib
import math
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISDIR, S_ISLNK, S_ISREG

from imgprep.atomic import write_bytes_if_changed
from imgprep.config import ConfigError, split_dir
from imgprep.s3 import is_s3_url
from imgprep.s3_index import index_folders as index_s3_folders
from imgprep.sourcefile import (
    HIDDEN,
    NOT_AN_IMAGE_EXTENSION,
    NOT_UTF8,
    SYMLINK_NOT_FOLLOWED,
    TAB_OR_NEWLINE,
    is_utf8,
    not_regular_reason,
    open_source,
    shown,
)
from imgprep.tarindex import MEMBER_SEPARATOR

# offset: where the image's bytes start inside the file before "!/" in path (a tar
# member read in place), -1 for a whole file; boxes: raw annotation boxes (imgprep.boxes).
# class is empty for an unlabelled image (label -1 in the records).
INDEX_COLUMNS = ("path", "class", "size", "mtime_ns", "offset", "boxes")
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
    # index file name (train/00001.tsv, labels.tsv) -> the private copy a dry run plans
    # with while another invocation builds from the index (see update_index)
    pending: dict[str, str] = field(default_factory=dict)

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


def _entries(top: str, prefix: str, ignored: list, names=None):
    """(relpath, path, lstat) of the folders and regular files in folder ``top``.

    Nothing else is ever opened: hidden entries, names that are not UTF-8 or hold a tab or
    line break, symlinks (never followed: a link to ``.`` would multiply the images, one
    to another split's folder leak them into this one), FIFOs, sockets and devices go to
    ``ignored`` with the reason, relpath being ``prefix + name``. An unreadable folder is
    listed there too. lstat costs what stat did: one syscall per entry.
    """
    if names is None:
        try:
            names = os.listdir(top)
        except OSError as error:
            ignored.append((prefix.rstrip("/") or ".", f"unreadable folder: {error.strerror}"))
            return
    for name in names:
        relpath = prefix + name
        if name.startswith("."):
            ignored.append((relpath, HIDDEN))
            continue
        if not is_utf8(name):
            ignored.append((relpath, NOT_UTF8))
            continue
        if "\t" in name or "\n" in name or "\r" in name:
            ignored.append((relpath, TAB_OR_NEWLINE))
            continue
        path = f"{top}/{name}"
        try:
            stat = os.lstat(path)
        except OSError as error:
            ignored.append((relpath, f"unreadable: {error.strerror}"))
            continue
        if S_ISLNK(stat.st_mode):
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            ignored.append((relpath, f"{SYMLINK_NOT_FOLLOWED} (to {target})"))
        elif S_ISDIR(stat.st_mode) or S_ISREG(stat.st_mode):
            yield relpath, path, stat
        else:
            ignored.append((relpath, not_regular_reason(stat.st_mode)))


def _is_image_name(name: str, extensions: frozenset) -> bool:
    return "." in name and name.rpartition(".")[2].lower() in extensions


def _walk(top: str, rel: str, extensions: frozenset, found: list, ignored: list) -> None:
    """Collect (relpath, size, mtime_ns) of the image files below one class folder."""
    for relpath, path, stat in _entries(top, f"{rel}/", ignored):
        if S_ISDIR(stat.st_mode):
            _walk(path, relpath, extensions, found, ignored)
        elif not _is_image_name(relpath.rpartition("/")[2], extensions):
            ignored.append((relpath, NOT_AN_IMAGE_EXTENSION))
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
        rows.append((split, shard, order, f"{base}/{relpath}\t{cls}\t{size}\t{mtime_ns}\t-1\t"))
    return rows, ignored


def _index_tree(root: Path, extensions, seed: int, plan: tuple) -> tuple[list, list, set]:
    """Index ``root/<class>/...``; many class folders are spread over a process pool."""
    rows: list = []
    ignored: list = []
    tasks = []
    names = sorted(os.listdir(root))  # an unreadable split folder: the caller names the key
    for name, path, stat in _entries(str(root), "", ignored, names):
        if S_ISDIR(stat.st_mode):
            tasks.append((path, name, str(root), extensions, seed, plan))
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
    try:
        return _read_manifest(manifest, base, delimiter, splits, place)
    except UnicodeDecodeError as error:
        raise ConfigError(f"{key}: {manifest} is not UTF-8 text: {error}") from None


def _read_manifest(manifest: Path, base: Path, delimiter: str, splits: dict, place):
    key = "config key 'source.manifest'"
    rows, ignored, classes, seen = [], [], set(), {}
    with open_source(manifest, newline="", encoding="utf-8") as handle:
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
            rows.append((split, shard, order, f"{full}\t{label}\t{size}\t{mtime_ns}\t-1\t"))
            classes.add(label)
    return rows, ignored, classes


def cache_dir(results) -> Path:
    """Parsed listings of big sources (tars, box annotations), reused while unchanged."""
    return index_dir(results) / "cache"


def _single_plan(config: dict, split: str) -> tuple:
    return ((split, 1.0, config["splits"][split]["shards"]),)


def _box_text(boxes: dict, name: str) -> str:
    """The raw boxes of an image, found by its file name without extension."""
    if not boxes:
        return ""
    entry = boxes.get(name.rpartition("/")[2].rpartition(".")[0])
    if entry is None:
        return ""
    from imgprep.boxes import encode_boxes

    return encode_boxes(entry.ref_width, entry.ref_height, entry.boxes)


def _voc_boxes(config: dict, split: str, ignored: list) -> dict:
    """``splits.<split>.boxes``: PASCAL-VOC XMLs (folder or archive), parsed once and cached."""
    source = config["splits"][split].get("boxes")
    if not source:
        return {}
    from imgprep.boxes import read_voc_boxes

    max_bytes = config["source"]["max_file_bytes"]
    try:
        boxes, problems = read_voc_boxes(source, cache_dir(config["results"]), max_bytes)
    except (ValueError, OSError) as error:  # not a folder or readable archive
        raise ConfigError(f"config key 'splits.{split}.boxes': {shown(str(error))}") from None
    ignored.extend(
        (f"{source}:{member}", f"box annotation skipped: {why}") for member, why in problems
    )
    return boxes


def _with_boxes(rows: list, boxes: dict) -> list:
    """Append each image's raw boxes to its index line (lines end with an empty boxes field)."""
    if not boxes:
        return rows
    out = []
    for split, shard, order, line in rows:
        path = line.split("\t", 1)[0]
        out.append((split, shard, order, line + _box_text(boxes, path)))
    return out


KAGGLE_FOLDERS = {"train": "train", "validation": "val", "test": "test"}  # split -> CLS-LOC


def _index_kaggle(config: dict, extensions) -> tuple[list, list, set]:
    """Kaggle's imagenet-object-localization-challenge folder, as downloaded.

    train: the synset folders of ILSVRC/Data/CLS-LOC/train, boxes from
    LOC_train_solution.csv; validation: the flat val folder, labelled by the first synset
    of its LOC_val_solution.csv row (boxes from the same row); test: the flat test folder,
    unlabelled. A validation image without a row is listed in ignored.tsv, not guessed.
    """
    from imgprep.boxes import read_kaggle_boxes, read_kaggle_solution

    root, splits, seed = Path(config["source"]["root"]), config["splits"], config["seed"]
    with_boxes = config["source"]["boxes"]
    data = root / "ILSVRC" / "Data" / "CLS-LOC"
    rows, ignored, classes = [], [], set()
    for split in splits:
        folder = data / KAGGLE_FOLDERS[split]
        if not folder.is_dir():
            raise ConfigError(f"config key 'source.root': no {folder.relative_to(root)} in {root}")
    if "train" in splits:
        plan = _single_plan(config, "train")
        found, skipped, classes = _index_tree(data / "train", extensions, seed, plan)
        solution = root / "LOC_train_solution.csv"
        if with_boxes and solution.is_file():
            found = _with_boxes(found, read_kaggle_boxes(solution))
        rows.extend(found)
        ignored.extend((f"train/{path}", reason) for path, reason in skipped)
    if "validation" in splits:
        solution = root / "LOC_val_solution.csv"
        if not solution.is_file():
            raise ConfigError(f"config key 'source.root': no LOC_val_solution.csv in {root}")
        labels, boxes = read_kaggle_solution(solution)
        if not with_boxes:
            boxes = {}
        found = _index_flat(
            data / "val",
            "validation",
            config,
            extensions,
            labels,
            ignored,
            "no row in LOC_val_solution.csv",
        )
        rows.extend(_with_boxes(found, boxes))
        classes |= {line.split("\t")[1] for *_, line in found}
    if "test" in splits:
        rows.extend(_index_flat(data / "test", "test", config, extensions, None, ignored))
    return rows, ignored, classes


def _index_flat(folder: Path, split: str, config, extensions, labels, ignored, why="") -> list:
    """A flat folder of one split; ``labels`` maps file stems to classes (None: unlabelled);
    an image without a label is ignored for the reason ``why``."""
    place, plan = _placer(config["seed"]), _single_plan(config, split)
    rows = []
    names = sorted(os.listdir(folder))
    for where, path, stat in _entries(str(folder), f"{folder.name}/", ignored, names):
        name = where.rpartition("/")[2]
        stem = name.rpartition(".")[0]
        if S_ISDIR(stat.st_mode):
            ignored.append((where, "folder in a flat split folder, not descended"))
        elif not _is_image_name(name, extensions):
            ignored.append((where, NOT_AN_IMAGE_EXTENSION))
        elif labels is not None and stem not in labels:
            ignored.append((where, why))
        else:
            cls = labels[stem] if labels is not None else ""
            _, shard, order = place(where, plan)
            line = f"{path}\t{cls}\t{stat.st_size}\t{stat.st_mtime_ns}\t-1\t"
            rows.append((split, shard, order, line))
    return rows


def _read_lines(path, key: str) -> list[str]:
    """The non-empty lines of a list the config names under ``key``."""
    try:
        with open_source(path, encoding="utf-8") as handle:
            return [line.strip() for line in handle if line.strip()]
    except UnicodeDecodeError as error:
        raise ConfigError(f"config key '{key}': {path} is not UTF-8 text: {error}") from None
    except OSError as error:
        raise ConfigError(f"config key '{key}': cannot read {path}: {error}") from None


def _index_tars(config: dict, extensions) -> tuple[list, list, set]:
    """ILSVRC2012 tars read in place: no unpacking, the originals untouched.

    A split's tar of per-class tars (ILSVRC2012_img_train.tar) is labelled by the inner
    tar names; a flat tar (ILSVRC2012_img_val.tar) by ``splits.<name>.labels`` (one synset
    per line, in sorted file-name order), or not at all (ILSVRC2012_img_test.tar: label -1).
    """
    from imgprep.tarindex import TarIndexError, cached_list_tar

    root = Path(config["source"]["root"])
    place, seed_cache = _placer(config["seed"]), cache_dir(config["results"])
    rows, ignored, classes = [], [], set()
    for split, spec in config["splits"].items():
        key = f"config key 'splits.{split}.tar'"
        tar = (root / spec["tar"]).resolve()
        skipped: list = []
        try:
            stat = os.stat(tar)
            members = cached_list_tar(tar, True, seed_cache, skipped)
        except FileNotFoundError:
            raise ConfigError(f"{key}: file not found: {tar}") from None
        except (TarIndexError, OSError) as error:
            raise ConfigError(f"{key}: {error}") from None
        ignored += [(f"{spec['tar']}!/{name}", reason) for name, reason in skipped]
        images = []
        for member in members:
            where = f"{spec['tar']}!/{member.name}"
            if not is_utf8(member.name):
                ignored.append((where, NOT_UTF8))
            elif "\t" in member.name or "\n" in member.name or "\r" in member.name:
                ignored.append((where, TAB_OR_NEWLINE))
            elif not _is_image_name(member.name, extensions) or _is_hidden(member.name):
                ignored.append((where, NOT_AN_IMAGE_EXTENSION))
            else:
                images.append(member)
        nested = any(".tar/" in member.name.lower() for member in images)
        if nested:
            labels = {}
            for member in images:
                cls, why = _inner_tar_class(member.name)
                if cls is None:
                    ignored.append((f"{spec['tar']}!/{member.name}", why))
                else:
                    labels[member.name] = cls
            images = [member for member in images if member.name in labels]
        elif spec.get("labels"):
            labels = _flat_labels(split, spec["labels"], root, images)
        else:
            labels = dict.fromkeys((m.name for m in images), "")
        boxes = _voc_boxes(config, split, ignored)
        plan = _single_plan(config, split)
        for member in images:
            cls = labels[member.name]
            _, shard, order = place(member.name, plan)
            line = (
                f"{tar}{MEMBER_SEPARATOR}{member.name}\t{cls}\t{member.size}\t"
                f"{stat.st_mtime_ns}\t{member.offset}\t{_box_text(boxes, member.name)}"
            )
            rows.append((split, shard, order, line))
            if cls:
                classes.add(cls)
    return rows, ignored, classes


def _is_hidden(name: str) -> bool:
    return name.rpartition("/")[2].startswith(".")


def _inner_tar_class(name: str) -> tuple[str | None, str]:
    """(class, "") of a member of a tar of class tars: the inner tar's base name without
    ``.tar`` (``n01440764.tar/x.JPEG`` -> ``n01440764``); (None, reason) when the member is
    not inside a class tar or that tar's name is absolute or climbs out with ``..`` (a
    class ``.`` or an unlabelled image would be silently wrong)."""
    at = name.lower().find(".tar/")
    if at < 0:
        return None, "not inside a class tar (a tar of class tars)"
    inner = name[: at + len(".tar")]
    parts = inner.split("/")
    if inner.startswith("/") or ".." in parts:
        return None, f"inner tar name {inner!r} is absolute or has '..': no class taken from it"
    cls = parts[-1][: -len(".tar")]
    if not cls.strip("."):
        return None, f"inner tar name {inner!r} gives no class"
    return cls, ""


def _flat_labels(split: str, labels_file: str, root: Path, images: list) -> dict[str, str]:
    """imagenet_2012_validation_synset_labels.txt: line i labels the i-th file by name."""
    key = f"config key 'splits.{split}.labels'"
    path = root / labels_file
    if not path.is_file():
        raise ConfigError(f"{key}: file not found: {path}")
    synsets = _read_lines(path, f"splits.{split}.labels")
    names = sorted(m.name for m in images)
    if len(synsets) != len(names):
        raise ConfigError(
            f"{key}: {path} has {len(synsets)} labels for {len(names)} images in the tar"
        )
    return dict(zip(names, synsets, strict=True))


def _index_urls(config: dict) -> tuple[list, list, set]:
    """A URL list (fall11_urls.txt or one URL a line); images are fetched by download_shard.

    Placement hashes the entry's key (``n01440764_10026``, or the URL itself), so the same
    URL stays in the same shard when the list grows. Labels come from the key's synset;
    plain URLs are unlabelled.
    """
    from imgprep.download import parse_url_list

    path = Path(config["source"]["urls"])
    entries, problems = parse_url_list(path)
    ignored = [(f"{path.name}:{line}", reason) for line, reason in problems]
    place, plan = _placer(config["seed"]), _fraction_plan(config["splits"])
    rows, classes = [], set()
    for entry in entries:
        split, shard, order = place(entry.key, plan)
        rows.append((split, shard, order, f"{entry.url}\t{entry.wnid}\t-1\t0\t-1\t"))
        if entry.wnid:
            classes.add(entry.wnid)
    return rows, ignored, classes


@contextlib.contextmanager
def _listing(key: str, folder):
    """A split folder the config names that cannot be listed fails naming the key (its
    subfolders that cannot be listed are only listed in ignored.tsv)."""
    try:
        yield
    except OSError as error:
        if error.filename is None or error.strerror is None:
            raise
        raise ConfigError(
            f"config key '{key}': cannot read {shown(str(error.filename))}: {error.strerror}"
        ) from None


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
        with _listing("source.root", root):
            rows, ignored, classes = _index_kaggle(config, extensions)
    elif source["type"] == "tars":
        root = Path(source["root"])
        rows, ignored, classes = _index_tars(config, extensions)
    elif source["type"] == "urls":
        root = Path(source["urls"])
        rows, ignored, classes = _index_urls(config)
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
            with _listing(f"splits.{name}.dir", folder):
                found, skipped, found_classes = _index_tree(folder, extensions, seed, plan)
            prefix = folder.relative_to(root).as_posix()
            rows.extend(_with_boxes(found, _voc_boxes(config, name, ignored)))
            classes |= found_classes
            ignored.extend((f"{prefix}/{path}", reason) for path, reason in skipped)
    else:
        root = Path(source["root"])
        with _listing("source.root", root):
            rows, ignored, classes = _index_tree(root, extensions, seed, _fraction_plan(splits))
        boxes = {}
        for name in splits:
            boxes.update(_voc_boxes(config, name, ignored))
        rows = _with_boxes(rows, boxes)

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
    for line in _read_lines(path, "labels.synsets"):
        synset, _, text = line.partition(" ")
        texts[synset] = text.strip()
    return texts


def build_label_map(config: dict, classes: list[str]) -> list[tuple[int, int, str, str]]:
    """One label map for every split: the labels file's order, else sorted class names."""
    labels_cfg = config["labels"]
    if labels_cfg["file"]:
        names = _read_lines(labels_cfg["file"], "labels.file")
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


def _index_files(result: ScanResult):
    """(name under index/, content) of every index file the scan result makes."""
    for split, lists in result.shards.items():
        for shard, members in enumerate(lists):
            yield f"{split}/{shard_name(shard)}.tsv", _lines(INDEX_COLUMNS, members)
    yield labels_path("").name, _tsv(LABEL_COLUMNS, result.labels)
    ignored = [(shown(path), shown(reason)) for path, reason in result.ignored]
    yield ignored_path("").name, _tsv(IGNORED_COLUMNS, ignored)


def _holds(path: Path, data: bytes) -> bool:
    try:
        return path.stat().st_size == len(data) and path.read_bytes() == data
    except FileNotFoundError:
        return False


def write_index(config: dict, result: ScanResult) -> ScanResult:
    """Write every list whose content changed; leave the others (and their mtimes) alone."""
    folder = index_dir(config["results"])
    changed = []
    for name, data in _index_files(result):
        if write_bytes_if_changed(folder / name, data):
            changed.append(name)
    for split, lists in result.shards.items():
        wanted = {f"{shard_name(shard)}.tsv" for shard in range(len(lists))}
        for stale in (folder / split).glob("*.tsv"):
            if stale.name not in wanted:
                stale.unlink()
                changed.append(f"{split}/{stale.name} (removed)")
    result.changed = changed
    return result


def plan_index(config: dict, result: ScanResult) -> ScanResult:
    """Write nothing under results/: each index file whose content changed goes to a
    private folder (removed at exit) and ``result.pending`` names it, so a dry run plans
    with the files as they would be, while a running build keeps reading its own."""
    folder = index_dir(config["results"])
    private = None
    for name, data in _index_files(result):
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


class IndexBusy(RuntimeError):
    """Another invocation builds from this index; its lists must not change under it."""


# index folder -> descriptor of its lock, held by this process for its life (a build)
_HELD_LOCKS: dict[str, int] = {}


def _lock_index(results, role: str) -> int | None:
    """Take ``index/.lock`` (flock, released by the kernel when the process ends, even
    after a SIGKILL); None while another process holds it. The file says who holds it."""
    folder = index_dir(results)
    folder.mkdir(parents=True, exist_ok=True)
    if os.path.realpath(folder) in _HELD_LOCKS:
        return _HELD_LOCKS[os.path.realpath(folder)]
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {role}\n".encode(), 0)
    return fd


def _lock_holder(results) -> str:
    try:
        return (index_dir(results) / ".lock").read_text().strip() or "?"
    except OSError:
        return "?"


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
    role = "dry-run" if dryrun else "build"
    fd = _lock_index(results, role)
    deadline = time.monotonic() + 60
    while fd is None and not dryrun and time.monotonic() < deadline:
        if not _lock_holder(results).endswith(" dry-run"):
            break
        time.sleep(0.2)  # a dry run writing its lists: a moment
        fd = _lock_index(results, role)
    if fd is None and not dryrun:
        raise IndexBusy(
            f"another snakemake invocation (pid, role: {_lock_holder(results)}) is building "
            f"from {index_dir(results)}; its shard lists must not change under its jobs. Wait "
            "for it to finish (`snakemake -n` shows what will be outstanding then)."
        )
    if fd is None:
        result = plan_index(config, result)
        print(
            f"imgprep index: a build is running on {index_dir(results)} (pid, role: "
            f"{_lock_holder(results)}); index left as it is, outstanding work planned from "
            f"{len(result.pending)} changed index file(s) kept aside",
            file=log,
        )
    else:
        try:
            result = write_index(config, result)
        finally:
            held = os.path.realpath(index_dir(results))
            if not dryrun:
                _HELD_LOCKS[held] = fd
            elif _HELD_LOCKS.get(held) != fd:
                os.close(fd)  # closing releases the lock
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
    from imgprep.files.tables import read_tsv

    return read_tsv(path, INDEX_COLUMNS, ints=("size", "mtime_ns", "offset"))


def write_split_table(shard_paths, labels_tsv, out_path):
    """One table per split: where each image is, its label and text, its shard and place."""
    import pandas as pd

    from imgprep.atomic import atomic_write
    from imgprep.files.tables import read_tsv

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
