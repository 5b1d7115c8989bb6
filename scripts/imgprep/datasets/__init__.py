"""Datasets: several consumer-ready outputs from one source, scanned once.

``datasets.<name>`` in the config names a dataset; its outputs go to ``results/<name>/``.
Each one is the top-level configuration with its own sections laid over it (schema
defaults < top-level sections < its preset < its own keys): that *effective
configuration* is what every stage, format check and upstream digest of the dataset reads,
so a stage never knows that datasets exist. A configuration without ``datasets`` is one
dataset whose folder is ``results/`` itself (the layout before datasets, kept so that an
existing build stays up to date).

Standard library only: the Snakefile builds these at parse time, also in cluster jobs.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path

from imgprep.datasets.presets import PRESETS
from imgprep.errors import ConfigError

# a dataset's own sections, laid over the top-level ones
SECTIONS = ("records", "resize", "ravel", "embed", "labels", "duplicates", "report")
# results/<name>/ must not be a folder the run itself writes, nor a rule's name (a target)
RESERVED = frozenset(
    (
        "index",
        "downloads",
        "logs",
        "benchmarks",
        "summary",
        "resized",
        "ravel",
        "embed",
        "records",
        "checksums",
        "verify",
        "rejects",
        "report",
        "all",
        "download_shard",
        "index_table",
        "resize_shard",
        "ravel_shard",
        "embed_shard",
        "records_shard",
        "records_shard_unindexed",
        "verify_records",
        "records_metadata",
        "duplicates_audit",
    )
)
SHIPPED_CLASSES = Path(__file__).resolve().parents[3] / "resources" / "classes"
SINGLE = "default"  # the name of a configuration's only dataset when it has no datasets:


@dataclass(frozen=True)
class Dataset:
    """One dataset. ``folder``: "" (no ``datasets:``) or "<name>/", under results/.
    ``config``: its effective configuration; its ``splits`` are the dataset's own, each
    with ``shards`` and ``from`` (the source split it draws from)."""

    name: str
    folder: str
    config: dict
    # source split -> its shard count (the index's lists)
    source_shards: dict[str, int]
    classes: tuple[str, ...] | None = None

    @property
    def splits(self) -> dict:
        return self.config["splits"]

    def key(self, key: str) -> str:
        """How an error names ``key`` of this dataset."""
        return f"datasets.{self.name}.{key}" if self.folder else key

    def selects(self, split: str) -> bool:
        """Whether the split's members are chosen (not all of its source split)."""
        spec = self.splits[split]
        return bool(spec.get("holdout") or "count" in spec or "fraction" in spec)

    def same_as_source(self, split: str) -> bool:
        """Whether the split's shard lists are the source index's own: same source split
        and shard count, nothing selected, nothing held out of it. Known from the
        configuration alone, so cluster jobs (which never scan) find the same lists."""
        spec = self.splits[split]
        carved = any(s.get("holdout") and s["from"] == spec["from"] for s in self.splits.values())
        return (
            spec["from"] == split
            and spec["shards"] == self.source_shards[spec["from"]]
            and self.classes is None
            and not self.selects(split)
            and not carved
        )

    def own_lists(self) -> list[str]:
        """The splits whose shard lists are the dataset's own (planned from the scan)."""
        return [split for split in self.splits if not self.same_as_source(split)]

    def own_labels(self, source_base: int) -> bool:
        """Whether the dataset's label map differs from the source index's labels.tsv."""
        return self.classes is not None or self.config["labels"]["base"] != source_base


