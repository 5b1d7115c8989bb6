"""The record-format registry: one line per format, each a module of this package.

A format module defines ``FORMAT``, an instance of a subclass of
imgprep.formats.base.RecordFormat that owns everything about the format (features, file
names, needs, config checks, verification, metadata files). Rules, verification and the
configuration ask ``get_format``; adding a format is its module plus one line below.
"""

from __future__ import annotations

from imgprep.errors import ConfigError
from imgprep.formats import dlbs, imagenet, koalarization, parquet, tangler, webdataset
from imgprep.formats.base import RecordFormat

__all__ = ["FORMATS", "RecordFormat", "get_format"]

# records.schemas name -> format (schemas/config.schema.yaml lists the same names; a test
# checks that)
FORMATS: dict[str, RecordFormat] = {
    "imagenet": imagenet.FORMAT,  # JPEG + tensorflow/models keys (TPU, slim, DALI, TFDS)
    "dlbs": dlbs.FORMAT,  # raw uint8 tensors, 0-based labels (DLBS)
    "tangler": tangler.FORMAT,  # gray JPEG + string-art target (Tangler v6)
    "koalarization": koalarization.FORMAT,  # Lab targets + embedding (Deep Koalarization)
    "webdataset": webdataset.FORMAT,  # tar shards of jpg/cls/json samples + wids shard index
    "parquet": parquet.FORMAT,  # Hugging Face datasets layout (Image + ClassLabel, README.md)
}


def get_format(name: str) -> RecordFormat:
    """The format called ``name``; an unknown name is a ConfigError listing the known ones."""
    try:
        return FORMATS[name]
    except KeyError:
        known = ", ".join(sorted(FORMATS))
        raise ConfigError(
            f"config key 'records.schemas': unknown schema {name!r} (known: {known})"
        ) from None
