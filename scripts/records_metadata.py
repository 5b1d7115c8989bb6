"""Rule records_metadata: one metadata file beside a format's shards (TFDS metadata...)."""

from imgprep.rulelog import rule_log
from imgprep.stages.metadata import write_metadata_file

with rule_log(snakemake):
    written = write_metadata_file(
        snakemake.output[0],
        snakemake.wildcards.schema,
        snakemake.input.verified,
        snakemake.params.record_paths,
        snakemake.input.labels,
        label_base=snakemake.params.label_base,
        settings=snakemake.params.settings,
    )
    print(written)
