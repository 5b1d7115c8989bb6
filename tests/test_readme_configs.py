"""The README's configuration examples work as documented with `--configfile`."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO
from imgprep.config import ConfigError, uses_default_config, validate_config
from snakemake.utils import update_config

README = (REPO / "README.md").read_text()
BLOCKS = re.findall(r"^```yaml\n(.*?)^```", README, re.S | re.M)


def layered(block: dict) -> dict:
    """What the Snakefile hands to validation for `--configfile block.yaml`: Snakemake
    merges its `configfile:` (config.yaml, when the Snakefile reads it) under the file."""
    if not uses_default_config(block):
        return copy.deepcopy(block)
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    update_config(config, block)
    return config


def relocate(value, data: Path):
    """/data/... paths of the examples, moved under the test's folder."""
    if isinstance(value, dict):
        return {key: relocate(item, data) for key, item in value.items()}
    if isinstance(value, str) and value.startswith("/data/"):
        return str(data / value.removeprefix("/data/"))
    return value


def validate_making_paths(config: dict, data: Path) -> dict:
    """Validate; every file or folder the validation misses is created (inside ``data``)
    and validation tried again, so what is left is what the config itself says."""
    for _ in range(20):
        try:
            return validate_config(config)
        except ConfigError as error:
            match = re.search(r"(?:(file|folder) )?not found: (\S+)", str(error))
            if not match or not Path(match[2]).is_relative_to(data):
                raise
            path = Path(match[2])
            if match[1] == "folder" or (match[1] is None and not path.suffix):
                path.mkdir(parents=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
    raise AssertionError("validation kept asking for files")


def test_the_readme_has_its_config_examples():
    sources = {yaml.safe_load(block).get("source", {}).get("type", "folders") for block in BLOCKS}
    assert {"tars", "kaggle", "urls", "manifest", "folders"} <= sources


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.split("\n", 1)[0][:40])
def test_each_readme_config_validates_as_a_configfile(block, tmp_path):
    data = tmp_path / "data"
    config = relocate(yaml.safe_load(block), data)
    validated = validate_making_paths(layered(config), data)
    # what the example says is what runs; nothing of the sample's config leaks in
    assert validated["source"] == {**validated["source"], **config["source"]}
    for split, keys in config.get("splits", {}).items():
        assert validated["splits"][split] == keys
    assert set(validated["splits"]) == set(config.get("splits", validated["splits"]))
    if "records" not in config:
        assert validated["records"]["schemas"] == ["imagenet"]  # the schema default
    assert "sample" not in str(validated["labels"]["synsets"])


def test_a_configfile_without_source_overrides_keys_of_config_yaml():
    validated = validate_config(layered({"resize": {"mode": "pad", "size": 299}}))
    default = validate_config(yaml.safe_load((REPO / "config.yaml").read_text()))
    assert validated["resize"] == {**default["resize"], "mode": "pad", "size": 299}
    assert validated["splits"] == default["splits"]
    assert validated["source"] == default["source"]


def test_the_readme_url_config_plans_a_run_with_configfile(tmp_path):
    """Run from a clone (config.yaml beside the Snakefile's working directory), as the
    README says: `snakemake -n --configfile urls.yaml`."""
    block = next(b for b in BLOCKS if "type: urls" in b)
    work = tmp_path / "w"
    work.mkdir()
    shutil.copy2(REPO / "config.yaml", work / "config.yaml")
    urls = work / "fall11_urls.txt"
    urls.write_text(
        "".join(f"n0144076{i % 2}_{i}\thttp://127.0.0.1:9/{i}.jpg\n" for i in range(200))
    )
    config = yaml.safe_load(block)
    config["source"]["urls"] = str(urls)
    config["splits"]["train"]["shards"] = 4
    config["splits"]["validation"]["shards"] = 1
    (work / "urls.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
        + ["-n", "--quiet", "rules", "--configfile", "urls.yaml"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", text.split("Job stats:", 1)[1], re.M))
    assert jobs["download_shard"] == "5" and jobs["records_shard"] == "5", jobs  # imagenet only
    assert not (work / "results" / "index" / "train" / "00004.tsv").exists()
