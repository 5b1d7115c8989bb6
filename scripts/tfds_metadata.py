"""Rules tfds_metadata, tfds_metadata_unlabelled: TFDS metadata beside a schema's shards."""

import json
import os

from imgprep.rulelog import rule_log
from imgprep.tfds_metadata import write_metadata

with rule_log(snakemake):
    with open(snakemake.input.verified) as handle:
        report = json.load(handle)
    written = write_metadata(
        os.path.dirname(snakemake.output.info),
        snakemake.wildcards.schema,
        report,
        snakemake.params.record_paths,
        snakemake.input.labels,
        label_base=snakemake.params.label_base,
        channels=snakemake.params.channels,
        embedding=snakemake.params.embedding,
        lab_size=snakemake.params.lab_size,
    )
    print(written)
