"""Stage metadata: one metadata file of a format's folder (TFDS' dataset_info.json, a
shard index, a README), written from the verification report and the label table, so
that no shard is read again. The format (imgprep.formats) says which files and what
they hold."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

from imgprep.atomic import atomic_write
from imgprep.formats import get_format
from imgprep.formats.base import MetadataInputs

__all__ = ["write_metadata_file"]


def write_metadata_file(
    path,
    schema: str,
    report_json,
    record_paths: Mapping[str, Sequence[str]],
    labels_tsv,
    label_base: int,
    settings: Mapping | None = None,
) -> str:
    """Write metadata file ``path`` (its name one of the format's metadata_files) of
    format ``schema``, atomically; ``record_paths``: per split, the shard paths relative
    to the format's folder in shard order; ``settings``: the format's
    metadata_settings. Returns the path."""
    with open(report_json) as handle:
        report = json.load(handle)
    inputs = MetadataInputs(report, record_paths, str(labels_tsv), label_base, settings or {})
    text = get_format(schema).metadata(os.path.basename(path), inputs)
    with atomic_write(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
    return str(path)
