"""Rule verify_split: read every shard of a split back with TensorFlow."""

import json

from imgprep.atomic import atomic_write
from imgprep.rulelog import rule_log
from imgprep.verify import verify_shards

with rule_log(snakemake):
    compression = snakemake.params.compression
    shards = [
        {"record": record, "index": index, "rejects": rejects}
        for record, index, rejects in zip(
            snakemake.input.records, snakemake.input.indexes, snakemake.input.rejects, strict=True
        )
    ]
    results = verify_shards(
        snakemake.wildcards.schema,
        shards,
        snakemake.input.labels,
        label_base=snakemake.params.label_base,
        compression=None if compression == "none" else compression.upper(),
        threads=snakemake.threads,
    )
    report = {
        "schema": snakemake.wildcards.schema,
        "split": snakemake.wildcards.split,
        "shards": results,
    }
    with atomic_write(snakemake.output[0], "w") as handle:
        json.dump(report, handle, indent=1, sort_keys=True)
        handle.write("\n")
