"""source.type 'kaggle': Kaggle's imagenet-object-localization-challenge folder, as
downloaded, and its CSVs (labels of the validation images, boxes of both).

train: the synset folders of ILSVRC/Data/CLS-LOC/train, boxes from
LOC_train_solution.csv; validation: the flat val folder, labelled by the first synset
of its LOC_val_solution.csv row (boxes from the same row); test: the flat test folder,
unlabelled. A validation image without a row is listed in ignored.tsv, not guessed.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from stat import S_ISDIR

from imgprep.boxes import RawBoxes, parse_number
from imgprep.errors import ConfigError
from imgprep.files.tables import IndexRow, clean
from imgprep.sourcefile import NOT_AN_IMAGE_EXTENSION, open_source
from imgprep.sources.common import (
    Found,
    check_root_folder,
    entries,
    extensions,
    is_image_name,
    listing,
    only,
    placer,
    single_plan,
    with_boxes,
)
from imgprep.sources.folders import index_tree

KAGGLE_FOLDERS = {"train": "train", "validation": "val", "test": "test"}  # split -> CLS-LOC
SYNSET_MAPPING = "LOC_synset_mapping.txt"


def fill_defaults(config: dict) -> None:
    """``labels.synsets`` defaults to the download's LOC_synset_mapping.txt (the texts)."""
    mapping = Path(config["source"]["root"]) / SYNSET_MAPPING
    if config["labels"]["synsets"] is None and mapping.is_file():
        config["labels"]["synsets"] = str(mapping)


def check(config: dict) -> None:
    """Kaggle's layout fixes the split folders."""
    check_root_folder(config["source"])
    for name, split in config["splits"].items():
        if name not in KAGGLE_FOLDERS:
            raise ConfigError(
                f"config key 'splits.{name}': the kaggle source has splits train, validation "
                "and test"
            )
        only(split, name, (), "the kaggle layout fixes its folders and annotations")


def scan(config: dict, cache: Path) -> Found:
    with listing("source.root"):
        return _scan(config, cache)


def _scan(config: dict, cache: Path) -> Found:
    root, splits, seed = Path(config["source"]["root"]), config["splits"], config["seed"]
    image_extensions = extensions(config)
    with_kaggle_boxes = config["source"]["boxes"]
    data = root / "ILSVRC" / "Data" / "CLS-LOC"
    rows, ignored, classes = [], [], set()
    for split in splits:
        folder = data / KAGGLE_FOLDERS[split]
        if not folder.is_dir():
            raise ConfigError(f"config key 'source.root': no {folder.relative_to(root)} in {root}")
    if "train" in splits:
        plan = single_plan("train")
        rescan = config["source"].get("rescan", False)
        found, skipped, classes = index_tree(
            data / "train", image_extensions, seed, plan, cache, rescan
        )
        solution = root / "LOC_train_solution.csv"
        if with_kaggle_boxes and solution.is_file():
            found = with_boxes(found, read_kaggle_boxes(solution))
        rows.extend(found)
        ignored.extend((f"train/{path}", reason) for path, reason in skipped)
    if "validation" in splits:
        solution = root / "LOC_val_solution.csv"
        if not solution.is_file():
            raise ConfigError(f"config key 'source.root': no LOC_val_solution.csv in {root}")
        labels, boxes = read_kaggle_solution(solution)
        if not with_kaggle_boxes:
            boxes = {}
        found = _index_flat(
            data / "val",
            "validation",
            config,
            image_extensions,
            labels,
            ignored,
            "no row in LOC_val_solution.csv",
        )
        rows.extend(with_boxes(found, boxes))
        classes |= {row.cls for *_, row in found}
    if "test" in splits:
        rows.extend(_index_flat(data / "test", "test", config, image_extensions, None, ignored))
    return Found(rows, ignored, classes, root)


def _index_flat(folder: Path, split: str, config, image_extensions, labels, ignored, why=""):
    """A flat folder of one split; ``labels`` maps file stems to classes (None: unlabelled);
    an image without a label is ignored for the reason ``why``."""
    place, plan = placer(config["seed"]), single_plan(split)
    rows = []
    names = sorted(os.listdir(folder))
    for where, path, stat in entries(str(folder), f"{folder.name}/", ignored, names):
        name = where.rpartition("/")[2]
        stem = name.rpartition(".")[0]
        if S_ISDIR(stat.st_mode):
            ignored.append((where, "folder in a flat split folder, not descended"))
        elif not is_image_name(name, image_extensions):
            ignored.append((where, NOT_AN_IMAGE_EXTENSION))
        elif labels is not None and stem not in labels:
            ignored.append((where, why))
        else:
            cls = labels[stem] if labels is not None else ""
            _, slot, order = place(where, plan)
            row = IndexRow(path, cls, stat.st_size, stat.st_mtime_ns)
            rows.append((split, slot, order, row))
    return rows


# -- Kaggle's CSVs ------------------------------------------------------------------------


def read_kaggle_boxes(csv_path) -> dict[str, RawBoxes]:
    """``LOC_{train,val}_solution.csv`` -> {image id: boxes in the image's real pixels}."""
    return read_kaggle_solution(csv_path)[1]


def read_kaggle_solution(csv_path) -> tuple[dict[str, str], dict[str, RawBoxes]]:
    """``LOC_{train,val}_solution.csv`` -> ({image id: first synset}, {image id: boxes}).

    PredictionString is ``wnid x1 y1 x2 y2`` repeated; the first synset labels the image
    (Kaggle's validation labels) and the boxes' reference is 0 x 0, the real size. Rows
    without boxes give no entry; anything malformed is a ValueError naming file and line.
    """
    synsets: dict[str, str] = {}
    boxes: dict[str, RawBoxes] = {}
    with open_source(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or [cell.strip() for cell in header] != ["ImageId", "PredictionString"]:
            raise ValueError(f"{csv_path}:1: header must be ImageId,PredictionString")
        for row in reader:
            line = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != 2:
                raise ValueError(f"{csv_path}:{line}: expected 2 fields, got {len(row)}")
            image_id, tokens = row[0].strip(), row[1].split()
            if not image_id or clean(image_id) != image_id or " " in image_id:
                raise ValueError(f"{csv_path}:{line}: bad ImageId {row[0]!r}")
            if not tokens:
                continue
            if len(tokens) % 5:
                raise ValueError(
                    f"{csv_path}:{line}: PredictionString is not groups of 'wnid x1 y1 x2 y2'"
                )
            if image_id in boxes:
                raise ValueError(f"{csv_path}:{line}: ImageId {image_id} appears twice")
            try:
                values = [parse_number(t) for i, t in enumerate(tokens) if i % 5]
            except ValueError as error:
                raise ValueError(f"{csv_path}:{line}: {error}") from None
            box_list = tuple(tuple(values[i : i + 4]) for i in range(0, len(values), 4))
            boxes[image_id] = RawBoxes(0, 0, box_list)
            synsets[image_id] = tokens[0]
    return synsets, boxes