def merged(base: dict, over: dict) -> dict:
    """``base`` with ``over`` laid over it, mappings merged key by key."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_classes(value, key: str) -> tuple[str, ...]:
    """A class list: inline, ``{file: path}``, or the name of a shipped list."""
    if isinstance(value, list):
        names = [str(v) for v in value]
    else:
        path = Path(value["file"]) if isinstance(value, dict) else SHIPPED_CLASSES / f"{value}.txt"
        if not path.is_file():
            shipped = sorted(p.stem for p in SHIPPED_CLASSES.glob("*.txt"))
            where = (
                f"file not found: {path}"
                if isinstance(value, dict)
                else (f"no shipped class list {value!r} (shipped: {', '.join(shipped) or 'none'})")
            )
            raise ConfigError(f"config key '{key}': {where}")
        text = path.read_text(encoding="utf-8")
        names = [line.split("#")[0].strip() for line in text.splitlines()]
        names = [name for name in names if name]
    if not names:
        raise ConfigError(f"config key '{key}': no classes")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"config key '{key}': duplicate classes {dupes[:5]}")
    return tuple(names)


def _splits(config: dict, name: str, own: dict, preset: dict) -> dict:
    """The dataset's splits: every source split unless it names its own; shards from the
    dataset, else its preset, else the source."""
    source = config["splits"]
    wanted = own if own else {split: {} for split in source}
    splits = {}
    for split, spec in wanted.items():
        spec = dict(spec)
        key = f"datasets.{name}.splits.{split}"
        spec.setdefault("from", split)
        if spec["from"] not in source:
            raise ConfigError(
                f"config key '{key}.from': no source split {spec['from']!r} "
                f"(source splits: {', '.join(source)})"
            )
        if spec.get("holdout") and spec["from"] == split:
            raise ConfigError(
                f"config key '{key}.from': a held-out split names the split it is carved from"
            )
        if spec.get("holdout") and "count" not in spec and "fraction" not in spec:
            raise ConfigError(f"config key '{key}': a held-out split needs count or fraction")
        if "count" in spec and "fraction" in spec:
            raise ConfigError(f"config key '{key}': count or fraction, not both")
        default = preset.get(split, {}).get("shards", source[spec["from"]]["shards"])
        spec.setdefault("shards", default)
        spec.setdefault("holdout", False)
        spec.setdefault("per_class", False)
        splits[split] = spec
    return splits


def effective_config(config: dict, name: str) -> dict:
    """The configuration the dataset's stages read (raises ConfigError naming the key)."""
    own = config["datasets"][name]
    preset_name = own.get("preset")
    preset = PRESETS[preset_name].settings if preset_name else {}
    effective = {key: value for key, value in config.items() if key != "datasets"}
    for section in SECTIONS:
        layered = merged(config[section], preset.get(section, {}))
        effective[section] = merged(layered, own.get(section, {}))
    effective["splits"] = _splits(config, name, own.get("splits", {}), preset.get("splits", {}))
    return effective


def _with_key_prefix(error: ConfigError, name: str) -> ConfigError:
    """A format's check names the key inside the dataset (``resize.colorspace``): name it
    as the config writes it, ``datasets.<name>.resize.colorspace``."""
    text = re.sub(r"config key '(?!datasets\.)", f"config key 'datasets.{name}.", str(error))
    return ConfigError(text)


def dataset_list(config: dict, check=None) -> list[Dataset]:
    """The configured datasets; ``check(effective_config)`` (the record formats' checks)
    runs on each, its errors naming the dataset's keys."""
    source_shards = {split: spec["shards"] for split, spec in config["splits"].items()}
    if not config.get("datasets"):
        splits = {
            split: {"shards": spec["shards"], "from": split, "holdout": False, "per_class": False}
            for split, spec in config["splits"].items()
        }
        single = {**config, "splits": splits}
        _check_leak_splits(single, "duplicates.train_splits")
        return [Dataset(SINGLE, "", single, source_shards)]
    found = []
    for name, own in config["datasets"].items():
        if name in RESERVED:
            raise ConfigError(
                f"config key 'datasets.{name}': the name is reserved (a folder of results/ or "
                f"a rule): {', '.join(sorted(RESERVED))}"
            )
        effective = effective_config(config, name)
        classes = (
            read_classes(own["classes"], f"datasets.{name}.classes") if "classes" in own else None
        )
        if check is not None:
            try:
                check(effective)
            except ConfigError as error:
                raise _with_key_prefix(error, name) from None
        preset = own.get("preset")
        for need in PRESETS[preset].needs if preset else ():
            value = effective
            for part in need.key.split("."):
                value = value[part]
            if not need.test(value):
                raise ConfigError(
                    f"config key 'datasets.{name}.{need.key}': preset {preset} needs "
                    f"{need.what} ({need.why}), not {value!r}"
                )
        _check_leak_splits(effective, f"datasets.{name}.duplicates.train_splits")
        found.append(Dataset(name, f"{name}/", effective, source_shards, classes))
    return found


def _check_leak_splits(effective: dict, key: str) -> None:
    """duplicates.leaks: drop leaves images out of the records of train_splits: a name
    that is no split of the dataset would silently drop nothing."""
    found = effective.get("duplicates", {})
    if found.get("leaks") != "drop":
        return
    unknown = [split for split in found["train_splits"] if split not in effective["splits"]]
    if unknown:
        raise ConfigError(
            f"config key '{key}': {', '.join(unknown)} is no split of this dataset "
            f"({', '.join(effective['splits'])}); leaks: drop would drop nothing there"
        )
