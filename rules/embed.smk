rule embed_shard:
    input:
        unpack(embed_inputs),
    output:
        f"{RESULTS}/embed/{{split}}/{{shard}}.npy",
    log:
        f"{RESULTS}/logs/embed/{{split}}/{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/embed/{{split}}/{{shard}}.tsv"
    conda:
        "../envs/embed.yaml"
    threads: config["threads"]["embed"]
    params:
        embed=embed_params(),
        upstream=upstream("embed"),
    script:
        "../scripts/embed_shard.py"
