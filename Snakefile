# imgprep: image collections -> sharded, training-ready TFRecord datasets.
#
#   snakemake --cores all            build everything for config.yaml
#   snakemake -n                     show what is outstanding
#
# Data flows one way: sources -> index -> [download, URL lists only] -> resize (per shard) -> ravel / embed (per
# shard, for the schemas that need them) -> records (per shard and schema) -> verify
# (per schema) -> summary.


import sys
from pathlib import Path

from snakemake.utils import min_version

# workflow.output_settings, executor and storage plugins: Snakemake 9 (9.27 is tested)
min_version("9.0")

# the library, installed or not: cluster and Batch jobs run from a copy of this folder
sys.path.insert(0, str(Path(workflow.basedir) / "scripts"))

from imgprep.config import uses_default_config

# config.yaml configures the embedded sample. A --configfile that names its own `source`
# is a whole configuration (schema defaults fill in the rest): Snakemake would otherwise
# merge config.yaml's sample keys (splits.*.dir, labels.synsets, ...) into it. A file
# without `source` (pad299.yaml) overrides keys of config.yaml.
if uses_default_config(config):

    configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/index.smk"
include: "rules/download.smk"
include: "rules/resize.smk"
include: "rules/ravel.smk"
include: "rules/embed.smk"
include: "rules/records.smk"
include: "rules/verify.smk"


# the result, last: Snakemake's own last line is only "N of N steps (100%) done"
onsuccess:
    print(success_report(RESULTS, RUN_STARTED))


onerror:
    print(failure_report(RESULTS, log), file=sys.stderr)


localrules:
    index_table,
    summary,
    records_metadata,


rule all:
    default_target: True
    input:
        rules.summary.output,
        records_metadata_outputs(),
        # the shards are the product: a deleted one is rebuilt, not just re-verified
        [
            record
            for schema in SCHEMAS
            for split in SPLITS
            for record in record_shards(schema, split)
        ],
