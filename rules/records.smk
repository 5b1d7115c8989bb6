# One records job per shard and format. The format names the file (imgprep.formats:
# imagenet/dlbs {split}-{i:05d}-of-{n:05d}, tangler {split}/tangle_{i+1:05d}-of-{n:05d}.tfrecord,
# koalarization [val_]lab_images_{i}.tfrecord): `folder` is its folder ("" or "<name>/"),
# `file` its name, both constrained by the registry's patterns (which keep the metadata
# files and idx/ of the same folders out of this rule); record_source maps it back to its
# shard. A format that writes index files gets `index`: idx/<file>.idx in the shard's
# folder (DALI's <file>.idx), a subfolder so that no consumer's glob over the shards (TPU
# train-*, slim %s-*, DLBS %s-*-of-*, Koalarization lab_images_*, Tangler's per-split
# folder) picks it up.
rule records_shard:
    input:
        unpack(record_inputs),
    output:
        **(
            {"index": f"{RESULTS}/{{ds}}records/{{schema}}/{{folder}}idx/{{file}}.idx"}
            if INDEXED_RECORDS
            else {}
        ),
        record=f"{RESULTS}/{{ds}}records/{{schema}}/{{folder}}{{file}}",
        sha256=f"{RESULTS}/{{ds}}checksums/records/{{schema}}/{{folder}}{{file}}.sha256",
    log:
        f"{RESULTS}/logs/records/{{ds}}{{schema}}/{{folder}}{{file}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/records/{{ds}}records/{{schema}}/{{folder}}{{file}}.tsv"
    wildcard_constraints:
        ds=INDEXED_RECORDS or UNINDEXED_RECORDS,
        folder=r"(?:[^/]+/)?",
        file=RECORD_FILE,
    conda:
        "../envs/records.yaml"
    threads: stage_threads("records")
    resources:
        mem_mb=record_mem_mb,
    params:
        schema=lambda w: w.schema,
        compression=compression,
        label_base=label_base,
        n_pins=record_n_pins,
        upstream=upstream("records"),
    script:
        "../scripts/records_shard.py"


# Shards that get no index file (a format without one, or a compressed TFRecord), beside
# shards that do: the same rule without the `index` output; `ds` says which (its
# constraint looks ahead at records/<schema>/, see dataset_schemas).
if INDEXED_RECORDS and UNINDEXED_RECORDS:

    use rule records_shard as records_shard_unindexed with:
        output:
            record=f"{RESULTS}/{{ds}}records/{{schema}}/{{folder}}{{file}}",
            sha256=f"{RESULTS}/{{ds}}checksums/records/{{schema}}/{{folder}}{{file}}.sha256",
        wildcard_constraints:
            ds=UNINDEXED_RECORDS,
            folder=r"(?:[^/]+/)?",
            file=RECORD_FILE,
