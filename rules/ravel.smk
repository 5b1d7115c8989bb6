rule ravel_shard:
    input:
        tar=resized_for("ravel"),
    output:
        npy=f"{RESULTS}/ravel/{{key}}{{split}}/{{shard}}.npy",
    log:
        f"{RESULTS}/logs/ravel/{{key}}{{split}}/{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/ravel/{{key}}{{split}}/{{shard}}.tsv"
    wildcard_constraints:
        key=key_constraint("ravel"),
    conda:
        "../envs/ravel.yaml"
    threads: stage_threads("ravel")
    params:
        ravel=stage_settings("ravel", "ravel"),
        upstream=upstream("ravel"),
    script:
        "../scripts/ravel_shard.py"
