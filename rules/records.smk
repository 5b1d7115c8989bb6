rule records_shard:
    input:
        index=f"{RESULTS}/index/{{split}}/{{shard}}.tsv",
        labels=f"{RESULTS}/index/labels.tsv",
        tar=f"{RESULTS}/resized/{{split}}/{{shard}}.tar",
        meta=f"{RESULTS}/resized/{{split}}/{{shard}}.meta.tsv",
    output:
        f"{RESULTS}/records/{{schema}}/{{split}}-{{shard}}-of-{{total}}",
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
        f"{RESULTS}/records/tangler/{{split}}/tangle_{{number}}-of-{{total}}.tfrecord",
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
