import os

import pytest
from helpers import base_config, jpeg_bytes, make_tree
from imgprep.config import ConfigError, validate_config
from imgprep.files.tables import read_tsv
from imgprep.index import (
    labels_path,
    read_shard_index,
    scan,
    shard_index_path,
    update_index,
    write_split_table,
)

LAYOUT = {
    "train/n02": 20,
    "train/n01": 25,
    "train/n03": 15,
    "validation/n01": 4,
    "validation/n02": 5,
}


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "src"
    make_tree(root, LAYOUT)
    return root


def configure(tree, tmp_path, **overrides):
    return validate_config(base_config(tree, tmp_path / "results", **overrides))


def all_members(config, split):
    n = config["splits"][split]["shards"]
    return [read_shard_index(shard_index_path(config["results"], split, s)) for s in range(n)]


def test_every_image_lands_in_exactly_one_shard(tree, tmp_path):
    config = configure(tree, tmp_path)
    update_index(config)
    train = all_members(config, "train")
    paths = [p for table in train for p in table["path"]]
    assert len(paths) == len(set(paths)) == 60
    assert sum(len(t) for t in all_members(config, "validation")) == 9
    assert all(len(t) > 0 for t in train), "60 images over 4 shards: none empty"
    for table in train:
        for path, cls in zip(table["path"], table["class"], strict=True):
            assert f"/{cls}/" in path
            assert os.path.getsize(path) == table.set_index("path").loc[path, "size"]


def test_order_inside_a_shard_is_shuffled_and_deterministic(tree, tmp_path):
    config = configure(tree, tmp_path)
    first = scan(config).shards["train"]
    second = scan(config).shards["train"]
    assert first == second
    result = scan(config)
    orders = [result.paths("train", shard) for shard in range(4)]
    assert any(paths != sorted(paths) for paths in orders)
    reseeded = scan({**config, "seed": 7}).shards["train"]
    assert reseeded != first


def test_labels_are_the_sorted_union_with_base(tree, tmp_path):
    config = configure(tree, tmp_path, labels={"base": 1})
    update_index(config)
    labels = read_tsv(labels_path(config["results"]))
    assert list(labels["synset"]) == ["n01", "n02", "n03"]
    assert list(labels["label"]) == ["1", "2", "3"]
    assert list(labels["index"]) == ["0", "1", "2"]


def test_labels_file_order_and_synset_texts(tree, tmp_path):
    (tmp_path / "labels.txt").write_text("n03\nn02\nn01\nn04\n")
    (tmp_path / "synsets.txt").write_text("n01 tench, Tinca tinca\nn03 great white shark\n")
    config = configure(
        tree,
        tmp_path,
        labels={"file": str(tmp_path / "labels.txt"), "synsets": str(tmp_path / "synsets.txt")},
    )
    result = scan(config)
    assert result.labels == [
        (0, 0, "n03", "great white shark"),
        (1, 1, "n02", ""),
        (2, 2, "n01", "tench, Tinca tinca"),
        (3, 3, "n04", ""),
    ]


def test_class_missing_from_labels_file_fails_naming_it(tree, tmp_path):
    (tmp_path / "labels.txt").write_text("n01\nn02\n")
    config = configure(tree, tmp_path, labels={"file": str(tmp_path / "labels.txt")})
    with pytest.raises(ConfigError, match="labels.file.*n03"):
        scan(config)


def test_extensions_any_case_and_ignored_files(tree, tmp_path):
    (tree / "train" / "n01" / "upper.JpG").write_bytes(b"x")
    (tree / "train" / "n01" / "notes.txt").write_text("hello")
    (tree / "train" / "n01" / ".DS_Store").write_bytes(b"")
    (tree / "train" / "stray.JPEG").write_bytes(b"x")
    (tree / "train" / "n01" / "sub").mkdir()
    (tree / "train" / "n01" / "sub" / "nested.png").write_bytes(b"x")
    config = configure(tree, tmp_path)
    result = scan(config)
    paths = {path for shard in range(4) for path in result.paths("train", shard)}
    assert str(tree / "train" / "n01" / "upper.JpG") in paths
    assert str(tree / "train" / "n01" / "sub" / "nested.png") in paths
    assert dict(result.ignored) == {
        "train/n01/.DS_Store": "hidden file",
        "train/n01/notes.txt": "not an image extension",
        "train/stray.JPEG": "not inside a class folder",
    }


