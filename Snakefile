# imgprep: image collections -> sharded, training-ready TFRecord datasets.
#
#   snakemake --cores all            build every dataset of config.yaml
#   snakemake <dataset>              build one of them
#   snakemake -n                     show what is outstanding
#
# Data flows one way: sources -> index (one scan; each dataset's member lists planned from
# it) -> [download, URL lists only, per source shard] -> per dataset: resize (per shard) ->
# ravel / embed (per shard, for the schemas that need them) -> records (per shard and
# schema) -> verify (per schema) -> summary.


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


# `snakemake --report report.html`: this page, then each dataset's figures (rules/report.smk)
report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/index.smk"
include: "rules/download.smk"
include: "rules/resize.smk"
include: "rules/ravel.smk"
include: "rules/embed.smk"
include: "rules/records.smk"
include: "rules/verify.smk"
include: "rules/duplicates.smk"
include: "rules/report.smk"
include: "rules/card.smk"


# the result, last: Snakemake's own last line is only "N of N steps (100%) done"
onsuccess:
    print(success_report([f"{RESULTS}/{ds}" for ds in DATASETS], RUN_STARTED))


onerror:
    print(failure_report(RESULTS, log), file=sys.stderr)


localrules:
    index_table,
    summary,
    records_metadata,


rule all:
    default_target: True
    input:
        [path for ds in DATASETS for path in dataset_outputs(ds)],


# `snakemake <name>` builds one dataset (its summary, records and metadata files)
for _folder, _dataset in DATASETS.items():
    if _folder:

        rule:
            name:
                _dataset.name
            input:
                dataset_outputs(_folder),
            localrule: True
