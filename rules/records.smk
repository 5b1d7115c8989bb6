rule records_shard:
    input:
        index=f"{RESULTS}/index/{{split}}/{{shard}}.tsv",
        labels=f"{RESULTS}/index/labels.tsv",
        tar=f"{RESULTS}/resized/{{split}}/{{shard}}.tar",
        meta=f"{RESULTS}/resized/{{split}}/{{shard}}.meta.tsv",
    output:
        f"{RESULTS}/records/{{schema}}/{{split}}-{{shard}}-of-{{total}}",
    params:
        compression=config["records"]["compression"],
        label_base=config["labels"]["base"],
    wildcard_constraints:
        total=r"\d{5}",
    threads: config["threads"]["records"]
    log:
        f"{RESULTS}/logs/records/{{schema}}/{{split}}-{{shard}}-of-{{total}}.log",
    conda:
        "../envs/records.yaml"
    script:
        "../scripts/records_shard.py"
