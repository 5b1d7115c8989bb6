"""What each per-shard stage is made from besides its input files, as one digest.

Snakemake re-runs a job whose own ``params`` changed, and a job whose inputs are newer, but
a missing intermediate does not count: once the resized tars are gone (Snakemake removes
the outputs of a failed job), records made from 299-px ``pad`` images look up to date under
a ``center-crop`` config. So every stage carries, as a ``params`` value, a digest of the
settings of itself and of every stage upstream of it.
"""

from __future__ import annotations

import hashlib
import json

from imgprep.formats import get_format
from imgprep.stages.embed import DEFAULT_PRECISION

# what the embeddings depend on (lab_size and in_records do not change them)
EMBED_KEYS = ("model", "weights", "output", "input_size", "batch_size", "seed", "precision")
STAGES = ("resize", "ravel", "embed", "records")


def embed_settings(config: dict) -> dict:
    """The embed settings, the default precision left out: builds from before the key
    existed keep their digests (no re-run for a setting that changes nothing)."""
    embed = config["embed"]
    return {
        key: embed[key]
        for key in EMBED_KEYS
        if not (key == "precision" and embed[key] == DEFAULT_PRECISION)
    }


def upstream_settings(config: dict, stage: str, schema: str | None = None) -> dict:
    """The settings a ``stage`` output (of ``schema``, for records) is made from."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    spec = get_format(schema) if stage == "records" else None
    settings = {"resize": config["resize"]}
    if config["source"]["type"] == "urls":
        settings["download"] = config["download"]  # what download_shard's params are
    if stage == "ravel" or (spec is not None and "ravel" in spec.needs):
        settings["ravel"] = config["ravel"]
    if stage == "embed" or (spec is not None and spec.uses_embeddings(config)):
        settings["embed"] = embed_settings(config)
    if stage == "records":
        settings["records"] = {
            "schema": schema,
            "compression": config["records"]["compression"],
            "label_base": config["labels"]["base"],
        }
        settings["records"].update(spec.record_settings(config))
    return settings


def upstream_digest(config: dict, stage: str, schema: str | None = None) -> str:
    """Short SHA-256 of :func:`upstream_settings` (canonical JSON): a ``params`` value."""
    text = json.dumps(upstream_settings(config, stage, schema), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
