"""The label table (index/labels.tsv) read back, keyed by class (synset) name."""

from __future__ import annotations

from dataclasses import dataclass

from imgprep.files.tables import LABEL_COLUMNS, read_tsv

__all__ = ["LabelMap", "read_labels"]


@dataclass(frozen=True)
class LabelMap:
    """The label table keyed by class (synset) name."""

    index: dict[str, int]
    text: dict[str, str]

    def __len__(self) -> int:
        return len(self.index)


def read_labels(path, label_base: int = 0) -> LabelMap:
    """Read the labels TSV and check it was made for this ``label_base``.

    The table's ``label`` column is ``index + label_base``; a table made with
    another base would silently shift every label, so that is an error.
    """
    frame = read_tsv(path, LABEL_COLUMNS, ints=("index", "label"))
    for column in ("synset", "index"):
        duplicated = frame[column][frame[column].duplicated()].tolist()
        if duplicated:
            raise ValueError(f"{path}: duplicate {column} value(s): {duplicated[:5]}")
    wrong = frame[frame["label"] != frame["index"] + label_base]
    if len(wrong):
        row = wrong.iloc[0]
        raise ValueError(
            f"{path}: label column does not equal index + label_base ({label_base}), "
            f"e.g. {row['synset']}: index {row['index']}, label {row['label']}"
        )
    synsets = frame["synset"].tolist()
    return LabelMap(
        index=dict(zip(synsets, frame["index"].tolist(), strict=True)),
        text=dict(zip(synsets, frame["text"].tolist(), strict=True)),
    )
