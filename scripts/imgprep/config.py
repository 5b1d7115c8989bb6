"""Configuration: validated against schemas/config.schema.yaml before any job runs."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from imgprep import slim, sources
from imgprep.datasets import dataset_list
from imgprep.errors import ConfigError

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"
# libyaml's loader where PyYAML has it (its wheels do): the schema is read at every
# invocation, every cluster job's re-parse included, 6x faster than the pure-Python loader
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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
        return yaml.load(handle, Loader=_SAFE_LOADER)


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
    sources.check(config)  # the source type's own rules (imgprep.sources.<type>.check)
    sources.fill_defaults(config)
    for key in ("file", "synsets"):
        value = config["labels"][key]
        if value is not None and not Path(value).is_file():
            raise ConfigError(f"config key 'labels.{key}': file not found: {value}")
    # each record format's own rules (imgprep.formats.<name>), over each dataset's
    # effective configuration; the top-level sections alone are only defaults then
    if config.get("datasets"):
        dataset_list(config, check=_check_formats)
    else:
        _check_formats(config)


def _check_formats(config: dict) -> None:
    """Each record format checks the keys it alone reads, and, when listed in
    records.schemas, what it needs of the rest; the embed stage's model and weights are
    checked where a listed format's records are made from embeddings."""
    # imported here: the formats' modules import the record writer's packages, which the
    # index jobs do not have
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


def load_config_file(path) -> dict:
    with open(path) as handle:
        return validate_config(yaml.safe_load(handle) or {})
