"""Rule report_duplicates: the duplicate audit's pairs, counted by kind and splits."""

from imgprep.atomic import atomic_write
from imgprep.figures.plots import duplicate_pairs
from imgprep.rulelog import rule_log

with rule_log(snakemake):
    with open(snakemake.input.pairs, "rb") as source, atomic_write(snakemake.output.pairs) as out:
        out.write(source.read())
    duplicate_pairs(
        snakemake.input.pairs,
        snakemake.output.figure,
        f"{snakemake.params.category}: duplicate pairs",
    )
