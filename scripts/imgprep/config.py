"""Configuration: validated against schemas/config.schema.yaml before any job runs."""

from __future__ import annotations

import copy
import json
import math
import zipfile
from pathlib import Path

import yaml

from imgprep import slim
from imgprep.koalarization import EMBEDDING as KOALARIZATION_EMBEDDING
from imgprep.koalarization import LAB_SIZE as KOALARIZATION_LAB_SIZE

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key."""


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
    _check_schema(schema, config)
    _fill_defaults(schema, config)
    _check_semantics(config)
    return config


def section_config(section: str, values: dict | None = None) -> dict:
    """One top-level mapping (``resize``, ``ravel``, ``embed``) checked against its part of
    the schema, the schema's defaults filled in.

    What a stage's parameters are built from where there is no whole config (tests,
    benchmarks, the command line), so the defaults stay stated once, in the schema.
    Checks only the schema: the rules across sections are validate_config's.
    """
    schema = load_schema()
    if section not in schema["properties"]:
        known = ", ".join(sorted(schema["properties"]))
        raise ConfigError(f"config key '{section}' is unknown (allowed: {known})")
    partial = {**schema, "required": [], "properties": {section: schema["properties"][section]}}
    config = {section: copy.deepcopy(dict(values or {}))}
    _check_schema(partial, config)
    _fill_defaults(partial, config)
    return config[section]


def _check_schema(schema: dict, config: dict) -> None:
    """Raise ConfigError naming every key (the first ten) the schema refuses."""
    errors = sorted(_validator(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    if not errors:
        return
    lines = []
    for error in errors[:10]:
        path = list(error.absolute_path)
        if error.validator == "additionalProperties" and "properties" in error.schema:
            unknown = sorted(set(error.instance) - set(error.schema["properties"]))
            for name in unknown:
                allowed = ", ".join(sorted(error.schema["properties"]))
                lines.append(f"config key '{_key(path + [name])}' is unknown (allowed: {allowed})")
            continue
        lines.append(f"config key '{_key(path)}': {error.message}")
    raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))


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
    for schema, colorspace in SQUARE_SCHEMAS.items():
        if schema in config["records"]["schemas"]:
            _check_square_resize(config["resize"], schema, colorspace)
    _check_embed(config)
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


# Schemas whose consumer reads every image at exactly one square side, in one colorspace:
# Tangler's decoder reshapes to (res, res, 1); DLBS' writer centre-crops and resizes every
# image to --img_size, RGB, and its fast path slices [0, 0, 0]..[size, size, 3] of it.
SQUARE_SCHEMAS = {"tangler": "gray", "dlbs": "rgb"}


def _check_square_resize(resize: dict, schema: str, colorspace: str) -> None:
    """The records of ``schema`` hold square images of one side (and, for tangler, the
    image its target was computed from); a resize that cannot promise that is a
    configuration error."""
    size = resize["size"]
    if isinstance(size, list) and size[0] != size[1]:
        raise ConfigError(
            f"config key 'resize.size': schema {schema} needs a square size, not {size}"
        )
    if resize["colorspace"] != colorspace:
        raise ConfigError(f"config key 'resize.colorspace': schema {schema} needs '{colorspace}'")
    if resize["mode"] not in ("center-crop", "stretch", "pad"):
        raise ConfigError(
            f"config key 'resize.mode': schema {schema} needs one side for every image "
            f"(center-crop, stretch or pad), not '{resize['mode']}'"
        )
    if not resize["upscale"]:
        raise ConfigError(
            f"config key 'resize.upscale': schema {schema} needs true "
            "(every image at the full side)"
        )


def _check_embed(config: dict) -> None:
    """The embed stage's model and weights; what Deep Koalarization's reader declares."""
    embed = config["embed"]
    schemas = config["records"]["schemas"]
    if embed["lab_size"] != KOALARIZATION_LAB_SIZE:
        raise ConfigError(
            f"config key 'embed.lab_size': schema koalarization stores "
            f"{KOALARIZATION_LAB_SIZE}x{KOALARIZATION_LAB_SIZE} Lab targets, what Deep "
            f"Koalarization's LabImageRecordReader declares (any other side makes every "
            f"record unreadable); drop the key or set {KOALARIZATION_LAB_SIZE}, not "
            f"{embed['lab_size']}"
        )
    if "koalarization" not in schemas and not embed["in_records"]:
        return  # no embed stage
    weights = embed["weights"]
    if weights not in (None, "imagenet"):
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
    if "koalarization" in schemas:
        _check_koalarization(config)


def _check_koalarization(config: dict) -> None:
    """Koalarization's reader declares image_embedding FixedLen [1001]: ImageNet logits in
    TF-slim's order (a Keras classifier's 1000 get the background entry added)."""
    if config["embed"]["output"] != "logits":
        raise ConfigError(
            f"config key 'embed.output': schema koalarization stores "
            f"{KOALARIZATION_EMBEDDING} ImageNet logits (Deep Koalarization's reader "
            f"declares image_embedding FixedLen [{KOALARIZATION_EMBEDDING}]); use 'logits', "
            f"not {config['embed']['output']!r}"
        )
    weights = config["embed"]["weights"]
    if weights is not None and str(weights).endswith(".keras"):
        units = _keras_file_units(weights)
        if units not in (KOALARIZATION_EMBEDDING - 1, KOALARIZATION_EMBEDDING):
            raise ConfigError(
                f"config key 'embed.weights': schema koalarization needs ImageNet logits "
                f"(1000, or {KOALARIZATION_EMBEDDING} with slim's background) from the "
                f"model's output; {weights} ends in "
                + ("no Dense layer" if units is None else f"a Dense layer of {units} units")
            )


def _keras_file_units(path) -> int | None:
    """Units of the Dense layer a whole-model ``.keras`` file outputs (its config.json,
    read without TensorFlow); None when the output is no Dense layer."""
    try:
        with zipfile.ZipFile(path) as archive:
            model = json.loads(archive.read("config.json"))["config"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise ConfigError(
            f"config key 'embed.weights': {path} is no .keras model: {error}"
        ) from None
    layers = {layer["config"].get("name"): layer for layer in model.get("layers", [])}
    outputs = model.get("output_layers")
    if outputs is None:  # Sequential: the last layer
        last = model["layers"][-1] if model.get("layers") else None
    else:
        if outputs and isinstance(outputs[0], str):  # one output: [name, node, tensor]
            last = layers.get(outputs[0])
        else:  # [[name, node, tensor], ...]: one output only
            last = layers.get(outputs[0][0]) if len(outputs) == 1 else None
    if last is None or last.get("class_name") != "Dense":
        return None
    return last["config"].get("units")


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
