# URL lists only (source.type urls): fetch one source shard's images before resizing them;
# every dataset's resize jobs read these (one download for all datasets).
rule download_shard:
    input:
        index=lambda w: source_shard_index(w.split, w.shard),
    output:
        tar=f"{RESULTS}/downloads/{{split}}/{{shard}}.tar",
        status=f"{RESULTS}/downloads/{{split}}/{{shard}}.tsv",
    log:
        f"{RESULTS}/logs/download/{{split}}/{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/download/{{split}}/{{shard}}.tsv"
    conda:
        "../envs/download.yaml"
    threads: 1
    resources:
        connections=config["download"]["connections"],
    params:
        download=config["download"],
        cache=f"{RESULTS}/downloads/cache",
    script:
        "../scripts/download_shard.py"
