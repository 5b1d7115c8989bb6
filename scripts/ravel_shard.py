"""Rule ravel_shard: string-art targets of one shard's resized images."""

from imgprep.rulelog import rule_log
from imgprep.stages.ravel import RavelParams, ravel_shard

with rule_log(snakemake):
    count = ravel_shard(
        snakemake.input.tar,
        snakemake.output[0],
        RavelParams.from_config(snakemake.params.ravel),
        snakemake.threads,
        # a config value, not a param: where it runs changes no byte, so re-runs no job
        device=snakemake.config["device"]["ravel"],
    )
    print(f"{count} pin paths")
