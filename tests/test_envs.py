"""Each rule's conda environment provides what its script imports (conda itself is
unreachable here, so the environments are checked statically)."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO

# import name -> the conda (or pip) package that provides it
PACKAGES = {
    "PIL": "pillow",
    "numpy": "numpy",
    "pandas": "pandas",
    "simplejpeg": "simplejpeg",
    "google_crc32c": "google-crc32c",
    "tensorflow": "tensorflow-cpu",
    "yaml": "pyyaml",
    "jsonschema": "jsonschema",
    "numba": "numba",
    "keras": "keras",
    "boto3": "boto3",
    "defusedxml": "defusedxml",
    "matplotlib": "matplotlib",
}
RULE = re.compile(r"^rule (\w+):(.*?)(?=^rule |\Z)", re.S | re.M)


def rules() -> list[tuple[str, str, str]]:
    found = []
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for name, body in RULE.findall(smk.read_text()):
            script = re.search(r'script:\s*"\.\./([^"]+)"', body)
            conda = re.search(r'conda:\s*"\.\./([^"]+)"', body)
            if script:
                assert conda, f"rule {name} has a script but no conda environment"
                found.append((name, script.group(1), conda.group(1)))
    return found


# An import a module makes for one rule's job alone (format modules own writing and
# reading their records): ``import tensorflow as tf  # env: only verify_records ...``.
ONLY_FOR = re.compile(r"#\s*env: only ([\w, ]+?)(?:\s+(?:reads|loads|needs)\b|$)")


def imports(path: Path, seen: set[Path], rule: str | None = None) -> set[str]:
    """Top-level modules a file imports, following imports of the imgprep package; an
    import marked ``# env: only <rule>`` counts for that rule alone."""
    if path in seen:
        return set()
    seen.add(path)
    modules = set()
    lines = path.read_text().splitlines()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            only = ONLY_FOR.search(lines[node.lineno - 1])
            if only and rule not in {name.strip() for name in only.group(1).split(",")}:
                continue
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module.split(".")[0] == "imgprep":  # `from imgprep import sources`
                names += [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            top = name.split(".")[0]
            if top == "imgprep":
                module = REPO / "scripts" / Path(*name.split("."))
                target = module / "__init__.py" if module.is_dir() else module.with_suffix(".py")
                if target.is_file():  # else a name imported from a module, not a module
                    modules |= imports(target, seen, rule)
            else:
                modules.add(top)
    return modules


def env_packages(path: Path) -> set[str]:
    spec = yaml.safe_load(path.read_text())
    names = set()
    for dep in spec["dependencies"]:
        if isinstance(dep, dict):
            names |= {re.split(r"[=<>]", d)[0] for d in dep.get("pip", [])}
        else:
            names.add(re.split(r"[=<>]", dep)[0])
    return names


def test_every_script_rule_is_found():
    assert {name for name, _, _ in rules()} >= {
        "index_table",
        "resize_shard",
        "records_shard",
        "verify_records",
        "summary",
    }


@pytest.mark.parametrize(("rule", "script", "env"), rules())
def test_rule_env_covers_its_imports(rule, script, env):
    modules = imports(REPO / script, set(), rule)
    third_party = {m for m in modules if m not in sys.stdlib_module_names}
    unknown = third_party - PACKAGES.keys()
    assert not unknown, f"{rule}: no package known for imports {unknown}"
    needed = {PACKAGES[m] for m in third_party}
    provided = env_packages(REPO / env)
    assert needed <= provided, f"{rule}: {env} lacks {sorted(needed - provided)}"


def test_envs_are_pinned_and_use_conda_forge():
    for path in (REPO / "envs").glob("*.yaml"):
        spec = yaml.safe_load(path.read_text())
        assert spec["channels"][0] == "conda-forge", path
        for dep in spec["dependencies"]:
            pins = dep.get("pip", []) if isinstance(dep, dict) else [dep]
            for pin in pins:
                assert pin == "pip" or re.search(r"==?\d", pin), f"{path.name}: {pin} is not pinned"
