rule verify_records:
    input:
        unpack(verify_inputs),
    output:
        f"{RESULTS}/verify/{{schema}}.json",
    log:
        f"{RESULTS}/logs/verify/{{schema}}.log",
    conda:
        "../envs/verify.yaml"
    threads: stage_threads("verify")
    params:
        compression=COMPRESSION,
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


# Each format's metadata files (TFRecord formats: TFDS' dataset_info.json, features.json
# and class names, so that tfds.builder_from_directory loads the folder), one job per
# file, from the verification report and the labels; `metafile` constrained by the
# registry's patterns.
rule records_metadata:
    input:
        verified=rules.verify_records.output[0],
        labels=LABELS_TSV,
    output:
        f"{RESULTS}/records/{{schema}}/{{metafile}}",
    log:
        f"{RESULTS}/logs/records_metadata/{{schema}}/{{metafile}}.log",
    wildcard_constraints:
        metafile=METADATA_FILE,
    conda:
        "../envs/records.yaml"
    params:
        record_paths=lambda w: record_paths(w.schema),
        label_base=config["labels"]["base"],
        # only what the format's metadata depends on: a change re-runs just those files
        settings=lambda w: FORMATS[w.schema].metadata_settings(config),
    script:
        "../scripts/records_metadata.py"
