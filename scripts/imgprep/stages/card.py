"""The dataset card: README.md in a dataset's folder, in the manner of a Hugging Face or
TFDS card. What the dataset is (formats and their consumers, image settings, how labels
are numbered), its counts per split, the label map, how it was made (source, seed, the
effective configuration and its sha256, package versions), the sha256 of every shard and
a loading snippet per format (the format's own, ``RecordFormat.loading_snippet``) that
runs as it stands from the card's folder.

Written from the summary (counts, shard hashes), the label map, the member tables and the
rejects table; not byte-identical between builds (versions), but from the same files the
same card, timings and dates being left out.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path

from imgprep.atomic import atomic_write
from imgprep.datasets.presets import PRESETS
from imgprep.files.tables import read_tsv
from imgprep.formats import get_format

__all__ = ["canonical_json", "config_sha256", "source_description", "write_card"]

# distribution names of the packages whose versions shape the bytes (first one installed)
PACKAGES = {
    "imgprep": ("imgprep",),
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-macos"),
    "pillow": ("pillow",),
    "simplejpeg": ("simplejpeg",),
    "numpy": ("numpy",),
    "numba": ("numba",),
    "snakemake": ("snakemake",),
}
# more classes than this: the label map goes into a <details> block
FOLDED_CLASSES = 20
# Hugging Face's size_categories, by image count
SIZE_CATEGORIES = {10**3: "n<1K", 10**4: "1K<n<10K", 10**5: "10K<n<100K", 10**6: "100K<n<1M"}


def canonical_json(config: Mapping) -> str:
    """The configuration as canonical JSON (sorted keys, no spaces): what its hash hashes."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def config_sha256(config: Mapping) -> str:
    return hashlib.sha256(canonical_json(config).encode("utf-8")).hexdigest()


def source_description(config: Mapping) -> str:
    """One Markdown sentence saying where the images came from."""
    source, splits = config["source"], config["splits"]
    kind = source["type"]
    if kind == "folders":
        layout = source["layout"]
        text = f"class folders under `{source['root']}` (layout `{layout}`)"
        if layout == "split-folders":
            dirs = ", ".join(f"{s} from `{spec.get('dir', s)}/`" for s, spec in splits.items())
            text += f": {dirs}"
    elif kind == "manifest":
        text = f"the manifest `{source['manifest']}`"
        if source.get("root"):
            text += f" (paths from `{source['root']}`)"
    elif kind == "kaggle":
        text = f"the Kaggle ImageNet download under `{source['root']}`"
    elif kind == "tars":
        tars = ", ".join(f"{s} from `{spec.get('tar')}`" for s, spec in splits.items())
        text = f"the ILSVRC2012 tars under `{source['root']}`, read in place: {tars}"
    else:
        text = f"the URL list `{source['urls']}`, downloaded"
    return f"{text}."


def package_versions() -> dict[str, str]:
    """Python's and the packages' versions, as installed where the card is written."""
    versions = {"python": platform.python_version()}
    for package, names in PACKAGES.items():
        versions[package] = "not installed"
        for name in names:
            try:
                version = metadata.version(name)
            except metadata.PackageNotFoundError:
                continue
            versions[package] = version if name == package else f"{version} ({name})"
            break
    return versions


def workflow_commit() -> str | None:
    """The git commit of the workflow's checkout (with `-dirty` for local changes)."""
    command = ["git", "describe", "--always", "--dirty", "--abbrev=12"]
    try:
        proc = subprocess.run(command, cwd=Path(__file__).parent, capture_output=True, text=True)
    except OSError:
        return None
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> list[str]:
    def cell(value) -> str:
        if isinstance(value, bool):
            return "yes" if value else "no"
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]


def _label_numbering(schemas: Sequence[str], base: int) -> list[str]:
    """How each format numbers the labels, and what its consumer expects."""
    lines = []
    for schema in schemas:
        spec = get_format(schema)
        if not getattr(spec, "labelled", True):
            lines.append(f"- `{schema}` stores no label (its consumer trains without classes).")
        elif spec.zero_based_labels or base == 0:
            why = " (`labels.base` does not apply to it)" if spec.zero_based_labels else ""
            lines.append(f"- `{schema}`: 0 … N−1, the class index{why}.")
        else:
            lines.append(
                f"- `{schema}`: 1 … N, 0 reserved for background (`labels.base: 1`): TPU ResNet "
                "and tensorflow/models subtract 1, TF-slim counts N + 1 classes."
            )
    lines.append("- An unlabelled image is stored as −1 (TFDS' convention).")
    return lines


def _size_category(records: int) -> str:
    return next((name for top, name in SIZE_CATEGORIES.items() if records < top), "1M<n<10M")


def _flatten(value, prefix="") -> list[tuple[str, object]]:
    if isinstance(value, Mapping):
        return [row for key, item in value.items() for row in _flatten(item, f"{prefix}{key}.")]
    return [(prefix.rstrip("."), value)]