def test_a_changed_image_rewrites_only_its_shard(tree, tmp_path):
    config = configure(tree, tmp_path)
    update_index(config)
    files = sorted((tmp_path / "results" / "index").rglob("*.tsv"))
    before = {f: f.stat().st_mtime_ns for f in files}
    assert update_index(config).changed == []
    assert {f: f.stat().st_mtime_ns for f in files} == before

    target = tree / "train" / "n02" / "n02_3.JPEG"
    os.utime(target, ns=(1, 1))  # in place: seen by a rescan (sources.dircache)
    changed = update_index({**config, "source": {**config["source"], "rescan": True}}).changed
    assert len(changed) == 1 and changed[0].startswith("train/")
    (tree / "train" / "n03" / "new.JPEG").write_bytes(b"new")
    assert len(update_index(config).changed) == 1
    target.unlink()
    assert len(update_index(config).changed) == 1


def test_fewer_shards_remove_stale_lists(tree, tmp_path):
    config = configure(tree, tmp_path)
    update_index(config)
    config["splits"]["train"]["shards"] = 2
    update_index(config)
    names = sorted(p.name for p in (tmp_path / "results" / "index" / "train").iterdir())
    assert names == ["00000.tsv", "00001.tsv"]


def test_empty_split_fails_naming_it(tmp_path):
    root = tmp_path / "src"
    make_tree(root, {"train/n01": 3})
    (root / "validation").mkdir()
    config = configure(root, tmp_path)
    with pytest.raises(ConfigError, match="splits.validation.*no images"):
        scan(config)


def test_missing_split_folder_names_the_key(tmp_path):
    root = tmp_path / "src"
    make_tree(root, {"train/n01": 3})
    config = configure(root, tmp_path)
    with pytest.raises(ConfigError, match="'splits.validation.dir'"):
        scan(config)


def test_class_folders_split_by_fraction(tmp_path):
    root = tmp_path / "src"
    make_tree(root, {"n01": 150, "n02": 150})
    splits = {"train": {"shards": 3, "fraction": 0.8}, "validation": {"shards": 1, "fraction": 0.2}}
    config = validate_config(
        base_config(
            root,
            tmp_path / "results",
            splits=splits,
            source={"root": str(root), "layout": "class-folders"},
        )
    )
    counts = scan(config).counts()
    assert counts["train"] + counts["validation"] == 300
    assert 30 <= counts["validation"] <= 90
    assert scan(config).counts() == counts


def test_split_table_joins_labels(tree, tmp_path):
    config = configure(tree, tmp_path, labels={"base": 1})
    update_index(config)
    shards = [shard_index_path(config["results"], "train", s) for s in range(4)]
    table = write_split_table(shards, labels_path(config["results"]), tmp_path / "train.tsv")
    assert len(table) == 60
    row = table[table["class"] == "n02"].iloc[0]
    assert row["label"] == "2"
    assert row["filename"] == row["path"].rsplit("/", 1)[1]
    assert read_tsv(tmp_path / "train.tsv").shape == table.shape


def write_manifest(path, rows, header="path,label,split"):
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def manifest_config(tmp_path, manifest, splits=None):
    return validate_config(
        {
            "results": str(tmp_path / "results"),
            "source": {"type": "manifest", "manifest": str(manifest)},
            "splits": splits or {"train": {"shards": 2}, "validation": {"shards": 1}},
        }
    )


def test_manifest_with_splits_indexes_every_row(tree, tmp_path):
    rows = [f"train/n01/n01_{i}.JPEG,n01,train" for i in range(10)]
    rows += [f"validation/n02/n02_{i}.JPEG,n02,validation" for i in range(3)]
    rows += ["train/n01/gone.JPEG,n03,train", "train/n01/n01_0.JPEG,n01,train", ",n01,train"]
    config = manifest_config(tmp_path, write_manifest(tree / "list.csv", rows))
    result = update_index(config)
    assert result.counts() == {"train": 11, "validation": 3}
    assert [name for _, _, name, _ in result.labels] == ["n01", "n02", "n03"]
    assert dict(result.ignored) == {
        "list.csv:16": "duplicate of row 2",
        "list.csv:17": "row without path or label",
    }
    members = [read_shard_index(shard_index_path(config["results"], "train", s)) for s in (0, 1)]
    gone = [t[t["path"].str.endswith("gone.JPEG")] for t in members]
    row = next(g for g in gone if len(g)).iloc[0]
    assert row["size"] == -1 and row["class"] == "n03", "a missing file is indexed, to be rejected"
    assert all(p.startswith(str(tree)) for t in members for p in t["path"])


