rule records_shard:
    input:
        index=f"{RESULTS}/index/{{split}}/{{shard}}.tsv",
        labels=f"{RESULTS}/index/labels.tsv",
        tar=f"{RESULTS}/resized/{{split}}/{{shard}}.tar",
        meta=f"{RESULTS}/resized/{{split}}/{{shard}}.meta.tsv",
    output:
        f"{RESULTS}/records/{{schema}}/{{split}}-{{shard}}-of-{{total}}",
    log:
        f"{RESULTS}/logs/records/{{schema}}/{{split}}-{{shard}}-of-{{total}}.log",
    wildcard_constraints:
        total=r"\d{5}",
    conda:
        "../envs/records.yaml"
    threads: config["threads"]["records"]
    params:
        compression=config["records"]["compression"],
        label_base=config["labels"]["base"],
    script:
        "../scripts/records_shard.py"
