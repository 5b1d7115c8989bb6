"""Each stage's params digest covers its own settings and every upstream stage's."""

import copy

import pytest
import yaml
from helpers import REPO
from imgprep.config import validate_config
from imgprep.upstream import upstream_digest


@pytest.fixture(scope="module")
def config():
    with open(REPO / "config.yaml") as handle:
        return validate_config(yaml.safe_load(handle))


def digests(config):
    stages = [("resize", None), ("ravel", None), ("embed", None)]
    stages += [("records", schema) for schema in ("imagenet", "dlbs", "tangler", "koalarization")]
    return {f"{stage}/{schema}": upstream_digest(config, stage, schema) for stage, schema in stages}


def changed_by(config, section, key, value):
    edited = copy.deepcopy(config)
    edited[section][key] = value
    before, after = digests(config), digests(edited)
    return {name for name in before if before[name] != after[name]}


ALL_RECORDS = {"records/imagenet", "records/dlbs", "records/tangler", "records/koalarization"}


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("resize", "size", 299, {"resize/None", "ravel/None", "embed/None", *ALL_RECORDS}),
        ("ravel", "pins", 128, {"ravel/None", "records/tangler"}),
        ("embed", "model", "Xception", {"embed/None", "records/koalarization"}),
        ("embed", "lab_size", 64, {"records/koalarization"}),
        ("records", "compression", "gzip", ALL_RECORDS),
        ("labels", "base", 0, ALL_RECORDS),
        ("embed", "in_records", True, {"records/imagenet", "records/dlbs"}),
    ],
)
def test_a_setting_changes_its_stage_and_everything_downstream_only(
    config, section, key, value, expected
):
    assert changed_by(config, section, key, value) == expected


def test_embeddings_in_records_make_them_depend_on_the_model(config):
    with_embeddings = copy.deepcopy(config)
    with_embeddings["embed"]["in_records"] = True
    assert "records/imagenet" in changed_by(with_embeddings, "embed", "model", "Xception")


def test_download_settings_count_for_url_lists_only(config):
    assert changed_by(config, "download", "max_bytes", 10) == set()
    urls = copy.deepcopy(config)
    urls["source"] = {**urls["source"], "type": "urls"}
    assert changed_by(urls, "download", "max_bytes", 10) == set(digests(config))


def test_the_digest_is_stable(config):
    assert digests(config) == digests(copy.deepcopy(config))
    assert len(upstream_digest(config, "resize")) == 16
