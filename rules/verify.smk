rule verify_records:
    input:
        records=lambda w: [r for split in SPLITS for r in record_shards(w.schema, split)],
        sha256=lambda w: [
            record_checksum(r) for split in SPLITS for r in record_shards(w.schema, split)
        ],
        indexes=[shard_index(split, shard) for split in SPLITS for shard in shard_ids(split)],
        rejects=all_rejects(),
        labels=LABELS_TSV,
    output:
        f"{RESULTS}/verify/{{schema}}.json",
    log:
        f"{RESULTS}/logs/verify/{{schema}}.log",
    conda:
        "../envs/verify.yaml"
    threads: stage_threads("verify")
    params:
        splits=[split for split in SPLITS for shard in shard_ids(split)],
        compression=config["records"]["compression"],
        label_base=config["labels"]["base"],
        cache=f"{RESULTS}/verify/{{schema}}.cache",
        upstream=lambda w: upstream("records", w.schema),
        full=verify_full(),
        reports=summary_outputs(),
    script:
        "../scripts/verify_records.py"


rule summary:
    input:
        verified=expand(f"{RESULTS}/verify/{{schema}}.json", schema=SCHEMAS),
        tables=expand(f"{RESULTS}/index/{{split}}.tsv", split=SPLITS),
        rejects=all_rejects(),
        ignored=IGNORED_TSV,
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
