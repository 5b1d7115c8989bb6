"""Rule ravel_shard: string-art targets of one shard's resized images."""

from imgprep.ravel_stage import ravel_shard
from imgprep.rulelog import rule_log

with rule_log(snakemake):
    count = ravel_shard(
        snakemake.input.tar, snakemake.output[0], snakemake.params.ravel, snakemake.threads
    )
    print(f"{count} pin paths")
