"""source.type 'tars': ILSVRC2012's tars read in place, no unpacking, the originals untouched.

A split's tar of per-class tars (ILSVRC2012_img_train.tar) is labelled by the inner
tar names; a flat tar (ILSVRC2012_img_val.tar) by ``splits.<name>.labels`` (one synset
per line, in sorted file-name order), or not at all (ILSVRC2012_img_test.tar: label -1).
The listing itself, and its cache, is ``imgprep.tarindex``: the resize stage reads the
members through it too.
"""

from __future__ import annotations

import os
from pathlib import Path

from imgprep.errors import ConfigError
from imgprep.files.tables import IndexRow
from imgprep.sourcefile import NOT_AN_IMAGE_EXTENSION
from imgprep.sources import voc_boxes
from imgprep.sources.common import (
    Found,
    box_text,
    check_boxes,
    check_root_folder,
    extensions,
    is_hidden,
    is_image_name,
    name_problem,
    only,
    placer,
    read_lines,
    single_plan,
)
from imgprep.tarindex import MEMBER_SEPARATOR


def check(config: dict) -> None:
    """Each split names its tar; flat tars may name a labels file."""
    source = config["source"]
    check_root_folder(source)
    for name, split in config["splits"].items():
        only(split, name, ("tar", "labels", "boxes"), "source.type 'tars' reads splits.*.tar")
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
        check_boxes(split, name)


def scan(config: dict, cache: Path) -> Found:
    from imgprep.tarindex import TarIndexError, cached_list_tar

    root = Path(config["source"]["root"])
    place, image_extensions = placer(config["seed"]), extensions(config)
    rows, ignored, classes = [], [], set()
    for split, spec in config["splits"].items():
        key = f"config key 'splits.{split}.tar'"
        tar = (root / spec["tar"]).resolve()
        skipped: list = []
        try:
            stat = os.stat(tar)
            members = cached_list_tar(tar, True, cache, skipped)
        except FileNotFoundError:
            raise ConfigError(f"{key}: file not found: {tar}") from None
        except (TarIndexError, OSError) as error:
            raise ConfigError(f"{key}: {error}") from None
        ignored += [(f"{spec['tar']}!/{name}", reason) for name, reason in skipped]
        images = []
        for member in members:
            where = f"{spec['tar']}!/{member.name}"
            problem = name_problem(member.name)
            if problem is not None:
                ignored.append((where, problem))
            elif not is_image_name(member.name, image_extensions) or is_hidden(member.name):
                ignored.append((where, NOT_AN_IMAGE_EXTENSION))
            else:
                images.append(member)
        nested = any(".tar/" in member.name.lower() for member in images)
        if nested:
            labels = {}
            for member in images:
                cls, why = _inner_tar_class(member.name)
                if cls is None:
                    ignored.append((f"{spec['tar']}!/{member.name}", why))
                else:
                    labels[member.name] = cls
            images = [member for member in images if member.name in labels]
        elif spec.get("labels"):
            labels = _flat_labels(split, spec["labels"], root, images)
        else:
            labels = dict.fromkeys((m.name for m in images), "")
        boxes = voc_boxes.split_boxes(config, split, cache, ignored)
        plan = single_plan(split)
        for member in images:
            cls = labels[member.name]
            _, slot, order = place(member.name, plan)
            row = IndexRow(
                f"{tar}{MEMBER_SEPARATOR}{member.name}",
                cls,
                member.size,
                stat.st_mtime_ns,
                member.offset,
                box_text(boxes, member.name),
            )
            rows.append((split, slot, order, row))
            if cls:
                classes.add(cls)
    return Found(rows, ignored, classes, root)


def _inner_tar_class(name: str) -> tuple[str | None, str]:
    """(class, "") of a member of a tar of class tars: the inner tar's base name without
    ``.tar`` (``n01440764.tar/x.JPEG`` -> ``n01440764``); (None, reason) when the member is
    not inside a class tar or that tar's name is absolute or climbs out with ``..`` (a
    class ``.`` or an unlabelled image would be silently wrong)."""
    at = name.lower().find(".tar/")
    if at < 0:
        return None, "not inside a class tar (a tar of class tars)"
    inner = name[: at + len(".tar")]
    parts = inner.split("/")
    if inner.startswith("/") or ".." in parts:
        return None, f"inner tar name {inner!r} is absolute or has '..': no class taken from it"
    cls = parts[-1][: -len(".tar")]
    if not cls.strip("."):
        return None, f"inner tar name {inner!r} gives no class"
    return cls, ""


def _flat_labels(split: str, labels_file: str, root: Path, images: list) -> dict[str, str]:
    """imagenet_2012_validation_synset_labels.txt: line i labels the i-th file by name."""
    key = f"config key 'splits.{split}.labels'"
    path = root / labels_file
    if not path.is_file():
        raise ConfigError(f"{key}: file not found: {path}")
    synsets = read_lines(path, f"splits.{split}.labels")
    names = sorted(m.name for m in images)
    if len(synsets) != len(names):
        raise ConfigError(
            f"{key}: {path} has {len(synsets)} labels for {len(names)} images in the tar"
        )
    return dict(zip(names, synsets, strict=True))
