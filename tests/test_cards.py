"""Dataset cards (results/<name>/README.md): built with the sample's datasets, each card's
counts, label base, shard hashes and configuration hash are held to the files themselves,
and every loading snippet of every card is run, as it stands, from the card's folder,
and must read every record of every split."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import REPO
from imgprep.config import validate_config
from imgprep.datasets import dataset_list
from imgprep.formats import get_format
from imgprep.stages.card import canonical_json, config_sha256, source_description, write_card
from test_workflow import new_workdir, outstanding, snakemake

# config.yaml's three datasets, with the other formats that need no stage of their own
# beside imagenet (webdataset, parquet), so that their snippets run too; Tangler draws 500
# lines instead of 6000 (the string art is not what the cards are about), and every split
# has half its shards. Koalarization's snippet runs over shards its format writes (its
# embeddings would cost a TF model here).
EXTRA = {
    "imagenet": {"records": {"schemas": ["imagenet", "webdataset", "parquet"]}},
    "tangler": {"ravel": {"lines": 500}},
}
HF_PLUGIN = REPO / ".plugins" / "hf"
# which formats' consumers live outside .venv (make test installs them into .plugins/)
PLUGINS = {"parquet": HF_PLUGIN}
COUNT_LINE = re.compile(r"^(\w+): (\d+) records$", re.M)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    work = new_workdir(tmp_path_factory.mktemp("cards") / "work", datasets=True)
    path = work / "config.yaml"
    config = yaml.safe_load(path.read_text())
    for name, keys in EXTRA.items():
        config["datasets"].setdefault(name, {}).update(keys)
    # half the sample's shards: half the jobs, and still several shards to a split
    config["splits"]["train"]["shards"], config["splits"]["validation"]["shards"] = 2, 1
    config["datasets"]["imagenet"]["splits"] = {"train": {"shards": 2}, "validation": {"shards": 1}}
    path.write_text(yaml.safe_dump(config))
    snakemake(work, "--cores", "2")
    return work


def datasets_of(work: Path) -> dict:
    """Dataset name -> its Dataset (effective configuration), as the workflow makes them."""
    config = yaml.safe_load((work / "config.yaml").read_text())
    with contextlib.chdir(work):  # the source's paths are relative to the work folder
        return {spec.name: spec for spec in dataset_list(validate_config(config))}


def card(work: Path, name: str) -> str:
    path = work / "results" / name / "README.md"
    assert path.is_file(), f"no card {path}"
    return path.read_text()


def section(text: str, title: str) -> str:
    """The text of a ``## title`` section (up to the next ``## ``)."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"card has no section {title!r}"
    return match.group(1)


