"""Rule resize_shard: resize one shard's images into a tar of JPEGs."""

from imgprep.index import read_shard_index
from imgprep.kernels.resize import ResizeParams
from imgprep.rulelog import rule_log
from imgprep.sourcefile import ReadLimits
from imgprep.stages.resize import resize_shard

with rule_log(snakemake):
    members = read_shard_index(snakemake.input.index)
    downloads = None
    if snakemake.input.get("downloads"):
        from imgprep.stages.download import read_downloads

        downloads = read_downloads(snakemake.input.downloads, snakemake.input.download_status)
    resized, rejected = resize_shard(
        list(zip(members["path"], members["offset"], members["size"], strict=True)),
        ResizeParams.from_config(snakemake.params.resize),
        snakemake.output.tar,
        snakemake.output.meta,
        snakemake.output.rejects,
        threads=snakemake.threads,
        downloads=downloads,
        limits=ReadLimits.from_config(snakemake.params.source),
    )
    print(f"{len(members)} images: {resized} resized, {rejected} rejected")
