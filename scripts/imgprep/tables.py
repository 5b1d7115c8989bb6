"""The workflow's TSV tables, read back exactly as they were written."""

from __future__ import annotations

import csv
from collections.abc import Sequence

import pandas as pd


def read_tsv(path, required: Sequence[str] = (), ints: Sequence[str] = ()) -> pd.DataFrame:
    """Read one of the workflow's headed TSVs, exactly as written.

    Everything is a string (a class named "NA" and empty text survive), nothing is
    quoted (the writers join fields with tabs), and undecodable path bytes come
    back as surrogate escapes so they round-trip into the records.
    """
    frame = pd.read_csv(
        path,
        sep="\t",
        dtype=str,
        keep_default_na=False,
        na_filter=False,
        quoting=csv.QUOTE_NONE,
        encoding="utf-8",
        encoding_errors="surrogateescape",
    )
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
    for column in (c for c in ints if c in frame.columns):  # absent optional: skip
        try:
            frame[column] = frame[column].astype("int64")
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: column {column!r} is not all integers: {exc}") from exc
    return frame
