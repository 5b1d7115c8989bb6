"""Rule verify_records: read every shard of one schema back with TensorFlow."""

import json

from imgprep.atomic import atomic_write, remove_stale_temps_in
from imgprep.rulelog import rule_log
from imgprep.verify import VerificationError, forget_failed, verify_shards

with rule_log(snakemake):
    remove_stale_temps_in(snakemake.params.cache)  # the cache is this job's alone
    inputs = snakemake.input
    shards = [
        {"split": split, "record": record, "sha256": sha256, "index": index, "rejects": rejects}
        for split, record, sha256, index, rejects in zip(
            snakemake.params.splits,
            inputs.records,
            inputs.sha256,
            inputs.indexes,
            inputs.rejects,
            strict=True,
        )
    ]
    if inputs.get("record_indexes"):  # uncompressed shards: their DALI / tfrecord index
        for shard, record_index in zip(shards, inputs.record_indexes, strict=True):
            shard["record_index"] = record_index
    try:
        results = verify_shards(
            snakemake.wildcards.schema,
            shards,
            inputs.labels,
            label_base=snakemake.params.label_base,
            compression=snakemake.params.compression,
            threads=snakemake.threads,
            cache_dir=snakemake.params.cache,
            full=bool(snakemake.params.full),
        )
    except Exception as error:  # whatever broke, no summary may vouch for these shards
        failed = error if isinstance(error, VerificationError) else VerificationError(str(error))
        for path in forget_failed(failed, snakemake.params.reports):
            print(f"removed {path}: rebuilt and checked again by the next run")
        raise
    report = {"schema": snakemake.wildcards.schema, "splits": {}}
    for shard, result in zip(shards, results, strict=True):
        report["splits"].setdefault(shard["split"], []).append(result)
    with atomic_write(snakemake.output[0], "w") as handle:
        json.dump(report, handle, indent=1, sort_keys=True)
        handle.write("\n")
    print({split: len(shards) for split, shards in report["splits"].items()}, "shards verified")
