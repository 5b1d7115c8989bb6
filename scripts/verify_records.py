"""Rule verify_records: read every shard of one record format back and check it."""

import json

from imgprep.atomic import atomic_write, remove_stale_temps_in
from imgprep.rulelog import rule_log
from imgprep.stages.verify import VerificationError, forget_failed, verify_shards

with rule_log(snakemake):
    remove_stale_temps_in(snakemake.params.cache)  # the cache is this job's alone
    # inputs by name, <split>/<shard>/<role>, in split and shard order (verify_inputs)
    by_shard = {}
    for name, path in snakemake.input.items():
        if name.count("/") == 2:
            split, shard, role = name.split("/")
            by_shard.setdefault((split, shard), {"split": split})[role] = path
    if snakemake.input.get("leaks"):  # duplicates.leaks: drop: rejects of their own
        from imgprep.duplicates import read_drops

        for (split, shard), found in by_shard.items():
            found["dropped"] = read_drops(snakemake.input.leaks, split, shard)
    shards = list(by_shard.values())
    try:
        results = verify_shards(
            snakemake.wildcards.schema,
            shards,
            snakemake.input.labels,
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
