"""The source types: ``source.type`` -> the module that owns everything about it.

Each module has ``check(config)`` (what the schema cannot say, errors naming the key) and
``scan(config, cache) -> common.Found`` (placed ``IndexRow``s, what it ignored, its
classes; ``cache`` is the index's folder for parsed listings); it may have
``fill_defaults(config)`` for defaults it derives from the source. Adding a source type is
one module and one line here (and its name in the schema's ``source.type`` enum).
"""

from __future__ import annotations

from types import ModuleType

from imgprep.errors import ConfigError
from imgprep.sources import folders, ilsvrc_tars, kaggle, manifest, url_list

SOURCE_TYPES: dict[str, ModuleType] = {
    "folders": folders,  # local split-/class-folders, or s3:// (sources.s3_folders)
    "manifest": manifest,  # a CSV/TSV of path, label[, split]
    "kaggle": kaggle,  # Kaggle's ImageNet localization download
    "tars": ilsvrc_tars,  # ILSVRC2012 tars read in place
    "urls": url_list,  # a URL list, fetched by the download stage
}


def source_type(config: dict) -> ModuleType:
    """The module of ``source.type``; an unknown name fails listing the known ones."""
    name = config["source"]["type"]
    try:
        return SOURCE_TYPES[name]
    except KeyError:
        known = ", ".join(sorted(SOURCE_TYPES))
        raise ConfigError(
            f"config key 'source.type': unknown source type {name!r} (known: {known})"
        ) from None


def fill_defaults(config: dict) -> None:
    """Defaults the source derives from itself (Kaggle's synset texts), before checking."""
    module = source_type(config)
    if hasattr(module, "fill_defaults"):
        module.fill_defaults(config)


def check(config: dict) -> None:
    source_type(config).check(config)


def scan(config: dict, cache):
    return source_type(config).scan(config, cache)
