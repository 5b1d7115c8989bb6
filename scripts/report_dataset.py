"""Rule report_dataset: the rejects gallery and table, the ignored files, and the
per-stage throughput (the summary's stages.tsv)."""

from imgprep.atomic import atomic_write
from imgprep.figures.gallery import rejects_report
from imgprep.figures.plots import throughput_report
from imgprep.rulelog import rule_log
from imgprep.sourcefile import ReadLimits

with rule_log(snakemake):
    name = snakemake.params.category
    rejects = rejects_report(
        snakemake.input.rejects,
        snakemake.input.summary,
        list(snakemake.input.tables),
        ReadLimits.from_config(snakemake.params.source),
        snakemake.output.rejects,
        snakemake.output.rejects_table,
        f"{name}: rejected images",
    )
    with (
        open(snakemake.input.ignored, "rb") as source,
        atomic_write(snakemake.output.ignored) as out,
    ):
        out.write(source.read())
    with (
        open(snakemake.input.stages, "rb") as source,
        atomic_write(snakemake.output.throughput_table) as out,
    ):
        out.write(source.read())  # the summary's stages.tsv, shown in the report
    stages = throughput_report(
        snakemake.input.stages, snakemake.output.throughput, f"{name}: throughput per stage"
    )
    print(f"{len(rejects)} rejects; stages {stages}")
