"""Per-shard stage code: what one Snakemake job of a stage does (download, resize, ravel,
embed, records, verify, metadata, summary).

A stage reads its shard's files (imgprep.files), computes with imgprep.kernels, asks the
registries (imgprep.formats) and writes its outputs atomically; no stage imports another.
"""
