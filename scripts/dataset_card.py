"""Rule dataset_card: README.md in the dataset's folder (imgprep.stages.card)."""

from imgprep.rulelog import rule_log
from imgprep.stages.card import write_card

with rule_log(snakemake):
    write_card(
        snakemake.output[0],
        name=snakemake.params.name,
        preset=snakemake.params.preset,
        summary_json=snakemake.input.summary,
        labels_tsv=snakemake.input.labels,
        tables=snakemake.input.tables,
        rejects_tsv=snakemake.input.rejects,
        config=snakemake.params.config,
        config_hash=snakemake.params.config_sha256,
        source=snakemake.params.source,
        snippets=snakemake.params.snippets,
        duplicates_json=snakemake.input.get("duplicates"),
    )
