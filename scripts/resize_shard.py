"""Rule resize_shard: resize one shard's images into a tar of JPEGs."""

from imgprep.imaging import ResizeParams
from imgprep.index import read_shard_index
from imgprep.resize import resize_shard
from imgprep.rulelog import rule_log

with rule_log(snakemake):
    members = read_shard_index(snakemake.input.index)
    resized, rejected = resize_shard(
        list(members["path"]),
        ResizeParams.from_config(snakemake.params.resize),
        snakemake.output.tar,
        snakemake.output.meta,
        snakemake.output.rejects,
        threads=snakemake.threads,
    )
    print(f"{len(members)} images: {resized} resized, {rejected} rejected")
