"""The schema is the one source of defaults: what the README's configuration table and
config.yaml say about them must agree with schemas/config.schema.yaml."""

from __future__ import annotations

import re

import pytest
import yaml
from helpers import REPO

SCHEMA = yaml.safe_load((REPO / "schemas" / "config.schema.yaml").read_text())
README = (REPO / "README.md").read_text()
CONFIG_TEXT = (REPO / "config.yaml").read_text()
NO_DEFAULT = object()
# defaults the README describes in words, computed where they are used, not in the schema
COMPUTED = {"splits.<name>.dir": "the split's name"}
UNITS = {"MB": 10**6, "MiB": 2**20}


def schema_node(key: str) -> dict | None:
    node = SCHEMA
    for part in key.split("."):
        if part == "<name>":
            node = node.get("additionalProperties")
        else:
            node = node.get("properties", {}).get(part)
        if not isinstance(node, dict):
            return None
    return node


def schema_default(key: str):
    node = schema_node(key)
    assert node is not None, f"{key}: not a key of the schema"
    return node.get("default", NO_DEFAULT)


def readme_table() -> list[tuple[str, str]]:
    """(key, documented default) of each row of the README's configuration table; a row
    of several keys (`ravel.pins` / `lines`, 256 / 6000) gives one pair per key."""
    section = README[README.index("\n## Configuration") :]
    section = section[: section.index("\n## ", 1)]
    rows = []
    for keys, default in re.findall(r"^\| (`[^|]+) \| ([^|]+) \| ", section, re.M):
        names = [name.strip("` ") for name in keys.split(" / ")]
        parent = names[0].rpartition(".")[0]
        full = [names[0]] + [f"{parent}.{name}" for name in names[1:]]
        values = default.split(" / ") if len(full) > 1 else [default]
        assert len(values) == len(full), f"README row {keys}: {len(values)} defaults"
        rows.extend(zip(full, (v.strip() for v in values), strict=True))
    return rows


def documented_value(text: str):
    """The value a README default cell states: `yaml`, a number with a unit or a remark in
    parentheses, bare words (a list), or — for none."""
    if text == "—":
        return NO_DEFAULT
    text = re.sub(r" \(.*\)$", "", text)
    if match := re.fullmatch(r"([\d.]+) (MB|MiB)", text):
        return round(float(match[1]) * UNITS[match[2]])
    if text.startswith("`") and text.endswith("`"):
        return yaml.safe_load(text.strip("`"))
    if re.fullmatch(r"[a-z]+( [a-z]+)+", text):
        return text.split()
    return yaml.safe_load(text)


def test_the_readme_table_lists_every_key_once():
    keys = [key for key, _ in readme_table()]
    assert len(keys) > 50 and len(keys) == len(set(keys))
    for key in keys:
        assert schema_node(key) is not None, f"README documents {key}, which the schema lacks"


@pytest.mark.parametrize("key, text", readme_table())
def test_each_readme_default_is_the_schemas(key, text):
    default = schema_default(key)
    if key in COMPUTED:
        assert text == COMPUTED[key] and default is NO_DEFAULT
    elif key == "splits":
        shards = dict(re.findall(r"(\w+): (\d+)", text))
        assert {name: {"shards": int(n)} for name, n in shards.items()} == default
    elif key == "download.user_agent":  # long: the README shows its start
        assert text.endswith(" …") and default.startswith(text.removesuffix(" …"))
    elif default is NO_DEFAULT:
        assert text == "—", f"README gives {key} a default ({text}); the schema has none"
    elif isinstance(default, str):  # shown verbatim (YAML would read `4:2:0` as a number)
        assert text == f"`{default}`", f"README: {key} {text}; schema: {default!r}"
    else:
        assert documented_value(text) == default, f"README: {key} {text}; schema: {default!r}"


def test_the_schema_has_no_default_the_readme_does_not_state():
    documented = {key for key, _ in readme_table()}

    def defaults(node, prefix):
        for name, sub in node.get("properties", {}).items():
            key = f"{prefix}{name}"
            if "default" in sub and "properties" not in sub:
                yield key
            yield from defaults(sub, f"{key}.")

    assert sorted(set(defaults(SCHEMA, "")) - documented) == []


def leaves(config: dict, prefix=""):
    for name, value in config.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict) and key not in ("splits", "datasets"):
            yield from leaves(value, f"{key}.")
        else:
            yield key, value


def test_config_yaml_differs_from_the_schema_only_where_it_says():
    said = re.search(r"holds this line to it\): (.*?)\.\n", CONFIG_TEXT, re.S)[1]
    said = {key.strip("# \n") for key in said.replace("\n#", " ").split(",")}
    config = yaml.safe_load(CONFIG_TEXT)
    differing = {key for key, value in leaves(config) if schema_default(key) != value}
    assert differing == said
