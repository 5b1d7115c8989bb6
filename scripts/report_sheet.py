"""Rule report_sheet: a contact sheet of a split's sampled records, decoded back by their
format, and the table of what it shows."""

from imgprep.atomic import atomic_write
from imgprep.figures.sheets import contact_sheet
from imgprep.files.tables import table_bytes
from imgprep.formats import get_format
from imgprep.rulelog import rule_log

SAMPLE_COLUMNS = ("shard", "record", "filename", "label", "text", "boxes", "panels")

with rule_log(snakemake):
    schema, split = snakemake.wildcards.schema, snakemake.wildcards.split
    spec = get_format(schema)
    previews, rows = [], []
    for shard, path in zip(snakemake.params.shards, snakemake.input.records, strict=True):
        for preview in spec.previews(
            path, snakemake.params.compression, snakemake.params.per_shard
        ):
            previews.append(preview)
            panels = ",".join(sorted(preview.panels))
            rows.append(
                (
                    shard,
                    path,
                    preview.filename,
                    preview.label,
                    preview.text,
                    len(preview.boxes),
                    panels,
                )
            )
    title = f"{snakemake.params.category} {split}: {schema}, {len(previews)} records"
    contact_sheet(previews, snakemake.output.sheet, title)
    with atomic_write(snakemake.output.sample, "wb") as handle:
        handle.write(table_bytes(SAMPLE_COLUMNS, rows))
    print(f"{len(previews)} records from shards {', '.join(snakemake.params.shards)}")
