"""Configuration: validated against schemas/config.schema.yaml before any job runs."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import yaml

from imgprep import slim
from imgprep.errors import ConfigError

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"


def _key(path) -> str:
    return ".".join(str(part) for part in path) or "<top level>"


def _fill_defaults(schema: dict, instance: dict) -> None:
    """Fill schema defaults into ``instance`` (recursively), so code never guesses them."""
    for name, sub in schema.get("properties", {}).items():
        if name not in instance and "default" in sub:
            instance[name] = copy.deepcopy(sub["default"])
        if isinstance(instance.get(name), dict):
            _fill_defaults(sub, instance[name])


def load_schema() -> dict:
    with open(SCHEMA_PATH) as handle:
        return yaml.safe_load(handle)


def _validator(schema: dict):
    """Draft 2020-12, except that ``integer`` means an int: JSON Schema counts 4.0 as an
    integer, but ``shards: 4.0`` breaks range(), ``quality: 90.0`` the JPEG encoder and
    ``seed: 0.0`` keys the shard hash with "0.0", silently another order than ``seed: 0``."""
    from jsonschema import Draft202012Validator, validators

    def is_int(checker, instance) -> bool:
        return isinstance(instance, int) and not isinstance(instance, bool)

    checker = Draft202012Validator.TYPE_CHECKER.redefine("integer", is_int)
    return validators.extend(Draft202012Validator, type_checker=checker)(schema)


def validate_config(config: dict) -> dict:
    """Return a validated copy of ``config`` with defaults filled in, or raise ConfigError."""
    schema = load_schema()
    config = copy.deepcopy(dict(config))
    errors = sorted(_validator(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for error in errors[:10]:
            path = list(error.absolute_path)
            if error.validator == "additionalProperties" and "properties" in error.schema:
                unknown = sorted(set(error.instance) - set(error.schema["properties"]))
                for name in unknown:
                    allowed = ", ".join(sorted(error.schema["properties"]))
                    lines.append(
                        f"config key '{_key(path + [name])}' is unknown (allowed: {allowed})"
                    )
                continue
            lines.append(f"config key '{_key(path)}': {error.message}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    _fill_defaults(schema, config)
    _check_semantics(config)
    return config


def _check_semantics(config: dict) -> None:
    """Rules a JSON schema cannot say well."""
    source = config["source"]
    if source["type"] == "manifest":
        _check_manifest(source)
        for name, split in config["splits"].items():
            _only(split, name, ("fraction",), "a manifest names its files (and splits)")
    elif source["type"] == "kaggle":
        _check_kaggle(source, config)
    elif source["type"] == "tars":
        _check_tars(source, config["splits"])
    elif source["type"] == "urls":
        _check_urls(source, config["splits"])
    else:
        _check_folders(source, config["splits"])
    _check_formats(config)
    for key in ("file", "synsets"):
        value = config["labels"][key]
        if value is not None and not Path(value).is_file():
            raise ConfigError(f"config key 'labels.{key}': file not found: {value}")


def _check_manifest(source: dict) -> None:
    if "manifest" not in source:
        raise ConfigError("config key 'source.manifest' is required with source.type 'manifest'")
    if not Path(source["manifest"]).is_file():
        raise ConfigError(f"config key 'source.manifest': file not found: {source['manifest']}")
    if "root" in source and not Path(source["root"]).is_dir():
        raise ConfigError(f"config key 'source.root': folder not found: {source['root']}")


def _check_kaggle(source: dict, config: dict) -> None:
    """Kaggle's layout fixes the split folders; its synset mapping gives the texts."""
    if "root" not in source or not Path(source["root"]).is_dir():
        raise ConfigError(f"config key 'source.root': folder not found: {source.get('root')}")
    for name, split in config["splits"].items():
        if name not in ("train", "validation", "test"):
            raise ConfigError(
                f"config key 'splits.{name}': the kaggle source has splits train, validation "
                "and test"
            )
        _only(split, name, (), "the kaggle layout fixes its folders and annotations")
    mapping = Path(source["root"]) / "LOC_synset_mapping.txt"
    if config["labels"]["synsets"] is None and mapping.is_file():
        config["labels"]["synsets"] = str(mapping)


def _only(split: dict, name: str, allowed: tuple, why: str) -> None:
    """Split keys other than ``shards`` and ``allowed`` are an error naming the key."""
    for key in ("dir", "fraction", "tar", "labels", "boxes"):
        if key in split and key not in allowed:
            raise ConfigError(f"config key 'splits.{name}.{key}' does not apply here: {why}")


