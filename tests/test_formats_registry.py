"""The record-format registry: the config schema lists exactly its formats, an unknown
name fails listing the known ones, and each format's names keep the rules unambiguous."""

import re

import pytest
import yaml
from helpers import REPO, base_config
from imgprep.config import ConfigError, validate_config
from imgprep.errors import ConfigError as RegistryError
from imgprep.formats import FORMATS, get_format
from imgprep.formats.base import RecordFormat
from imgprep.formats.tfrecords import TFRecordFormat

SPLITS = ("train", "validation", "val", "test", "extra_1")


def test_the_config_schema_lists_exactly_the_registered_formats():
    with open(REPO / "schemas" / "config.schema.yaml") as handle:
        schema = yaml.safe_load(handle)
    enum = schema["properties"]["records"]["properties"]["schemas"]["items"]["enum"]
    assert sorted(enum) == sorted(FORMATS)


def test_each_format_is_registered_under_its_own_name():
    for name, spec in FORMATS.items():
        assert isinstance(spec, RecordFormat)
        assert spec.name == name
        assert spec.description
        assert spec.needs <= {"ravel", "embed"}
        assert get_format(name) is spec


def test_an_unknown_format_names_the_key_and_lists_the_known_ones():
    with pytest.raises(RegistryError) as caught:
        get_format("webdatasets")
    message = str(caught.value)
    assert "records.schemas" in message and "'webdatasets'" in message
    assert all(name in message for name in FORMATS)
    assert issubclass(RegistryError, ConfigError)


def test_the_config_rejects_an_unknown_format_by_key(tmp_path):
    (tmp_path / "src" / "train").mkdir(parents=True)
    config = base_config(tmp_path / "src", tmp_path / "results")
    config["records"] = {"schemas": ["imagenet", "nope"]}
    with pytest.raises(ConfigError, match=r"records\.schemas"):
        validate_config(config)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_shard_names_match_the_rules_patterns_and_nothing_else(name):
    """The rules constrain `file` by name_pattern and `metafile` by metadata_pattern: each
    shard must match its own pattern, and no format's shard pattern may match a metadata
    file or an index file of any format (the rules would be ambiguous)."""
    spec = get_format(name)
    total = 3
    for split in SPLITS:
        for index in range(total):
            path = spec.shard_path(split, index, total)
            folder, _, file = path.rpartition("/")
            assert folder in ("", spec.shard_folder(split)) and "/" not in folder
            assert re.fullmatch(spec.name_pattern, file), (path, spec.name_pattern)
            assert spec.shard_filename(split, index, total) == file
    metadata = [meta for other in FORMATS.values() for meta in other.metadata_files(SPLITS, "none")]
    for other in FORMATS.values():
        for meta in metadata:
            assert not re.fullmatch(other.name_pattern, meta), (other.name, meta)
        for meta in spec.metadata_files(SPLITS, "none"):
            assert re.fullmatch(spec.metadata_pattern, meta)
        idx = f"{spec.shard_filename('train', 0, 1)}.idx"
        assert not re.fullmatch(other.name_pattern, idx)
        assert not re.fullmatch(other.metadata_pattern, idx)


def test_index_files_and_metadata_follow_the_compression():
    for spec in FORMATS.values():
        if not isinstance(spec, TFRecordFormat):  # webdataset, parquet: no TFRecords
            continue
        assert spec.has_record_index("none")
        assert not spec.has_record_index("gzip")
        assert spec.metadata_files(["train"], "none")
        assert spec.metadata_files(["train"], "zlib") == []


def test_what_formats_need_upstream():
    assert get_format("tangler").needs == {"ravel"}
    assert get_format("koalarization").needs == {"embed"}
    assert not get_format("imagenet").needs and not get_format("dlbs").needs
