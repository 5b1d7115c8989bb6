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
        # None: a setting this schema's features do not use
        **{
            key: getattr(snakemake.params, key)
            for key in ("channels", "embedding", "lab_size")
            if getattr(snakemake.params, key) is not None
        },
    )
    print(written)
