"""The report's plots (rules/report.smk): a split's class histogram, source size and aspect
histograms and shard sizes, and a dataset's per-stage throughput (the summary's
stages.tsv).

matplotlib with the Agg backend (no display), a fixed dpi and no ``Software`` tag in the
PNG, so a figure depends on its data and matplotlib's version only. Every function takes
plain numbers (the report scripts read the tables) and writes one PNG atomically.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # before pyplot: a job has no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from imgprep.atomic import atomic_write  # noqa: E402

__all__ = [
    "DPI",
    "aspect_histogram",
    "class_histogram",
    "save",
    "shard_sizes",
    "size_histogram",
    "split_figures",
    "throughput",
    "throughput_report",
]

DPI = 100
# what savefig would stamp into the PNG otherwise: "Matplotlib version 3.11.2, https://…"
PNG_METADATA = {"Software": None}
# up to this many bars a plot names each class (shard); beyond, a histogram of the counts
MAX_BARS = 40


def save(fig, out_png) -> None:
    """Write ``fig`` as a PNG (fixed dpi, no Software tag) and close it."""
    with atomic_write(out_png, "wb") as handle:
        fig.savefig(handle, format="png", dpi=DPI, metadata=PNG_METADATA)
    plt.close(fig)


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def class_histogram(counts: Sequence[tuple[str, int]], out_png, title: str) -> None:
    """Images per class (``counts``: (class name, images), in label order): a bar per
    class for up to MAX_BARS classes, else a histogram of the per-class counts with their
    minimum, median and maximum."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    values = np.array([n for _, n in counts], dtype=np.int64)
    if not len(values):
        _empty(ax, "no images")
    elif len(values) <= MAX_BARS:
        ax.barh(range(len(values)), values, color="tab:blue")
        ax.set_yticks(range(len(values)), [name for name, _ in counts], fontsize=8)
        ax.invert_yaxis()  # label order top to bottom
        ax.set_xlabel("images")
        for i, n in enumerate(values):
            ax.text(n, i, f" {n}", va="center", fontsize=8)
    else:
        ax.hist(values, bins=min(50, len(values)), color="tab:blue")
        ax.set_xlabel("images per class")
        ax.set_ylabel("classes")
        ax.set_title(
            f"{len(values)} classes: min {values.min()}, median {np.median(values):g}, "
            f"max {values.max()}",
            fontsize=9,
        )
    fig.suptitle(title)
    fig.tight_layout()
    save(fig, out_png)


def size_histogram(widths, heights, out_png, title: str) -> None:
    """Source widths and heights (pixels, as decoded, before orientation), log-spaced
    bins."""
    widths, heights = np.asarray(widths, float), np.asarray(heights, float)
    fig, ax = plt.subplots(figsize=(8, 4))
    if not len(widths):
        _empty(ax, "no images kept")
    else:
        low = max(1.0, min(widths.min(), heights.min()))
        high = max(low * 1.01, widths.max(), heights.max())
        bins = np.geomspace(low, high * 1.0001, 30)
        ax.hist(widths, bins=bins, alpha=0.6, label=f"width (median {np.median(widths):g})")
        ax.hist(heights, bins=bins, alpha=0.6, label=f"height (median {np.median(heights):g})")
        ax.set_xscale("log")
        ax.set_xlabel("source pixels")
        ax.set_ylabel("images")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    save(fig, out_png)


