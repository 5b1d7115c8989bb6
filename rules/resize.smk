rule resize_shard:
    input:
        unpack(resize_inputs),
    output:
        tar=f"{RESULTS}/resized/{{split}}/{{shard}}.tar",
        meta=f"{RESULTS}/resized/{{split}}/{{shard}}.meta.tsv",
        rejects=f"{RESULTS}/rejects/{{split}}/{{shard}}.tsv",
    log:
        f"{RESULTS}/logs/resize/{{split}}/{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/resize/{{split}}/{{shard}}.tsv"
    conda:
        "../envs/resize.yaml"
    threads: stage_threads("resize")
    params:
        resize=config["resize"],
        source=source_read_params(),
        upstream=upstream("resize"),
    script:
        "../scripts/resize_shard.py"
