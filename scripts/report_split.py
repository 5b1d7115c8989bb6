"""Rule report_split: a split's class histogram, source size and aspect histograms and
shard sizes."""

from imgprep.figures.plots import split_figures
from imgprep.rulelog import rule_log

with rule_log(snakemake):
    split = snakemake.wildcards.split
    split_figures(
        table=snakemake.input.table,
        metas=snakemake.input.meta,
        summary=snakemake.input.summary,
        split=split,
        out=dict(snakemake.output.items()),
        title=f"{snakemake.params.category} {split}",
    )
