"""Rule records_shard: one shard of one record format."""

from pathlib import Path

from imgprep.atomic import atomic_write
from imgprep.rulelog import rule_log
from imgprep.stages.records import write_shard

with rule_log(snakemake):
    drop = {}
    if snakemake.input.get("leaks"):  # duplicates.leaks: drop, a train split
        from imgprep.duplicates import meta_shard, read_drops

        drop = read_drops(snakemake.input.leaks, *meta_shard(snakemake.input.meta))
    extra = {
        "targets": snakemake.input.get("targets"),
        "n_pins": snakemake.params.get("n_pins"),
        "embeddings": snakemake.input.get("embeddings") or None,
    }
    written = write_shard(
        snakemake.params.schema,
        snakemake.input.index,
        snakemake.input.labels,
        snakemake.input.meta,
        snakemake.input.tar,
        snakemake.output.record,
        compression=snakemake.params.compression,
        label_base=snakemake.params.label_base,
        index_path=snakemake.output.get("index"),
        drop=set(drop),
        **extra,
    )
    # the digest of the bytes as written, for verify_records to compare; sha256sum's
    # format, naming the shard (`cd` to its folder, then `sha256sum -c` checks it)
    named = snakemake.output.record
    with atomic_write(snakemake.output.sha256, "w") as handle:
        handle.write(f"{written['sha256']}  {Path(named).name}\n")
    print(written)
