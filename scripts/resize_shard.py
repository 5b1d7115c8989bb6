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
        from imgprep.stages.download import downloads_for

        downloads = downloads_for(
            list(members["path"]),
            zip(
                snakemake.input.downloads,
                snakemake.input.download_status,
                snakemake.input.download_index,
                strict=True,
            ),
        )
    resized, rejected = resize_shard(
        list(
            zip(
                members["path"],
                members["offset"],
                members["size"],
                members["mtime_ns"],
                strict=True,
            )
        ),
        ResizeParams.from_config(snakemake.params.resize),
        snakemake.output.tar,
        snakemake.output.meta,
        snakemake.output.rejects,
        threads=snakemake.threads,
        downloads=downloads,
        limits=ReadLimits.from_config(snakemake.params.source),
    )
    print(f"{len(members)} images: {resized} resized, {rejected} rejected")
