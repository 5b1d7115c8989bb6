# One records job per shard and schema. The schema names the file (imgprep.records:
# imagenet/dlbs {split}-{i:05d}-of-{n:05d}, tangler {split}/tangle_{i+1:05d}-of-{n:05d}.tfrecord,
# koalarization [val_]lab_images_{i}.tfrecord); record_source maps it back to its shard.
# The `name` constraints keep the TFDS files and idx/ of the same folders out of these rules.
rule records_shard:
    input:
        unpack(record_inputs),
    output:
        **record_index_output(f"{RESULTS}/records/{{schema}}/{{name}}"),
        record=f"{RESULTS}/records/{{schema}}/{{name}}",
        sha256=f"{RESULTS}/checksums/records/{{schema}}/{{name}}.sha256",
    log:
        f"{RESULTS}/logs/records/{{schema}}/{{name}}.log",
    wildcard_constraints:
        schema="imagenet|dlbs",
        name=r"[^/]+-\d{5}-of-\d{5}",
    conda:
        "../envs/records.yaml"
    threads: stage_threads("records")
    params:
        schema=lambda w: w.schema,
        compression=config["records"]["compression"],
        label_base=config["labels"]["base"],
        n_pins=record_n_pins,
        upstream=lambda w: upstream("records", w.schema),
    script:
        "../scripts/records_shard.py"


# Tangler's records carry the ravel targets, one folder per split; Koalarization's the
# embeddings: rules of their own, so that profiles can give them their own resources.
use rule records_shard as records_tangler with:
    output:
        **record_index_output(f"{RESULTS}/records/{{schema}}/{{folder}}/{{name}}"),
        record=f"{RESULTS}/records/{{schema}}/{{folder}}/{{name}}",
        sha256=f"{RESULTS}/checksums/records/{{schema}}/{{folder}}/{{name}}.sha256",
    log:
        f"{RESULTS}/logs/records/{{schema}}/{{folder}}/{{name}}.log",
    wildcard_constraints:
        schema="tangler",
        folder=r"[^/]+",
        name=r"tangle_\d{5}-of-\d{5}\.tfrecord",


use rule records_shard as records_koalarization with:
    wildcard_constraints:
        schema="koalarization",
        name=r"[^/]*lab_images_\d+\.tfrecord",