def aspect_histogram(widths, heights, out_png, title: str) -> None:
    """Source aspect ratios (width / height), log-spaced bins from 1:4 to 4:1 (beyond is
    counted at the edges)."""
    widths, heights = np.asarray(widths, float), np.asarray(heights, float)
    fig, ax = plt.subplots(figsize=(8, 4))
    if not len(widths):
        _empty(ax, "no images kept")
    else:
        aspect = np.clip(widths / np.maximum(heights, 1), 0.25, 4.0)
        ax.hist(aspect, bins=np.geomspace(0.25, 4.0, 41), color="tab:green")
        ax.set_xscale("log")
        ticks = [0.25, 0.5, 0.75, 1, 4 / 3, 2, 4]
        ax.set_xticks(ticks, ["1:4", "1:2", "3:4", "1:1", "4:3", "2:1", "4:1"])
        ax.minorticks_off()
        ax.set_xlabel("width / height")
        ax.set_ylabel("images")
        portrait = int((aspect < 1).sum())
        ax.set_title(f"{len(aspect)} images, {portrait} portrait", fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    save(fig, out_png)


def shard_sizes(per_schema: Mapping[str, Sequence[tuple[int, int]]], out_png, title: str) -> None:
    """Records and MB per shard, for each schema (``per_schema``: schema -> (records,
    bytes) per shard in shard order): bars per shard for up to MAX_BARS shards, else
    histograms."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6))
    schemas = list(per_schema)
    width = 0.8 / max(1, len(schemas))
    for k, schema in enumerate(schemas):
        records = np.array([r for r, _ in per_schema[schema]], dtype=np.int64)
        mb = np.array([b for _, b in per_schema[schema]], dtype=np.float64) / 1e6
        if len(records) <= MAX_BARS:
            x = np.arange(len(records)) + (k - (len(schemas) - 1) / 2) * width
            top.bar(x, records, width, label=schema)
            bottom.bar(x, mb, width, label=schema)
        else:
            top.hist(records, bins=30, alpha=0.6, label=schema)
            bottom.hist(mb, bins=30, alpha=0.6, label=schema)
    many = any(len(v) > MAX_BARS for v in per_schema.values())
    top.set_ylabel("shards" if many else "records")
    bottom.set_ylabel("shards" if many else "MB")
    top.set_xlabel("records per shard" if many else "shard")
    bottom.set_xlabel("MB per shard" if many else "shard")
    if not many:
        for ax in (top, bottom):
            ax.xaxis.get_major_locator().set_params(integer=True)
    if schemas:
        top.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    save(fig, out_png)


def throughput(stages: Sequence[Mapping], out_png, title: str) -> None:
    """Per stage (rows of the summary's stages.tsv: stage, jobs, img_per_s, wall_s,
    cpu_s, ...): images per job-second, and wall / CPU seconds of all its jobs."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.5))
    if not stages:
        _empty(left, "no benchmark files")
        right.set_axis_off()
    else:
        names = [row["stage"].replace(" ", "\n") for row in stages]
        x = np.arange(len(stages))
        rates = [float(row["img_per_s"]) for row in stages]
        left.bar(x, rates, color="tab:purple")
        left.set_xticks(x, names, fontsize=8)
        left.set_ylabel("images / job-second")
        for i, row in enumerate(stages):
            left.text(i, rates[i], f"{rates[i]:g}\n{row['jobs']} jobs", ha="center", va="bottom")
        left.margins(y=0.3)
        right.bar(x - 0.2, [float(row["wall_s"]) for row in stages], 0.4, label="wall s")
        right.bar(x + 0.2, [float(row["cpu_s"]) for row in stages], 0.4, label="CPU s")
        right.set_xticks(x, names, fontsize=8)
        right.set_ylabel("seconds, all jobs")
        right.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    save(fig, out_png)


# -- what the report rules draw, from the workflow's tables -----------------------------


def split_figures(table, metas, summary, split: str, out: Mapping[str, str], title: str) -> None:
    """A split's class histogram (member table ``table``: index/<split>.tsv), source size
    and aspect histograms (the shards' resize ``metas``: kept images only) and shard sizes
    (``summary``: summary.json); ``out`` maps classes, source_size, source_aspect and
    shards to their PNGs."""
    import json

    from imgprep.files.tables import read_tsv

    members = read_tsv(table, required=("label", "class", "text"))
    counts = members.groupby(["label", "class", "text"], sort=False).size()
    ordered = sorted(counts.items(), key=lambda item: int(item[0][0]) if item[0][0] else -1)
    named = [(f"{label} {text or cls}".strip(), int(n)) for (label, cls, text), n in ordered]
    class_histogram(named, out["classes"], f"{title}: images per class ({len(members)})")
    widths, heights = [], []
    for meta in metas:
        kept = read_tsv(meta, ints=("source_width", "source_height"))
        widths += kept["source_width"].tolist() if len(kept) else []
        heights += kept["source_height"].tolist() if len(kept) else []
    size_histogram(widths, heights, out["source_size"], f"{title}: source sizes")
    aspect_histogram(widths, heights, out["source_aspect"], f"{title}: source aspect ratios")
    with open(summary) as handle:
        schemas = json.load(handle)["splits"][split]["schemas"]
    per_schema = {
        schema: [(s["records"], s["bytes"]) for s in facts["shards"]]
        for schema, facts in schemas.items()
    }
    shard_sizes(per_schema, out["shards"], f"{title}: records and MB per shard")


def throughput_report(stages_tsv, out_png, title: str) -> list[dict]:
    """The throughput plot of the summary's per-stage totals (stages.tsv)."""
    from imgprep.files.tables import read_tsv

    stages = read_tsv(stages_tsv, required=("stage", "jobs", "img_per_s", "wall_s", "cpu_s"))
    rows = stages.to_dict("records")
    throughput(rows, out_png, title)
    return rows


def duplicate_pairs(pairs_tsv, out_png, title: str) -> None:
    """Pairs of the duplicate audit (results/<ds>duplicates.tsv) counted per kind and pair
    of splits."""
    from imgprep.files.tables import read_tsv

    pairs = read_tsv(pairs_tsv)
    fig, ax = plt.subplots(figsize=(8, 4))
    if not len(pairs):
        _empty(ax, "no duplicate pairs")
    else:
        counts = pairs.groupby(["kind", "split_a", "split_b"]).size()
        names = [f"{kind}: {a} / {b}" for kind, a, b in counts.index]
        ax.barh(range(len(counts)), counts.to_numpy(), color="tab:red")
        ax.set_yticks(range(len(counts)), names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("pairs")
    fig.suptitle(title)
    fig.tight_layout()
    save(fig, out_png)
