rule resize_shard:
    input:
        index=f"{RESULTS}/index/{{split}}/{{shard}}.tsv",
    output:
        tar=f"{RESULTS}/resized/{{split}}/{{shard}}.tar",
        meta=f"{RESULTS}/resized/{{split}}/{{shard}}.meta.tsv",
        rejects=f"{RESULTS}/rejects/{{split}}/{{shard}}.tsv",
    params:
        resize=config["resize"],
    threads: config["threads"]["resize"]
    log:
        f"{RESULTS}/logs/resize/{{split}}/{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/resize/{{split}}/{{shard}}.tsv"
    conda:
        "../envs/resize.yaml"
    script:
        "../scripts/resize_shard.py"
