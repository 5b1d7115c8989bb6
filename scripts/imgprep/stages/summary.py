"""Summary of a finished build: what went in, what came out, what was rejected and why."""

from __future__ import annotations

import json
from pathlib import Path

from imgprep.atomic import atomic_write
from imgprep.files.tables import read_tsv


class SummaryError(ValueError):
    """Counts that do not add up: an image went missing somewhere."""


def write_summary(
    verified, tables, rejects, ignored, json_path, tsv_path, rejects_path, **audit
) -> dict:
    """``audit``: the duplicate audit's ``duplicates`` (counts: summary.json's
    "duplicates") and ``leaks`` (leaking train images, rejects where they were dropped),
    each a path or None."""
    import pandas as pd

    leaks, duplicates = audit.get("leaks"), audit.get("duplicates")

    split_tables = {Path(path).stem: read_tsv(path) for path in tables}
    reject_parts = []
    for path in rejects:
        part = read_tsv(path)
        part.insert(0, "shard", Path(path).stem)
        part.insert(0, "split", Path(path).parent.name)
        reject_parts.append(part)
    if leaks is not None:
        reject_parts.append(read_tsv(leaks))
    all_rejects = pd.concat(reject_parts, ignore_index=True)
    splits: dict[str, dict] = {}
    for split, table in split_tables.items():
        rejected = all_rejects[all_rejects["split"] == split]
        splits[split] = {
            "images": len(table),
            "classes": int(table.loc[table["class"] != "", "class"].nunique()),
            "unlabelled": int((table["class"] == "").sum()),
            "rejects": len(rejected),
            "reject_reasons": _reason_counts(rejected["reason"]),
            "schemas": {},
        }
    rows = []
    reports = []
    for path in verified:
        with open(path) as handle:
            report = json.load(handle)
        reports.extend(
            (report["schema"], split, shards) for split, shards in report["splits"].items()
        )
    for schema, split, shards in reports:
        entry = splits[split]
        records = sum(shard["records"] for shard in shards)
        if records + entry["rejects"] != entry["images"]:
            raise SummaryError(
                f"{schema}/{split}: {records} records + {entry['rejects']} rejects "
                f"!= {entry['images']} indexed images"
            )
        nbytes = sum(shard["bytes"] for shard in shards)
        entry["schemas"][schema] = {
            "records": records,
            "bytes": nbytes,
            "shards": [
                {key: shard[key] for key in ("record", "records", "bytes", "sha256")}
                for shard in shards
            ],
        }
        rows.append(
            {
                "schema": schema,
                "split": split,
                "images": entry["images"],
                "records": records,
                "rejects": entry["rejects"],
                "classes": entry["classes"],
                "shards": len(shards),
                "empty_shards": sum(1 for shard in shards if shard["records"] == 0),
                "bytes": nbytes,
            }
        )
    ignored_count = len(read_tsv(ignored))
    summary = {
        "splits": splits,
        "ignored_files": ignored_count,
        "totals": {
            "images": sum(s["images"] for s in splits.values()),
            "rejects": sum(s["rejects"] for s in splits.values()),
            "ignored_files": ignored_count,
        },
    }
    if duplicates is not None:
        with open(duplicates) as handle:
            summary["duplicates"] = json.load(handle)
    with atomic_write(json_path, "w") as handle:
        json.dump(summary, handle, indent=1, sort_keys=True)
        handle.write("\n")
    with atomic_write(tsv_path, "w", newline="") as handle:
        pd.DataFrame(rows).to_csv(handle, sep="\t", index=False)
    with atomic_write(rejects_path, "w", newline="") as handle:
        all_rejects.to_csv(handle, sep="\t", index=False)
    return summary


def _reason_counts(reasons) -> dict[str, int]:
    """Group reasons by their kind (the text before the first colon; for a failed
    download, what failed: dead links are the common case and differ in kind)."""

    def kind(reason: str) -> str:
        head, _, rest = reason.partition(":")
        if head == "download failed" and rest:
            return f"{head}: {rest.strip().split(' (')[0]}"
        return head.strip()

    kinds = reasons.map(kind)
    return {kind: int(n) for kind, n in sorted(kinds.value_counts().items())}


def stage_images(summary: dict, stages) -> dict[str, int]:
    """The images each stage of ``stages`` handled, from the summary: download and resize
    every indexed image, ravel and embed the resized ones (not rejected), records and verify
    <schema> that format's records."""
    splits = summary["splits"].values()
    images = sum(split["images"] for split in splits)
    resized = images - sum(split["rejects"] for split in splits)
    counts = {}
    for stage in stages:
        kind, _, schema = stage.partition(" ")
        if kind in ("download", "resize"):
            counts[stage] = images
        elif kind in ("ravel", "embed"):
            counts[stage] = resized
        else:
            counts[stage] = sum(split["schemas"][schema]["records"] for split in splits)
    return counts
