"""Rule summary: per split images, records, rejects, classes, bytes and shard hashes; and
the per-stage totals (stages.tsv) from the jobs' benchmark files."""

from imgprep.rulelog import rule_log
from imgprep.stages.stage_totals import stage_totals, write_stage_totals
from imgprep.stages.summary import stage_images, write_summary

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
    benchmarks = snakemake.params.benchmarks
    totals = stage_totals(benchmarks, stage_images(summary, benchmarks))
    write_stage_totals(totals, snakemake.output.stages)
    print(summary["totals"])