def _check_tars(source: dict, splits: dict) -> None:
    """Each split names its tar; flat tars may name a labels file."""
    if "root" not in source or not Path(source["root"]).is_dir():
        raise ConfigError(f"config key 'source.root': folder not found: {source.get('root')}")
    for name, split in splits.items():
        _only(split, name, ("tar", "labels", "boxes"), "source.type 'tars' reads splits.*.tar")
        if "tar" not in split:
            raise ConfigError(
                f"config key 'splits.{name}.tar' is required with source.type 'tars' "
                "(e.g. ILSVRC2012_img_train.tar)"
            )
        for key in ("tar", "labels"):
            if key in split and not (Path(source["root"]) / split[key]).is_file():
                raise ConfigError(
                    f"config key 'splits.{name}.{key}': file not found: "
                    f"{Path(source['root']) / split[key]}"
                )
        _check_boxes(split, name)


def _check_boxes(split: dict, name: str) -> None:
    if "boxes" in split and not Path(split["boxes"]).exists():
        raise ConfigError(f"config key 'splits.{name}.boxes': not found: {split['boxes']}")


def _check_urls(source: dict, splits: dict) -> None:
    """A URL list has no splits of its own: each split takes a share of it."""
    if "urls" not in source:
        raise ConfigError("config key 'source.urls' is required with source.type 'urls'")
    if not Path(source["urls"]).is_file():
        raise ConfigError(f"config key 'source.urls': file not found: {source['urls']}")
    for name, split in splits.items():
        _only(split, name, ("fraction",), "a URL list is divided by splits.*.fraction")
        if "fraction" not in split:
            raise ConfigError(
                f"config key 'splits.{name}.fraction' is required with source.type 'urls'"
            )
    _check_fractions(splits)


def _check_fractions(splits: dict) -> None:
    total = sum(split["fraction"] for split in splits.values())
    if not math.isclose(total, 1.0, abs_tol=1e-9):
        raise ConfigError(f"config key 'splits.*.fraction': the fractions add up to {total}, not 1")


def _check_folders(source: dict, splits: dict) -> None:
    layout = source["layout"]
    for name, split in splits.items():
        _only(split, name, ("dir", "fraction", "boxes"), "source.type 'folders'")
        _check_boxes(split, name)
        if layout == "split-folders" and "fraction" in split:
            raise ConfigError(
                f"config key 'splits.{name}.fraction' only applies to source.layout "
                "'class-folders'; with 'split-folders' each split is a folder (splits.<name>.dir)"
            )
        if layout == "class-folders" and "fraction" not in split:
            raise ConfigError(
                f"config key 'splits.{name}.fraction' is required with "
                "source.layout 'class-folders'"
            )
        if layout == "class-folders" and "dir" in split:
            raise ConfigError(
                f"config key 'splits.{name}.dir' only applies to source.layout 'split-folders'"
            )
    if layout == "class-folders":
        _check_fractions(splits)
    if "root" not in source:
        raise ConfigError("config key 'source.root' is required with source.type 'folders'")
    if not source["root"].startswith("s3://") and not Path(source["root"]).is_dir():
        raise ConfigError(f"config key 'source.root': folder not found: {source['root']}")


def _check_formats(config: dict) -> None:
    """Each record format checks the keys it alone reads, and, when listed in
    records.schemas, what it needs of the rest; the embed stage's model and weights are
    checked where a listed format's records are made from embeddings."""
    # imported here: the formats' modules import the record writer's packages, which the
    # index jobs (importing this module for ConfigError and split_dir) do not have
    from imgprep.formats import FORMATS, get_format

    for spec in FORMATS.values():
        spec.check_own_keys(config)
    listed = [get_format(name) for name in config["records"]["schemas"]]
    if any(spec.uses_embeddings(config) for spec in listed):
        _check_embed_weights(config["embed"])
    for spec in listed:
        spec.check_config(config)


def _check_embed_weights(embed: dict) -> None:
    """The embed stage's weights: a file, or a TF-slim checkpoint for its model."""
    weights = embed["weights"]
    if weights in (None, "imagenet"):
        return
    try:
        checkpoint = slim.checkpoint_files(weights)
    except ValueError as error:
        raise ConfigError(f"config key 'embed.weights': {error}") from None
    if checkpoint is None and not Path(weights).is_file():
        raise ConfigError(f"config key 'embed.weights': file not found: {weights}")
    if checkpoint is not None and embed["model"] != slim.MODEL:
        raise ConfigError(
            f"config key 'embed.model': the TF-slim checkpoint {weights} is for "
            f"{slim.MODEL}, not {embed['model']}"
        )


def uses_default_config(command_line_config: dict) -> bool:
    """Whether the Snakefile reads config.yaml (the embedded sample's configuration) under
    the configuration given on the command line: a configuration that names its own
    ``source`` stands alone, since merging would carry the sample's split folders, label
    texts and schemas into it; one without (``resize: {mode: pad}``) overrides keys."""
    return "source" not in command_line_config


def split_dir(config: dict, split: str) -> Path:
    """Folder of a split in the split-folders layout."""
    return Path(config["source"]["root"]) / config["splits"][split].get("dir", split)


def load_config_file(path) -> dict:
    with open(path) as handle:
        return validate_config(yaml.safe_load(handle) or {})
