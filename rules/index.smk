rule index_table:
    input:
        shards=split_shard_indexes,
        labels=LABELS_TSV,
    output:
        f"{RESULTS}/index/{{split}}.tsv",
    log:
        f"{RESULTS}/logs/index_table/{{split}}.log",
    conda:
        "../envs/index.yaml"
    script:
        "../scripts/index_table.py"
