# One per dataset: its card, README.md in its folder (results/README.md without
# `datasets:`), from the summary, the label map and the member tables; each format's
# loading snippet comes from its module (imgprep.formats, loading_snippet).
rule dataset_card:
    input:
        unpack(card_inputs),
    output:
        f"{RESULTS}/{{ds}}README.md",
    log:
        f"{RESULTS}/logs/dataset_card/{{ds}}README.log",
    localrule: True
    conda:
        "../envs/records.yaml"
    params:
        name=lambda w: dataset(w).name,
        preset=card_preset,
        config=settings,
        config_sha256=card_config_sha256,
        source=lambda w: card_source(),
        snippets=card_snippets,
    script:
        "../scripts/dataset_card.py"