def table(text: str, first_header: str) -> list[dict]:
    """The Markdown table whose first header cell is ``first_header``, as rows of cells."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    header = [cell.strip() for cell in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
        rows.append(dict(zip(header, cells, strict=True)))
    return rows


def summary(work: Path, name: str) -> dict:
    return json.loads((work / "results" / name / "summary.json").read_text())


def test_every_dataset_has_a_card_with_its_counts(built):
    specs = datasets_of(built)
    assert set(specs) == {"imagenet", "tangler", "dlbs"}
    for name, spec in specs.items():
        text = card(built, name)
        made = summary(built, name)
        rejects = pd.read_csv(built / "results" / name / "rejects.tsv", sep="\t", dtype=str)
        rows = {row["split"]: row for row in table(section(text, "Splits"), "split")}
        assert list(rows) == list(spec.splits)
        for split, row in rows.items():
            members = pd.read_csv(built / "results" / name / "index" / f"{split}.tsv", sep="\t")
            rejected = int((rejects["split"] == split).sum())
            assert int(row["images"]) == len(members) == made["splits"][split]["images"]
            assert int(row["rejects"]) == rejected
            assert int(row["classes"]) == members["class"].nunique()
            for schema in spec.config["records"]["schemas"]:
                entry = made["splits"][split]["schemas"][schema]
                assert int(row[f"records ({schema})"]) == len(members) - rejected
                assert int(row[f"records ({schema})"]) == entry["records"]
            shards = {
                len(made["splits"][split]["schemas"][s]["shards"])
                for s in spec.config["records"]["schemas"]
            }
            assert (
                row["shards"]
                == "/".join(map(str, sorted(shards)))
                == str(spec.splits[split]["shards"])
            )
        got = {
            (r["split"], r["reason"]): int(r["images"])
            for r in table(text.split("by reason:")[1], "split")
        }
        want = rejects.assign(kind=rejects["reason"].str.split(":").str[0].str.strip())
        assert got == {k: int(v) for k, v in want.groupby(["split", "kind"]).size().items()}
        # the duplicate audit's counts, every one of them
        audit = json.loads((built / "results" / name / "duplicates.json").read_text())
        shown = {r["count"]: r["value"] for r in table(section(text, "Duplicates"), "count")}
        assert shown == {key: str(value) for key, value in _flat(audit).items()}
        schema = spec.config["records"]["schemas"][0]  # the stored images: every record's
        records = sum(made["splits"][s]["schemas"][schema]["records"] for s in spec.splits)
        assert int(shown["images"]) == records


def _flat(value, prefix="") -> dict:
    if not isinstance(value, dict):
        return {prefix.rstrip("."): value}
    return {k: v for key, item in value.items() for k, v in _flat(item, f"{prefix}{key}.").items()}


def test_cards_state_the_label_base_and_map(built):
    for name, spec in datasets_of(built).items():
        text = card(built, name)
        base = spec.config["labels"]["base"]
        assert f"`labels.base: {base}`" in text
        labels = pd.read_csv(built / "results" / "index" / "labels.tsv", sep="\t", dtype=str)
        rows = table(section(text, "Label map"), next(iter(_label_columns(text)), "synset"))
        assert [r["synset"].strip("`") for r in rows] == labels["synset"].tolist()
        assert [r["text"] for r in rows] == labels["text"].tolist()
        for column, schemas in _label_columns(text).items():
            for schema in schemas:
                want = [get_format(schema).label(i, base) for i in range(len(labels))]
                assert [int(r[column]) for r in rows] == want, (name, column)
        stored = {s for schemas in _label_columns(text).values() for s in schemas}
        labelled = {
            s
            for s in spec.config["records"]["schemas"]
            if s in ("imagenet", "dlbs", "webdataset", "parquet")
        }
        assert stored == labelled, name
        # the records per class add up to the split's records
        for split in spec.splits:
            records = summary(built, name)["splits"][split]["schemas"]
            total = sum(int(r[f"records ({split})"]) for r in rows)
            assert all(total == entry["records"] for entry in records.values())
    assert "0 reserved for background" in card(built, "imagenet")
    assert "`dlbs`: 0 … N−1" in card(built, "dlbs")


def _label_columns(text: str) -> dict[str, list[str]]:
    header = next(line for line in section(text, "Label map").splitlines() if line.startswith("| "))
    return {
        cell.strip(): cell.strip()[len("label (") : -1].split(", ")
        for cell in header.strip("|").split("|")
        if cell.strip().startswith("label (")
    }


def test_shard_sha256_are_the_files(built):
    for name, spec in datasets_of(built).items():
        folder = built / "results" / name
        text = section(card(built, name), "Files and checksums")
        block = re.search(r"```\n(.*?)```", text, re.S).group(1)
        listed = dict(reversed(line.split("  ", 1)) for line in block.splitlines())
        want = {
            f"records/{schema}/{get_format(schema).shard_path(split, i, entry['shards'])}"
            for schema in spec.config["records"]["schemas"]
            for split, entry in spec.splits.items()
            for i in range(entry["shards"])
        }
        assert set(listed) == want, name
        for path, digest in listed.items():
            assert hashlib.sha256((folder / path).read_bytes()).hexdigest() == digest, path
        check = subprocess.run(
            ["sha256sum", "-c", "--strict"], input=block, text=True, cwd=folder, capture_output=True
        )
        assert check.returncode == 0, check.stdout + check.stderr
        # the tables say the same
        for schema in spec.config["records"]["schemas"]:
            rows = table(text.split(f"### `{schema}`")[1], "split")
            assert {r["file"].strip("`"): r["sha256"] for r in rows} == {
                p: d for p, d in listed.items() if p.startswith(f"records/{schema}/")
            }


def test_config_hash_is_that_of_the_config_block(built):
    for name, spec in datasets_of(built).items():
        text = section(card(built, name), "How it was made")
        block = re.search(r"```yaml\n(.*?)```", text, re.S).group(1)
        stated = re.search(r"config sha256: `([0-9a-f]{64})`", text).group(1)
        config = yaml.safe_load(block)
        assert hashlib.sha256(canonical_json(config).encode()).hexdigest() == stated
        # and the block is the dataset's effective configuration, the one its stages read
        assert config == json.loads(json.dumps(spec.config))
        for package in (
            "python",
            "imgprep",
            "tensorflow",
            "pillow",
            "simplejpeg",
            "numpy",
            "numba",
            "snakemake",
        ):
            assert re.search(rf"^\| {package} \| \d+\.\d+", text, re.M), package


def snippets(text: str) -> dict[str, str]:
    """Format -> the python block under its heading in the card's Loading section."""
    found = re.findall(
        r"^### `(\w+)`\n.*?```python\n(.*?)```", section(text, "Loading"), re.S | re.M
    )
    return dict(found)


