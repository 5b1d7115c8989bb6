"""Rule embed_shard: CNN embeddings of one shard's resized images."""

from imgprep.rulelog import rule_log
from imgprep.stages.embed import EmbedParams, embed_shard

with rule_log(snakemake):
    count = embed_shard(
        snakemake.input.tar,
        snakemake.output[0],
        EmbedParams.from_settings(snakemake.params.embed),
        threads=snakemake.params.tf_threads,
        # decoding runs beside the network on the job's other threads
        decode_threads=max(1, snakemake.threads - 1),
    )
    print(f"{count} embeddings")
