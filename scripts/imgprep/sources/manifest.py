"""source.type 'manifest': a CSV/TSV with columns path, label[, split].

Paths are relative to ``source.root`` (default: the manifest's folder). A listed file
that is missing is still indexed: the resize stage rejects it with the reason, so
records + rejects still add up to the manifest.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from imgprep.errors import ConfigError
from imgprep.files.tables import IndexRow
from imgprep.sourcefile import open_source
from imgprep.sources.common import Found, fraction_plan, only, placer

KEY = "config key 'source.manifest'"


def check(config: dict) -> None:
    source = config["source"]
    if "manifest" not in source:
        raise ConfigError("config key 'source.manifest' is required with source.type 'manifest'")
    if not Path(source["manifest"]).is_file():
        raise ConfigError(f"config key 'source.manifest': file not found: {source['manifest']}")
    if "root" in source and not Path(source["root"]).is_dir():
        raise ConfigError(f"config key 'source.root': folder not found: {source['root']}")
    for name, split in config["splits"].items():
        only(split, name, ("fraction",), "a manifest names its files (and splits)")


def scan(config: dict, cache: Path) -> Found:
    source = config["source"]
    manifest = Path(source["manifest"])
    base = Path(source["root"]) if source.get("root") else manifest.parent
    delimiter = "\t" if manifest.suffix.lower() in (".tsv", ".tab") else ","
    try:
        rows, ignored, classes = _read_manifest(
            manifest, base, delimiter, config["splits"], placer(config["seed"])
        )
    except UnicodeDecodeError as error:
        raise ConfigError(f"{KEY}: {manifest} is not UTF-8 text: {error}") from None
    return Found(rows, ignored, classes, manifest)


def _read_manifest(manifest: Path, base: Path, delimiter: str, splits: dict, place):
    rows, ignored, classes, seen = [], [], set(), {}
    with open_source(manifest, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        columns = set(reader.fieldnames or ())
        if not {"path", "label"} <= columns:
            raise ConfigError(f"{KEY}: {manifest} needs columns path and label, has {columns}")
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
        plans = {name: ((name, 1.0),) for name in splits}
        drawn = None if has_split else fraction_plan(splits)
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
                raise ConfigError(f"{KEY}: {where}: split '{split}' is not in config 'splits'")
            full = path if os.path.isabs(path) else f"{base}/{path}"
            try:
                stat = os.stat(full)
                size, mtime_ns = stat.st_size, stat.st_mtime_ns
            except OSError:
                size, mtime_ns = -1, 0
            split, slot, order = place(path, plans[split] if has_split else drawn)
            rows.append((split, slot, order, IndexRow(full, label, size, mtime_ns)))
            classes.add(label)
    return rows, ignored, classes