def run_snippet(code: str, cwd: Path, schema: str) -> str:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("PYTHONPATH", None)  # the snippet needs nothing of imgprep
    if schema in PLUGINS:
        env["PYTHONPATH"] = str(PLUGINS[schema])
        env.update(
            HF_HOME=str(cwd.parent.parent / f"hf-home-{cwd.name}"),
            HF_DATASETS_OFFLINE="1",
            HF_HUB_OFFLINE="1",
            HF_HUB_DISABLE_TELEMETRY="1",
        )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"{cwd.name}/{schema}:\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_every_snippet_loads_every_record(built):
    if not (HF_PLUGIN / "datasets").is_dir():
        pytest.fail(
            "make test installs datasets into .plugins/hf (requirements-hf.txt)", pytrace=False
        )
    jobs = []
    for name, spec in datasets_of(built).items():
        found = snippets(card(built, name))
        assert set(found) == set(spec.config["records"]["schemas"]), name
        jobs += [(name, schema, code) for schema, code in found.items()]
    folder = built / "results"
    with ThreadPoolExecutor(2) as pool:
        outputs = list(pool.map(lambda job: run_snippet(job[2], folder / job[0], job[1]), jobs))
    for (name, schema, _), output in zip(jobs, outputs, strict=True):
        counts = counts_printed(output)
        made = summary(built, name)["splits"]
        assert counts == {split: made[split]["schemas"][schema]["records"] for split in made}, (
            name,
            schema,
        )
        assert all(counts.values()), (name, schema)


def test_a_thousand_classes_fold_and_the_duplicate_counts_show(built, tmp_path):
    """The label map of 1000 classes sits in a <details> block, every class in it; the
    duplicate audit's counts (results/<name>/duplicates.json), when given, get a section."""
    spec = datasets_of(built)["imagenet"]
    folder = built / "results" / "imagenet"
    labels = pd.read_csv(built / "results" / "index" / "labels.tsv", sep="\t", dtype=str)
    extra = [f"n{i:08d}" for i in range(1000 - len(labels))]
    many = pd.DataFrame(
        {
            "index": range(1000),
            "label": range(1, 1001),
            "synset": [*labels["synset"], *extra],
            "text": [*labels["text"], *(f"class {name}" for name in extra)],
        }
    )
    many.to_csv(tmp_path / "labels.tsv", sep="\t", index=False)
    duplicates = {"exact": {"within": 2, "across": 1}, "near": {"pairs": 5}, "dropped": 0}
    (tmp_path / "duplicates.json").write_text(json.dumps(duplicates))
    text = write_card(
        tmp_path / "README.md",
        name="imagenet",
        preset="tpu",
        summary_json=folder / "summary.json",
        labels_tsv=tmp_path / "labels.tsv",
        tables=[folder / "index" / f"{split}.tsv" for split in spec.splits],
        rejects_tsv=folder / "rejects.tsv",
        config=spec.config,
        config_hash=config_sha256(spec.config),
        source=source_description(spec.config),
        snippets={},
        duplicates_json=tmp_path / "duplicates.json",
    )
    assert text == (tmp_path / "README.md").read_text()
    label_map = section(text, "Label map")
    folded = re.search(
        r"<details>\n<summary>All 1000 classes</summary>\n(.*?)</details>", label_map, re.S
    )
    assert folded, label_map[:500]
    rows = table(folded.group(1), "label (imagenet)")
    assert [int(r["label (imagenet)"]) for r in rows] == list(range(1, 1001))
    assert [r["synset"].strip("`") for r in rows] == many["synset"].tolist()
    got = {r["count"]: r["value"] for r in table(section(text, "Duplicates"), "count")}
    assert got == {"exact.within": "2", "exact.across": "1", "near.pairs": "5", "dropped": "0"}
    assert "`labels.base: 1`" in text and "No snippet for this format." in text
    with pytest.raises(ValueError, match="sha256"):
        write_card(
            tmp_path / "other.md",
            name="imagenet",
            preset="tpu",
            summary_json=folder / "summary.json",
            labels_tsv=tmp_path / "labels.tsv",
            tables=[],
            rejects_tsv=folder / "rejects.tsv",
            config=spec.config,
            config_hash="0" * 64,
            source="",
            snippets={},
        )


def counts_printed(output: str) -> dict[str, int]:
    return {split: int(n) for split, n in COUNT_LINE.findall(output)}


def test_koalarization_snippet_loads_what_its_format_writes(tmp_path):
    from test_koalarization import build

    card_folder = tmp_path / "card"
    folder = card_folder / "records" / "koalarization"
    folder.mkdir(parents=True)
    want = {}
    # test: a split of its own prefix, which neither Koalarization glob may pick up
    for split, total in (("train", 2), ("validation", 1), ("test", 1)):
        for i in range(total):
            _, shard, _, result = build(tmp_path / f"{split}-{i}", split, i, total)
            Path(shard["record"]).rename(folder / Path(shard["record"]).name)
            want[split] = want.get(split, 0) + result["records"]
    config = {"embed": {"lab_size": 224}, "records": {"compression": "none"}}
    code = get_format("koalarization").loading_snippet("records/koalarization", list(want), config)
    assert counts_printed(run_snippet(code, card_folder, "koalarization")) == want
    assert all(want.values())


def test_a_config_without_datasets_gets_results_readme(tmp_path):
    """Its one dataset's folder is results/ itself: the card is results/README.md, part of
    the default target (one card job; the format folders' own README.md are other files)."""
    work = new_workdir(tmp_path / "single")
    plan = snakemake(work, "-n")
    text = plan.stdout + plan.stderr
    cards = re.findall(r"^rule dataset_card:\n.*?output: (\S+)", text, re.S | re.M)
    assert cards == ["results/README.md"]
    assert outstanding(work)["dataset_card"] == 1