def write_card(
    out_path,
    *,
    name: str,
    preset: str | None,
    summary_json,
    labels_tsv,
    tables: Sequence,
    rejects_tsv,
    config: Mapping,
    config_hash: str,
    source: str,
    snippets: Mapping[str, str | None],
    duplicates_json=None,
) -> str:
    """Write the card to ``out_path``; returns its text."""
    import yaml

    if config_sha256(config) != config_hash:
        raise ValueError("the configuration's sha256 is not the one the rule computed")
    config_yaml = yaml.safe_dump(dict(config), sort_keys=True, allow_unicode=True)
    if config_sha256(yaml.safe_load(config_yaml)) != config_hash:
        raise ValueError("the configuration does not survive YAML: its hash would not check")
    summary = json.loads(Path(summary_json).read_text())
    labels = read_tsv(labels_tsv, ("index", "label", "synset", "text"), ints=("index", "label"))
    members = {Path(path).stem: read_tsv(path) for path in tables}
    rejected = read_tsv(rejects_tsv)
    schemas = list(config["records"]["schemas"])
    splits = summary["splits"]
    base = config["labels"]["base"]
    out = [
        "---",
        f"pretty_name: {json.dumps(name)}",
        "task_categories:",
        "- image-classification",
        "size_categories:",
        f"- {json.dumps(_size_category(summary['totals']['images']))}",
        "tags:",
        "- imgprep",
        *(f"- {schema}" for schema in schemas),
        "---",
        "",
        f"# {name}",
        "",
    ]
    records_total = {
        s: sum(splits[split]["schemas"][s]["records"] for split in splits) for s in schemas
    }
    out += [
        f"{len(labels)} classes, {summary['totals']['images']} indexed images "
        f"({summary['totals']['rejects']} rejected) in {len(splits)} splits, made by "
        "imgprep into "
        + ", ".join(f"`{s}` records ({n})" for s, n in records_total.items())
        + f", from {source}",
        "",
        "## What it is",
        "",
    ]
    if preset:
        out += [f"Preset `{preset}`: for {PRESETS[preset].consumer}.", ""]
    out += _table(
        ["format", "folder", "what it is"],
        [(f"`{s}`", f"`records/{s}/`", get_format(s).description) for s in schemas],
    )
    resize = config["resize"]
    size = resize["size"]
    settings = [
        ("size", f"{size}×{size}" if isinstance(size, int) else f"{size[0]}×{size[1]}"),
        ("mode", resize["mode"]),
        ("upscale", resize["upscale"]),
        ("colorspace", resize["colorspace"]),
        *([("gray matrix", resize["gray_matrix"])] if resize["colorspace"] == "gray" else []),
        ("filter", resize["filter"]),
        ("JPEG quality", resize["quality"]),
        ("chroma subsampling", resize["subsampling"]),
        ("colour profiles", resize["icc"]),
        *([("pad fill", resize["fill"])] if resize["mode"] == "pad" else []),
        ("DCT-scaled decode", resize["fast_decode"]),
        ("compression", config["records"]["compression"]),
    ]
    out += ["", "### Images", "", *_table(["setting", "value"], settings), ""]
    out += ["### Labels", "", f"`labels.base: {base}`. Per format:", ""]
    out += [*_label_numbering(schemas, base), ""]
    out += ["## Splits", ""]
    rows = []
    for split, entry in splits.items():
        shards = {len(entry["schemas"][s]["shards"]) for s in schemas}
        rows.append(
            (
                split,
                entry["images"],
                *(entry["schemas"][s]["records"] for s in schemas),
                entry["rejects"],
                entry["classes"],
                entry["unlabelled"],
                "/".join(str(n) for n in sorted(shards)),
            )
        )
    records = [f"records ({s})" for s in schemas]
    header = ["split", "images", *records, "rejects", "classes", "unlabelled", "shards"]
    out += _table(header, rows)
    reasons = [
        (split, reason, count)
        for split, entry in splits.items()
        for reason, count in entry["reject_reasons"].items()
    ]
    out += ["", "Images = records + rejects in every format. Rejected images by reason:", ""]
    out += _table(["split", "reason", "images"], reasons) if reasons else ["none."]
    out += [
        "",
        "Every rejected file and its reason: `rejects.tsv`; every member image: "
        "`index/<split>.tsv`. Source files not indexed at all (other extensions, hidden, "
        f"symlinks, …): {summary['ignored_files']}, listed in "
        f"`{config['results']}/index/ignored.tsv`.",
        "",
    ]
    out += _splits_made(config)
    if duplicates_json is not None:
        found = _flatten(json.loads(Path(duplicates_json).read_text()))
        out += [
            "## Duplicates",
            "",
            "Exact duplicates (the same decoded pixels or source bytes) and near ones (64-bit "
            "DCT hashes of the stored images within `near_distance` bits), within and across "
            "splits (`duplicates.json`; the pairs: `duplicates.tsv`):",
            "",
            *_table(["count", "value"], found),
            "",
        ]
    out += _label_map(labels, members, rejected, schemas, base)
    out += _made(config, config_yaml, config_hash, source)
    out += _checksums(splits, schemas)
    out += _loading(snippets, schemas)
    text = "\n".join(out).rstrip("\n") + "\n"
    with atomic_write(out_path, "w") as handle:
        handle.write(text)
    return text


