"""Configuration: validated against schemas/config.schema.yaml before any job runs."""

from __future__ import annotations

import copy
import json
import zipfile
from pathlib import Path

import yaml

from imgprep import slim, sources
from imgprep.errors import ConfigError
from imgprep.koalarization import EMBEDDING as KOALARIZATION_EMBEDDING
from imgprep.koalarization import LAB_SIZE as KOALARIZATION_LAB_SIZE

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


def schema_defaults(section: str) -> dict:
    """One top-level section as validation fills it in when the config leaves it out
    (``schema_defaults("download")``): for code and tests handed no whole config."""
    schema = load_schema()["properties"][section]
    values = copy.deepcopy(schema.get("default", {}))
    _fill_defaults(schema, values)
    return values


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
    sources.check(config)  # the source type's own rules (imgprep.sources.<type>.check)
    sources.fill_defaults(config)
    for schema, colorspace in SQUARE_SCHEMAS.items():
        if schema in config["records"]["schemas"]:
            _check_square_resize(config["resize"], schema, colorspace)
    _check_embed(config)
    for key in ("file", "synsets"):
        value = config["labels"][key]
        if value is not None and not Path(value).is_file():
            raise ConfigError(f"config key 'labels.{key}': file not found: {value}")


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


def load_config_file(path) -> dict:
    with open(path) as handle:
        return validate_config(yaml.safe_load(handle) or {})
