"""Rule embed_shard: CNN embeddings of one shard's resized images."""

from imgprep.embed import EmbedParams, embed_shard
from imgprep.rulelog import rule_log

with rule_log(snakemake):
    count = embed_shard(
        snakemake.input.tar,
        snakemake.output[0],
        EmbedParams.from_config(snakemake.params.embed),
        threads=snakemake.params.tf_threads,
    )
    print(f"{count} embeddings")
