rule verify_records:
    input:
        records=lambda w: [r for split in SPLITS for r in record_shards(w.schema, split)],
        sha256=lambda w: [
            record_checksum(r) for split in SPLITS for r in record_shards(w.schema, split)
        ],
        record_indexes=lambda w: record_indexes(w.schema),
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


# TFDS metadata (dataset_info.json, features.json, class names) beside each schema's
# shards, from the verification report: tfds.builder_from_directory loads the folder.
rule tfds_metadata:
    input:
        verified=f"{RESULTS}/verify/{{schema}}.json",
        labels=LABELS_TSV,
    output:
        info=f"{RESULTS}/records/{{schema}}/dataset_info.json",
        features=f"{RESULTS}/records/{{schema}}/features.json",
        class_names=f"{RESULTS}/records/{{schema}}/{TFDS_LABELS_FILE}",
    log:
        f"{RESULTS}/logs/tfds_metadata/{{schema}}.log",
    wildcard_constraints:
        schema="imagenet|dlbs",
    conda:
        "../envs/records.yaml"
    params:
        record_paths=lambda w: tfds_record_paths(w.schema),
        label_base=config["labels"]["base"],
        # only what the schema's features depend on: a change re-runs just those rules
        channels=lambda w: tfds_metadata_setting(w.schema, "channels"),
        embedding=lambda w: tfds_metadata_setting(w.schema, "embedding"),
        lab_size=lambda w: tfds_metadata_setting(w.schema, "lab_size"),
    script:
        "../scripts/tfds_metadata.py"


# Tangler and Koalarization records carry no class label: no class names file.
use rule tfds_metadata as tfds_metadata_unlabelled with:
    output:
        info=f"{RESULTS}/records/{{schema}}/dataset_info.json",
        features=f"{RESULTS}/records/{{schema}}/features.json",
    log:
        f"{RESULTS}/logs/tfds_metadata/{{schema}}.log",
    wildcard_constraints:
        schema="tangler|koalarization",
