# imgprep: image collections -> sharded, training-ready TFRecord datasets.
#
#   snakemake --cores all            build everything for config.yaml
#   snakemake -n                     show what is outstanding
#
# Data flows one way: sources -> index -> [download, URL lists only] -> resize (per shard) -> ravel / embed (per
# shard, for the schemas that need them) -> records (per shard and schema) -> verify
# (per schema) -> summary.


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/index.smk"
include: "rules/download.smk"
include: "rules/resize.smk"
include: "rules/ravel.smk"
include: "rules/embed.smk"
include: "rules/records.smk"
include: "rules/verify.smk"


localrules:
    index_table,
    summary,
    tfds_metadata,
    tfds_metadata_unlabelled,


rule all:
    default_target: True
    input:
        summary_outputs(),
        tfds_metadata_outputs(),
        # the shards are the product: a deleted one is rebuilt, not just re-verified
        [
            record
            for schema in SCHEMAS
            for split in SPLITS
            for record in record_shards(schema, split)
        ],
