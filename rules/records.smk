# One records job per shard and schema. The schema names the file (imgprep.records:
# imagenet/dlbs {split}-{i:05d}-of-{n:05d}, tangler {split}/tangle_{i+1:05d}-of-{n:05d}.tfrecord,
# koalarization [val_]lab_images_{i}.tfrecord); record_source maps it back to its shard.
rule records_shard:
    input:
        unpack(record_inputs),
    output:
        f"{RESULTS}/records/{{schema}}/{{name}}",
        sha256=f"{RESULTS}/checksums/records/{{schema}}/{{name}}.sha256",
    log:
        f"{RESULTS}/logs/records/{{schema}}/{{name}}.log",
    wildcard_constraints:
        schema="imagenet|dlbs",
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


# Tangler's records carry the ravel targets, Koalarization's the embeddings: rules of
# their own, so that profiles can give them their own resources.
use rule records_shard as records_tangler with:
    wildcard_constraints:
        schema="tangler",


use rule records_shard as records_koalarization with:
    wildcard_constraints:
        schema="koalarization",
