"""A folder source's shard lists by digest (imgprep.sources.folder_lists): after every kind
of change to the tree the index equals a scan without any cache, byte for byte, and only
the shards a changed image hashes to are rebuilt (none when nothing changed)."""

import shutil
from pathlib import Path

import pytest
from helpers import base_config
from imgprep import index
from imgprep.config import validate_config
from imgprep.files.tables import (
    IGNORED_COLUMNS,
    INDEX_COLUMNS,
    LABEL_COLUMNS,
    table_bytes,
    table_lines,
)
from imgprep.sourcefile import shown
from imgprep.sources import common, folder_lists, folders


def write(path: Path, size: int = 10) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff" * size)
    return path


def grow(root: Path, layout: dict[str, int]) -> None:
    for folder, count in layout.items():
        for i in range(count):
            write(root / folder / f"{Path(folder).name}_{i}.JPEG", 10 + i)


class Builds:
    """What folder_lists rebuilt at each scan: None (every list) or the (split, shard)s."""

    def __init__(self, monkeypatch):
        self.calls = []
        real = folder_lists._Tables.build

        def build(tables, wanted):
            self.calls.append(None if wanted is None else set(wanted))
            return real(tables, wanted)

        monkeypatch.setattr(folder_lists._Tables, "build", build)

    def take(self):
        calls, self.calls = self.calls, []
        return calls


def reference(config) -> dict[str, bytes]:
    """The index files a scan with no cache at all makes (the rows sorted by the index)."""
    found = folders.scan(config, None)
    shards = index._sorted_shards(found, config["splits"], {})
    files = {
        f"{split}/{index.shard_name(i)}.tsv": table_lines(INDEX_COLUMNS, members)
        for split, lists in shards.items()
        for i, members in enumerate(lists)
    }
    labels = index.build_label_map(config, sorted(found.classes))
    files["labels.tsv"] = table_bytes(LABEL_COLUMNS, labels)
    ignored = [(shown(p), shown(r)) for p, r in sorted(found.ignored)]
    files["ignored.tsv"] = table_bytes(IGNORED_COLUMNS, ignored)
    return files


def on_disk(results) -> dict[str, bytes]:
    folder = index.index_dir(results)
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*.tsv"))
        if "cache" not in p.parts
    }


def shard_of(config, split: str, relpath: str) -> tuple[str, int]:
    _, slot, _ = common.placer(config["seed"])(relpath, common.single_plan(split))
    return split, slot % config["splits"][split]["shards"]


@pytest.fixture
def source(tmp_path):
    root = tmp_path / "src"
    grow(root, {"train/n01": 7, "train/n02": 6, "train/n03": 5, "validation/n01": 4})
    write(root / "train" / "n02" / "inner" / "deep.JPEG")
    return root


def configure(root, results, **extra):
    config = base_config(root, results)
    config["splits"] = {"train": {"shards": 8}, "validation": {"shards": 4}}
    config.update(extra)
    return validate_config(config)


def check(config) -> dict:
    result = index.update_index(config)
    assert on_disk(config["results"]) == reference(config)
    return result


def test_each_change_rebuilds_only_its_shards(source, tmp_path, monkeypatch):
    config = configure(source, tmp_path / "results")
    builds = Builds(monkeypatch)
    check(config)
    assert builds.take() == [None]  # cold: every list
    result = check(config)
    assert builds.take() == [] and result.changed == []  # warm: no row built

    write(source / "train" / "n01" / "added.JPEG")
    result = check(config)
    assert builds.take() == [{shard_of(config, "train", "n01/added.JPEG")}]
    _, shard = shard_of(config, "train", "n01/added.JPEG")
    assert result.changed == [f"train/{shard:05d}.tsv"]

    (source / "train" / "n02" / "n02_3.JPEG").unlink()
    check(config)
    assert builds.take() == [{shard_of(config, "train", "n02/n02_3.JPEG")}]

    old, new = source / "validation" / "n01" / "n01_0.JPEG", "n01/renamed.JPEG"
    old.rename(source / "validation" / new)
    check(config)
    expected = {shard_of(config, "validation", "n01/n01_0.JPEG")}
    expected.add(shard_of(config, "validation", new))
    assert builds.take() == [expected]

    write(source / "train" / "n03" / "notes.txt")  # only ignored.tsv changes
    result = check(config)
    assert builds.take() == []
    assert result.changed == ["ignored.tsv"]

    write(source / "train" / "n02" / "inner" / "deeper.JPEG")  # a subfolder changed
    check(config)
    assert builds.take() == [{shard_of(config, "train", "n02/inner/deeper.JPEG")}]

    grow(source, {"train/n04": 1})  # a new class: labels.tsv changes too
    result = check(config)
    assert "labels.tsv" in result.changed
    shutil.rmtree(source / "train" / "n03")
    check(config)
    builds.take()
    result = check(config)
    assert builds.take() == [] and result.changed == []


def test_a_file_rewritten_in_place_is_seen_by_a_rescan_in_its_shard_only(
    source, tmp_path, monkeypatch
):
    config = configure(source, tmp_path / "results")
    check(config)
    builds = Builds(monkeypatch)
    write(source / "train" / "n01" / "n01_2.JPEG", 999)  # same name: its folder is as it was
    rescan = configure(source, tmp_path / "results", source={**config["source"], "rescan": True})
    check(rescan)
    assert builds.take() == [{shard_of(config, "train", "n01/n01_2.JPEG")}]


def test_class_folders_drawn_into_splits(tmp_path, monkeypatch):
    root = tmp_path / "src"
    grow(root, {"n01": 9, "n02": 8, "n03": 7})
    splits = {"train": {"fraction": 0.8, "shards": 4}, "validation": {"fraction": 0.2, "shards": 2}}
    config = validate_config(
        {
            **base_config(root, tmp_path / "r"),
            "source": {"root": str(root), "layout": "class-folders"},
            "splits": splits,
        }
    )
    builds = Builds(monkeypatch)
    check(config)
    check(config)
    assert builds.take() == [None]
    write(root / "n02" / "added.JPEG")
    check(config)
    (calls,) = builds.take()
    assert len(calls) == 1


@pytest.mark.parametrize("damage", ["summary", "index file", "scan cache"])
def test_damaged_caches_and_edited_lists_are_rebuilt(source, tmp_path, damage):
    config = configure(source, tmp_path / "results")
    check(config)
    folder = index.cache_dir(config["results"]) / "folders"
    if damage == "summary":
        for path in folder.glob("*.lists"):
            path.write_bytes(path.read_bytes()[:-5] + b"xxxx\n")
    elif damage == "scan cache":
        for path in folder.glob("*.scan"):
            path.write_bytes(path.read_bytes()[:-3])
    else:
        listed = index.shard_index_path(config["results"], "train", 1)
        listed.write_bytes(listed.read_bytes() + b"edited\n")
    check(config)


def test_other_shard_counts_and_seeds_make_their_own_lists(source, tmp_path):
    config = configure(source, tmp_path / "results")
    check(config)
    check(configure(source, tmp_path / "results", seed=7))
    more = configure(source, tmp_path / "results")
    more["splits"]["train"]["shards"] = 3
    check(more)
    check(config)


def test_box_annotations_take_the_row_path(source, tmp_path):
    config = configure(source, tmp_path / "results")
    assert folders.shard_lists(config, index.cache_dir(config["results"])) is not None
    config["splits"]["train"]["boxes"] = str(tmp_path / "boxes")
    assert folders.shard_lists(config, index.cache_dir(config["results"])) is None
