"""Rule verify_records: read every shard of one schema back with TensorFlow."""

import json

from imgprep.atomic import atomic_write
from imgprep.rulelog import rule_log
from imgprep.verify import verify_shards

with rule_log(snakemake):
    inputs = snakemake.input
    shards = [
        {"split": split, "record": record, "index": index, "rejects": rejects}
        for split, record, index, rejects in zip(
            snakemake.params.splits, inputs.records, inputs.indexes, inputs.rejects, strict=True
        )
    ]
    if inputs.get("record_indexes"):  # uncompressed shards: their DALI / tfrecord index
        for shard, record_index in zip(shards, inputs.record_indexes, strict=True):
            shard["record_index"] = record_index
    results = verify_shards(
        snakemake.wildcards.schema,
        shards,
        inputs.labels,
        label_base=snakemake.params.label_base,
        compression=snakemake.params.compression,
        threads=snakemake.threads,
        cache_dir=snakemake.params.cache,
        **({"lab_size": snakemake.params.lab_size} if snakemake.params.lab_size else {}),
    )
    report = {"schema": snakemake.wildcards.schema, "splits": {}}
    for shard, result in zip(shards, results, strict=True):
        report["splits"].setdefault(shard["split"], []).append(result)
    with atomic_write(snakemake.output[0], "w") as handle:
        json.dump(report, handle, indent=1, sort_keys=True)
        handle.write("\n")
    print({split: len(shards) for split, shards in report["splits"].items()}, "shards verified")
