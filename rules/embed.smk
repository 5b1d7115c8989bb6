rule embed_shard:
    input:
        unpack(embed_weights),
        tar=resized_for("embed"),
    output:
        npy=f"{RESULTS}/embed/{{key}}{{split}}/{{shard}}.npy",
    log:
        f"{RESULTS}/logs/embed/{{key}}{{split}}/{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/embed/{{key}}{{split}}/{{shard}}.tsv"
    wildcard_constraints:
        key=key_constraint("embed"),
    conda:
        "../envs/embed.yaml"
    threads: stage_threads("embed")
    params:
        embed=embed_params,
        # TensorFlow's op pools: the float sums of a layer are split by their size, so
        # the embeddings follow threads.embed, never the --cores Snakemake lowers it to
        tf_threads=config["threads"]["embed"],
        upstream=upstream("embed"),
    script:
        "../scripts/embed_shard.py"
