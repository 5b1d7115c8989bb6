"""Rule index_table: one table per split, joining shard lists and the label map."""

from imgprep.index import write_split_table
from imgprep.rulelog import rule_log

with rule_log(snakemake):
    table = write_split_table(snakemake.input.shards, snakemake.input.labels, snakemake.output[0])
    print(f"{len(table)} images")
