"""Rules records_shard, records_tangler, records_koalarization: one TFRecord shard."""

from imgprep.records import write_shard
from imgprep.rulelog import rule_log

with rule_log(snakemake):
    extra = {
        "targets": snakemake.input.get("targets"),
        "n_pins": snakemake.params.get("n_pins"),
        "embeddings": snakemake.input.get("embeddings") or None,
    }
    if snakemake.params.get("lab_size"):
        extra["lab_size"] = snakemake.params.lab_size
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
        **extra,
    )
    print(written)