def test_manifest_without_splits_draws_them_by_fraction(tree, tmp_path):
    rows = [f"train/n01/n01_{i}.JPEG\tn01" for i in range(25)]
    rows += [f"train/n02/n02_{i}.JPEG\tn02" for i in range(20)]
    manifest = write_manifest(tree / "list.tsv", rows, header="path\tlabel")
    with pytest.raises(ConfigError, match="'splits.train.fraction' is required"):
        scan(manifest_config(tmp_path, manifest))
    splits = {
        "train": {"shards": 2, "fraction": 0.75},
        "validation": {"shards": 1, "fraction": 0.25},
    }
    counts = scan(manifest_config(tmp_path, manifest, splits)).counts()
    assert counts["train"] + counts["validation"] == 45 and counts["validation"] > 0


def test_manifest_errors_name_the_key(tree, tmp_path):
    bad_split = write_manifest(tree / "a.csv", ["train/n01/n01_0.JPEG,n01,test"])
    with pytest.raises(ConfigError, match="'source.manifest'.*split 'test'"):
        scan(manifest_config(tmp_path, bad_split))
    no_label = write_manifest(tree / "b.csv", ["train/n01/n01_0.JPEG"], header="path")
    with pytest.raises(ConfigError, match="'source.manifest'.*columns path and label"):
        scan(manifest_config(tmp_path, no_label))
    with pytest.raises(ConfigError, match="'source.manifest': file not found"):
        manifest_config(tmp_path, tree / "nope.csv")


def make_kaggle(root):
    """A miniature of Kaggle's imagenet-object-localization-challenge download."""
    data = root / "ILSVRC" / "Data" / "CLS-LOC"
    make_tree(data, {"train/n01": 6, "train/n02": 4})
    (data / "val").mkdir()
    for i in range(1, 6):
        (data / "val" / f"ILSVRC2012_val_{i:08d}.JPEG").write_bytes(jpeg_bytes(seed=100 + i))
    (root / "LOC_synset_mapping.txt").write_text("n01 tench, Tinca tinca\nn02 goldfish\n")
    (root / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\n"
        + "".join(
            f"ILSVRC2012_val_{i:08d},n0{1 + i % 2} 1 2 30 40 n0{1 + i % 2} 5 6 7 8\n"
            for i in range(1, 5)
        )
    )
    return root


def test_kaggle_layout_labels_validation_from_the_solution_csv(tmp_path):
    root = make_kaggle(tmp_path / "kaggle")
    config = validate_config(
        {
            "results": str(tmp_path / "results"),
            "source": {"type": "kaggle", "root": str(root)},
            "splits": {"train": {"shards": 2}, "validation": {"shards": 1}},
        }
    )
    assert config["labels"]["synsets"] == str(root / "LOC_synset_mapping.txt")
    result = update_index(config)
    assert result.counts() == {"train": 10, "validation": 4}
    assert result.labels == [(0, 0, "n01", "tench, Tinca tinca"), (1, 1, "n02", "goldfish")]
    assert dict(result.ignored) == {
        "val/ILSVRC2012_val_00000005.JPEG": "no row in LOC_val_solution.csv"
    }
    val = read_shard_index(shard_index_path(config["results"], "validation", 0))
    classes = dict(zip(val["path"].map(lambda p: p[-13:-5]), val["class"], strict=True))
    assert classes == {"00000001": "n02", "00000002": "n01", "00000003": "n02", "00000004": "n01"}


def test_kaggle_layout_has_fixed_splits(tmp_path):
    root = make_kaggle(tmp_path / "kaggle")
    with pytest.raises(ConfigError, match="'splits.holdout'"):
        validate_config(
            {"source": {"type": "kaggle", "root": str(root)}, "splits": {"holdout": {"shards": 1}}}
        )
