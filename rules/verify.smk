rule verify_records:
    input:
        unpack(verify_inputs),
    output:
        f"{RESULTS}/{{ds}}verify/{{schema}}.json",
    log:
        f"{RESULTS}/logs/verify/{{ds}}{{schema}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/verify/{{ds}}{{schema}}.tsv"
    conda:
        "../envs/verify.yaml"
    threads: stage_threads("verify")
    params:
        compression=compression,
        label_base=label_base,
        cache=f"{RESULTS}/{{ds}}verify/{{schema}}.cache",
        upstream=upstream("records"),
        full=verify_full(),
        reports=lambda w: summary_outputs(w.ds),
    script:
        "../scripts/verify_records.py"


# One per dataset: its splits, records, rejects and the source's ignored files; and the
# per-stage totals (jobs, time, img/s, memory) from the benchmark files (stages.tsv).
rule summary:
    input:
        unpack(summary_inputs),
    output:
        json=f"{RESULTS}/{{ds}}summary.json",
        tsv=f"{RESULTS}/{{ds}}summary.tsv",
        rejects=f"{RESULTS}/{{ds}}rejects.tsv",
        stages=f"{RESULTS}/{{ds}}stages.tsv",
    log:
        f"{RESULTS}/logs/summary/{{ds}}summary.log",
    conda:
        "../envs/index.yaml"
    params:
        benchmarks=lambda w: stage_benchmarks(w.ds),
    script:
        "../scripts/summary.py"


# Each format's metadata files (TFRecord formats: TFDS' dataset_info.json, features.json
# and class names, so that tfds.builder_from_directory loads the folder), one job per
# file, from the verification report and the labels; `metafile` constrained by the
# registry's patterns.
rule records_metadata:
    input:
        verified=rules.verify_records.output[0],
        labels=lambda w: dataset_labels(w.ds),
    output:
        f"{RESULTS}/{{ds}}records/{{schema}}/{{metafile}}",
    log:
        f"{RESULTS}/logs/records_metadata/{{ds}}{{schema}}/{{metafile}}.log",
    wildcard_constraints:
        metafile=METADATA_FILE,
    conda:
        "../envs/records.yaml"
    params:
        record_paths=record_paths,
        label_base=label_base,
        # only what the format's metadata depends on: a change re-runs just those files
        settings=lambda w: FORMATS[w.schema].metadata_settings(settings(w)),
    script:
        "../scripts/records_metadata.py"
