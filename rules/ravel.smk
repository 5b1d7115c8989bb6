rule ravel_shard:
    input:
        tar=rules.resize_shard.output.tar,
    output:
        npy=f"{RESULTS}/ravel/{{split}}/{{shard}}.npy",
    log:
        f"{RESULTS}/logs/ravel/{{split}}/{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/ravel/{{split}}/{{shard}}.tsv"
    conda:
        "../envs/ravel.yaml"
    threads: stage_threads("ravel")
    params:
        ravel=config["ravel"],
        upstream=upstream("ravel"),
    script:
        "../scripts/ravel_shard.py"
