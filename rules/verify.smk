rule verify_split:
    input:
        records=split_records,
        indexes=split_shard_indexes,
        rejects=split_rejects,
        labels=f"{RESULTS}/index/labels.tsv",
    output:
        f"{RESULTS}/verify/{{schema}}/{{split}}.json",
    log:
        f"{RESULTS}/logs/verify/{{schema}}/{{split}}.log",
    conda:
        "../envs/verify.yaml"
    threads: config["threads"]["verify"]
    params:
        compression=config["records"]["compression"],
        label_base=config["labels"]["base"],
    script:
        "../scripts/verify_split.py"


rule summary:
    input:
        verified=expand(f"{RESULTS}/verify/{{schema}}/{{split}}.json", schema=SCHEMAS, split=SPLITS),
        tables=expand(f"{RESULTS}/index/{{split}}.tsv", split=SPLITS),
        rejects=[f"{RESULTS}/rejects/{s}/{i}.tsv" for s in SPLITS for i in shard_ids(s)],
        ignored=f"{RESULTS}/index/ignored.tsv",
    output:
        json=f"{RESULTS}/summary.json",
        tsv=f"{RESULTS}/summary.tsv",
        rejects=f"{RESULTS}/rejects.tsv",
    log:
        f"{RESULTS}/logs/summary.log",
    conda:
        "../envs/index.yaml"
    script:
        "../scripts/summary.py"