def _splits_made(config: Mapping) -> list[str]:
    rows = []
    for split, spec in config["splits"].items():
        took = [f"{k} {spec[k]}" for k in ("count", "fraction") if k in spec]
        took += ["per class"] if spec.get("per_class") else []
        took += ["held out"] if spec.get("holdout") else []
        rows.append((split, spec.get("from", split), spec["shards"], ", ".join(took) or "all"))
    lines = ["Where each split comes from:", ""]
    return [*lines, *_table(["split", "source split", "shards", "takes"], rows), ""]


def _label_map(labels, members, rejected, schemas, base) -> list[str]:
    numbering = {}  # stored-label column -> formats numbering alike
    for schema in schemas:
        spec = get_format(schema)
        if getattr(spec, "labelled", True):
            numbering.setdefault(spec.label(0, base), []).append(schema)
    rejected_paths = {(r["split"], r["path"]) for r in rejected.to_dict("records")}
    per_class = {}
    for split, table in members.items():
        kept = [
            row["class"]
            for row in table.to_dict("records")
            if (split, row["path"]) not in rejected_paths
        ]
        per_class[split] = {synset: kept.count(synset) for synset in set(kept)}
    header = [
        *(f"label ({', '.join(names)})" for names in numbering.values()),
        "synset",
        "text",
        *(f"records ({split})" for split in members),
    ]
    rows = [
        (
            *(row["index"] + first for first in numbering),
            f"`{row['synset']}`",
            row["text"],
            *(per_class[split].get(row["synset"], 0) for split in members),
        )
        for row in labels.to_dict("records")
    ]
    table = _table(header, rows)
    lines = ["## Label map", ""]
    if len(rows) > FOLDED_CLASSES:
        summary = f"<summary>All {len(rows)} classes</summary>"
        return [*lines, "<details>", summary, "", *table, "", "</details>", ""]
    return [*lines, *table, ""]


def _made(config, config_yaml: str, config_hash: str, source: str) -> list[str]:
    lines = [
        "## How it was made",
        "",
        f"- Source: {source}",
        f"- Seed: `{config['seed']}` (it orders every shard and picks every subset).",
    ]
    commit = workflow_commit()
    if commit:
        lines.append(f"- Workflow commit: `{commit}`.")
    lines += [
        "",
        "The dataset's effective configuration (schema defaults < top-level sections < "
        "preset < the dataset's own keys); its sha256 is that of its canonical JSON "
        "(`json.dumps(config, sort_keys=True, separators=(',', ':'), ensure_ascii=False)`):",
        "",
        f"config sha256: `{config_hash}`",
        "",
        "```yaml",
        config_yaml.rstrip("\n"),
        "```",
        "",
        "Versions where this card was written (the packages whose versions shape the bytes):",
        "",
        *_table(["package", "version"], list(package_versions().items())),
        "",
    ]
    return lines


def _checksums(splits: Mapping, schemas: Sequence[str]) -> list[str]:
    lines = ["## Files and checksums", ""]
    check = []
    for schema in schemas:
        rows = []
        spec = get_format(schema)
        for split, entry in splits.items():
            shards = entry["schemas"][schema]["shards"]
            # the summary names each shard's file; its folder is the format's
            named = (spec.shard_path(split, i, len(shards)) for i in range(len(shards)))
            paths = {Path(path).name: path for path in named}
            for shard in shards:
                path = f"records/{schema}/{paths[shard['record']]}"
                rows.append((split, f"`{path}`", shard["records"], shard["bytes"], shard["sha256"]))
                check.append(f"{shard['sha256']}  {path}")
        lines += [f"### `{schema}`", ""]
        lines += _table(["split", "file", "records", "bytes", "sha256"], rows)
        lines.append("")
    lines += ["All of them, for `sha256sum -c` in this folder:", "", "```", *check, "```", ""]
    return lines


def _loading(snippets: Mapping[str, str | None], schemas: Sequence[str]) -> list[str]:
    lines = [
        "## Loading",
        "",
        "Each snippet runs as it stands in this card's folder (`python snippet.py` there) "
        "and prints the records it read per split.",
        "",
    ]
    for schema in schemas:
        code = snippets.get(schema)
        lines += [f"### `{schema}`", "", get_format(schema).description + ".", ""]
        if code:
            lines += ["```python", code.rstrip("\n"), "```", ""]
        else:
            lines += ["No snippet for this format.", ""]
    return lines
