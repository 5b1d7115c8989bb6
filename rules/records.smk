rule records_shard:
    input:
        index=f"{RESULTS}/index/{{split}}/{{shard}}.tsv",
        labels=f"{RESULTS}/index/labels.tsv",
        tar=f"{RESULTS}/resized/{{split}}/{{shard}}.tar",
        meta=f"{RESULTS}/resized/{{split}}/{{shard}}.meta.tsv",
        embeddings=shard_embeddings,
    output:
        **record_index_output(f"{RESULTS}/records/{{schema}}/{{split}}-{{shard}}-of-{{total}}"),
        record=f"{RESULTS}/records/{{schema}}/{{split}}-{{shard}}-of-{{total}}",
    log:
        f"{RESULTS}/logs/records/{{schema}}/{{split}}-{{shard}}-of-{{total}}.log",
    wildcard_constraints:
        schema="imagenet|dlbs",
        total=r"\d{5}",
    conda:
        "../envs/records.yaml"
    threads: config["threads"]["records"]
    params:
        schema=lambda w: w.schema,
        compression=config["records"]["compression"],
        label_base=config["labels"]["base"],
    script:
        "../scripts/records_shard.py"


# Tangler's files are numbered from 1, one folder per split, and carry the ravel targets.
use rule records_shard as records_tangler with:
    input:
        index=lambda w: shard_index(w.split, tangler_shard(w)),
        labels=f"{RESULTS}/index/labels.tsv",
        tar=lambda w: f"{RESULTS}/resized/{w.split}/{tangler_shard(w)}.tar",
        meta=lambda w: f"{RESULTS}/resized/{w.split}/{tangler_shard(w)}.meta.tsv",
        targets=lambda w: f"{RESULTS}/ravel/{w.split}/{tangler_shard(w)}.npy",
    output:
        **record_index_output(
            f"{RESULTS}/records/tangler/{{split}}/tangle_{{number}}-of-{{total}}.tfrecord"
        ),
        record=f"{RESULTS}/records/tangler/{{split}}/tangle_{{number}}-of-{{total}}.tfrecord",
    log:
        f"{RESULTS}/logs/records/tangler/{{split}}/tangle_{{number}}-of-{{total}}.log",
    wildcard_constraints:
        number=r"\d{5}",
        total=r"\d{5}",
    params:
        schema="tangler",
        compression=config["records"]["compression"],
        label_base=config["labels"]["base"],
        n_pins=config["ravel"]["pins"],


# Deep Koalarization's files: one folder, validation shards prefixed val_.
use rule records_shard as records_koalarization with:
    input:
        index=lambda w: shard_index(*koalarization_shard(w)),
        labels=f"{RESULTS}/index/labels.tsv",
        tar=lambda w: "{}/resized/{}/{}.tar".format(RESULTS, *koalarization_shard(w)),
        meta=lambda w: "{}/resized/{}/{}.meta.tsv".format(RESULTS, *koalarization_shard(w)),
        embeddings=lambda w: "{}/embed/{}/{}.npy".format(RESULTS, *koalarization_shard(w)),
    output:
        **record_index_output(f"{RESULTS}/records/koalarization/{{name}}.tfrecord"),
        record=f"{RESULTS}/records/koalarization/{{name}}.tfrecord",
    log:
        f"{RESULTS}/logs/records/koalarization/{{name}}.log",
    wildcard_constraints:
        name=r"(\w+_)?lab_images_\d+",
    params:
        schema="koalarization",
        compression=config["records"]["compression"],
        label_base=config["labels"]["base"],
        lab_size=config["embed"]["lab_size"],
