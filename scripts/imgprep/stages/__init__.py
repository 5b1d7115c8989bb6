"""Per-shard stage code: what one Snakemake job of a stage does (resize, ravel, embed, summary).

A stage reads its shard's files (imgprep.files), computes with imgprep.kernels and writes
its outputs atomically; no stage imports another stage.
"""
