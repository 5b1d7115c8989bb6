"""Rule duplicates_audit: the dataset's duplicate pairs, their counts and its leaks."""

from imgprep.duplicates import write_audit
from imgprep.rulelog import rule_log

with rule_log(snakemake):
    counts = write_audit(
        snakemake.params.splits,
        snakemake.input.tables,
        snakemake.input.meta,
        snakemake.params.settings,
        pairs_tsv=snakemake.output.pairs,
        counts_json=snakemake.output.counts,
        leaks_tsv=snakemake.output.leaks,
    )
    print(counts["pairs"], "leaks", counts["leaks"]["images"])
