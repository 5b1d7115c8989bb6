"""Rule download_shard: fetch one shard's URLs (resumable through the download cache)."""

import sys

from imgprep.index import read_shard_index
from imgprep.rulelog import rule_log
from imgprep.stages.download import DownloadParams, download_shard

with rule_log(snakemake):
    members = read_shard_index(snakemake.input.index)
    ok, failed = download_shard(
        list(members["path"]),
        snakemake.params.cache,
        snakemake.output.tar,
        snakemake.output.status,
        DownloadParams.from_config(snakemake.params.download),
        log=sys.stderr,
    )
    print(f"{len(members)} URLs: {ok} downloaded, {failed} failed")
