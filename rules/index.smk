# The dataset's member table per split (results/<dataset>/index/<split>.tsv): where each
# image is, its label and text, its shard and place; what a paper cites.
rule index_table:
    input:
        shards=split_shard_indexes,
        labels=lambda w: dataset_labels(w.ds),
    output:
        f"{RESULTS}/{{ds}}index/{{split}}.tsv",
    log:
        f"{RESULTS}/logs/index_table/{{ds}}{{split}}.log",
    conda:
        "../envs/index.yaml"
    script:
        "../scripts/index_table.py"
