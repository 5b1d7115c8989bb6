# One shard of one or more datasets that resize alike (wildcard key: "" without
# `datasets:`, else a digest of the resize settings and member lists, see stage_key): its
# images at the dataset's size, colorspace and JPEG settings.
rule resize_shard:
    input:
        unpack(resize_inputs),
    output:
        tar=f"{RESULTS}/resized/{{key}}{{split}}/{{shard}}.tar",
        meta=f"{RESULTS}/resized/{{key}}{{split}}/{{shard}}.meta.tsv",
        rejects=f"{RESULTS}/rejects/{{key}}{{split}}/{{shard}}.tsv",
    log:
        f"{RESULTS}/logs/resize/{{key}}{{split}}/{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/resize/{{key}}{{split}}/{{shard}}.tsv"
    wildcard_constraints:
        key=key_constraint("resize"),
    conda:
        "../envs/resize.yaml"
    threads: stage_threads("resize")
    params:
        resize=stage_settings("resize", "resize"),
        source=source_read_params(),
        upstream=upstream("resize"),
    script:
        "../scripts/resize_shard.py"
