"""Presets: what each consumer needs of a dataset, as settings and as needs.

A preset's ``settings`` are defaults the dataset may override (shard counts, sizes); its
``needs`` are what the consumer's own reader breaks without, checked after the overrides,
so that an override which breaks the reader fails before any job, naming the key. What a
record format itself needs (DLBS' square RGB tensors, Tangler's square gray images, Deep
Koalarization's 224 Lab targets) its module checks (``imgprep.formats``); a preset adds
only what the format cannot know. Adding a preset is one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Need:
    """``key`` (dotted, inside the dataset) must pass ``test``; ``what`` says what it
    must be, ``why`` the consumer's reason."""

    key: str
    test: Callable[[Any], bool]
    what: str
    why: str


@dataclass(frozen=True)
class Preset:
    consumer: str
    settings: dict
    needs: tuple[Need, ...] = field(default=())


def lists(schema: str) -> Need:
    return Need(
        "records.schemas",
        lambda schemas: schema in schemas,
        f"to list {schema}",
        "the preset is that format's consumer",
    )


PRESETS: dict[str, Preset] = {
    "tpu": Preset(
        "TPU ResNet (tensorflow/tpu imagenet_input.py), tensorflow/models, TF-slim",
        {
            "records": {"schemas": ["imagenet"]},
            "labels": {"base": 1},
            "splits": {"train": {"shards": 1024}, "validation": {"shards": 128}},
        },
        (
            lists("imagenet"),
            Need(
                "labels.base",
                lambda base: base == 1,
                "1",
                "TPU's dataset_parser subtracts 1 from image/class/label",
            ),
        ),
    ),
    "tfds": Preset(
        "TFDS (tfds.builder_from_directory over the written metadata)",
        {"records": {"schemas": ["imagenet"]}, "labels": {"base": 0}},
        (
            lists("imagenet"),
            Need(
                "labels.base",
                lambda base: base == 0,
                "0",
                "TFDS' ClassLabel counts from 0; base 1 adds a 'background' class",
            ),
        ),
    ),
    "dlbs": Preset(
        "DLBS / tf_cnn_benchmarks (raw uint8 tensors, sliced [S, S, 3])",
        {
            "records": {"schemas": ["dlbs"]},
            "resize": {"colorspace": "rgb", "upscale": True},
        },
        (lists("dlbs"),),
    ),
    "tangler": Preset(
        "Tangler v6 (gray square JPEG + string-art pin path)",
        {
            "records": {"schemas": ["tangler"]},
            "resize": {
                "mode": "center-crop",
                "size": 256,
                "colorspace": "gray",
                "gray_matrix": "rec709",
                "upscale": True,
            },
            "ravel": {"pins": 256, "lines": 6000},
        },
        (lists("tangler"),),
    ),
    "koalarization": Preset(
        "Deep Koalarization (224 Lab targets + 1001 Inception-ResNet-v2 logits)",
        {
            "records": {"schemas": ["koalarization"]},
            "resize": {"mode": "center-crop", "size": 299, "upscale": True},
            "embed": {"model": "InceptionResNetV2", "output": "logits", "input_size": 299},
        },
        (lists("koalarization"),),
    ),
    "downsampled": Preset(
        "Downsampled ImageNet (Chrabaszcz et al. 2017, Imagenet64x64 / 32x32)",
        {
            "records": {"schemas": ["dlbs"]},  # raw pixels: a 32-px JPEG would lose them
            "resize": {
                "mode": "stretch",
                "size": 64,
                "filter": "box",
                "upscale": True,
                "colorspace": "rgb",
                # the box filter over the decoded image, not over a DCT-scaled decode
                "fast_decode": False,
            },
        },
        (
            Need(
                "resize.filter",
                lambda value: value == "box",
                "'box'",
                "Chrabaszcz et al. box-filter each image",
            ),
            Need(
                "resize.mode",
                lambda value: value == "stretch",
                "'stretch'",
                "the downsampled sets resize the whole image, no crop",
            ),
        ),
    ),
}
