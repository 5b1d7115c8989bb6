# The figures of `snakemake --report report.html` (Snakemake's own report): per dataset
# and split, contact sheets of records decoded back from the shards, the class, source
# size and aspect histograms and the shard sizes; per dataset the rejects gallery, the
# ignored list and the per-stage throughput (the summary's stages.tsv, from the rules'
# benchmark files). Category:
# the dataset ("imgprep" without `datasets:`); subcategory: the split, or "all splits".
# One label, "figure", unique within a subcategory: the report's table has a row each.
# Local rules, like summary: small reads of what the build made, no cluster job worth it.


# One per dataset, split and schema: report.per_shard records from the start of
# report.shards evenly spaced shards (report_sample_shards), as the format reads them.
rule report_sheet:
    input:
        unpack(report_sheet_inputs),
    output:
        sheet=report(
            f"{RESULTS}/{{ds}}report/{{split}}/sheet_{{schema}}.png",
            caption="../report/sheet.rst",
            category=report_category,
            subcategory="{split}",
            labels={"figure": "contact sheet: {schema}"},
        ),
        sample=report(
            f"{RESULTS}/{{ds}}report/{{split}}/sheet_{{schema}}.tsv",
            caption="../report/sheet_table.rst",
            category=report_category,
            subcategory="{split}",
            labels={"figure": "contact sheet: {schema} (records shown)"},
        ),
    log:
        f"{RESULTS}/logs/report/{{ds}}{{split}}/sheet_{{schema}}.log",
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        shards=lambda w: report_sample_shards(w.ds, w.split),
        per_shard=lambda w: settings(w)["report"]["per_shard"],
        compression=compression,
        category=report_category,
    script:
        "../scripts/report_sheet.py"


# One per dataset and split: what the split holds (member table), how big its sources
# were (resize metadata) and its shards (summary).
rule report_split:
    input:
        unpack(report_split_inputs),
    output:
        classes=report(
            f"{RESULTS}/{{ds}}report/{{split}}/classes.png",
            caption="../report/classes.rst",
            category=report_category,
            subcategory="{split}",
            labels={"figure": "class histogram"},
        ),
        source_size=report(
            f"{RESULTS}/{{ds}}report/{{split}}/source_size.png",
            caption="../report/source_size.rst",
            category=report_category,
            subcategory="{split}",
            labels={"figure": "source sizes"},
        ),
        source_aspect=report(
            f"{RESULTS}/{{ds}}report/{{split}}/source_aspect.png",
            caption="../report/source_aspect.rst",
            category=report_category,
            subcategory="{split}",
            labels={"figure": "source aspect ratios"},
        ),
        shards=report(
            f"{RESULTS}/{{ds}}report/{{split}}/shards.png",
            caption="../report/shards.rst",
            category=report_category,
            subcategory="{split}",
            labels={"figure": "shard sizes"},
        ),
    log:
        f"{RESULTS}/logs/report/{{ds}}{{split}}/split.log",
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        category=report_category,
    script:
        "../scripts/report_split.py"


# One per dataset: the rejects (with thumbnails of what still decodes), the source's
# ignored files, and each stage's totals (the summary's stages.tsv).
rule report_dataset:
    input:
        unpack(report_dataset_inputs),
    output:
        rejects=report(
            f"{RESULTS}/{{ds}}report/rejects.png",
            caption="../report/rejects.rst",
            category=report_category,
            subcategory="all splits",
            labels={"figure": "rejects gallery"},
        ),
        rejects_table=report(
            f"{RESULTS}/{{ds}}report/rejects.tsv",
            caption="../report/rejects_table.rst",
            category=report_category,
            subcategory="all splits",
            labels={"figure": "rejects (table)"},
        ),
        ignored=report(
            f"{RESULTS}/{{ds}}report/ignored.tsv",
            caption="../report/ignored.rst",
            category=report_category,
            subcategory="all splits",
            labels={"figure": "ignored files (table)"},
        ),
        throughput=report(
            f"{RESULTS}/{{ds}}report/throughput.png",
            caption="../report/throughput.rst",
            category=report_category,
            subcategory="all splits",
            labels={"figure": "throughput per stage"},
        ),
        throughput_table=report(
            f"{RESULTS}/{{ds}}report/throughput.tsv",
            caption="../report/throughput_table.rst",
            category=report_category,
            subcategory="all splits",
            labels={"figure": "throughput per stage (table)"},
        ),
    log:
        f"{RESULTS}/logs/report/{{ds}}dataset.log",
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        source=source_read_params(),
        category=report_category,
    script:
        "../scripts/report_dataset.py"


# The duplicate audit's pairs and counts (rules/duplicates.smk).


rule report_duplicates:
    input:
        pairs=f"{RESULTS}/{{ds}}duplicates.tsv",
        counts=f"{RESULTS}/{{ds}}duplicates.json",
    output:
        figure=report(
            f"{RESULTS}/{{ds}}report/duplicates.png",
            caption="../report/duplicates.rst",
            category=report_category,
            subcategory="all splits",
            labels={"figure": "duplicates"},
        ),
        pairs=report(
            f"{RESULTS}/{{ds}}report/duplicates.tsv",
            caption="../report/duplicates_table.rst",
            category=report_category,
            subcategory="all splits",
            labels={"figure": "duplicate pairs (table)"},
        ),
    log:
        f"{RESULTS}/logs/report/{{ds}}duplicates.log",
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        category=report_category,
    script:
        "../scripts/report_duplicates.py"
