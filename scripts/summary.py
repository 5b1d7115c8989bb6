"""Rule summary: per split images, records, rejects, classes, bytes and shard hashes."""

from imgprep.rulelog import rule_log
from imgprep.stages.summary import write_summary

with rule_log(snakemake):
    summary = write_summary(
        verified=snakemake.input.verified,
        tables=snakemake.input.tables,
        rejects=snakemake.input.rejects,
        ignored=snakemake.input.ignored,
        json_path=snakemake.output.json,
        tsv_path=snakemake.output.tsv,
        rejects_path=snakemake.output.rejects,
        duplicates=snakemake.input.get("duplicates"),
        leaks=snakemake.input.get("leaks"),
    )
    print(summary["totals"])
