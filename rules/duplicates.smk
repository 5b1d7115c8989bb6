# One per dataset: exact and near duplicates among its stored images, within and across
# splits (imgprep.duplicates), from the hashes resize wrote into each shard's meta.tsv.
# With duplicates.leaks: drop, the train splits' records wait for its leaks table.
rule duplicates_audit:
    input:
        unpack(duplicates_inputs),
    output:
        pairs=f"{RESULTS}/{{ds}}duplicates.tsv",
        counts=f"{RESULTS}/{{ds}}duplicates.json",
        leaks=f"{RESULTS}/{{ds}}duplicates.leaks.tsv",
    log:
        f"{RESULTS}/logs/duplicates/{{ds}}duplicates.log",
    # one job per dataset reading every meta table, as index_table and summary do
    localrule: True
    conda:
        "../envs/duplicates.yaml"
    params:
        splits=lambda w: list(dataset(w).splits),
        settings=lambda w: settings(w)["duplicates"],
    script:
        "../scripts/duplicates_audit.py"
