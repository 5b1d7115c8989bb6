"""The shipped class lists (resources/classes/): well-formed, and the published lists
themselves, not look-alikes; see resources/classes/README.md for where each comes from."""

from __future__ import annotations

import hashlib
import re

import pytest
from helpers import REPO

CLASSES = REPO / "resources" / "classes"
WNID = re.compile(r"n\d{8}")
# name -> (classes, whether the file is in sorted order)
LISTS = {"imagenette": (10, True), "imagenet100": (100, False)}

IMAGENETTE = {
    "n01440764",  # tench
    "n02102040",  # English springer
    "n02979186",  # cassette player
    "n03000684",  # chain saw
    "n03028079",  # church
    "n03394916",  # French horn
    "n03417042",  # garbage truck
    "n03425413",  # gas pump
    "n03445777",  # golf ball
    "n03888257",  # parachute
}
# HobbitLong/CMC imagenet100.txt at bc687a26de7ae350d98f671d25d164b65336b8c2, byte for byte
IMAGENET100_SHA256 = "79f3f1552ccc478ce24bd934b4573625db584ddc1f4643ae23c994a94cb11397"


def text(name: str) -> str:
    return (CLASSES / f"{name}.txt").read_text(encoding="utf-8")


def test_every_shipped_list_is_checked_and_described():
    assert sorted(path.stem for path in CLASSES.glob("*.txt")) == sorted(LISTS)
    readme = (CLASSES / "README.md").read_text(encoding="utf-8")
    for name in LISTS:
        assert f"## `{name}.txt`" in readme, f"README.md does not say where {name} comes from"


@pytest.mark.parametrize("name", sorted(LISTS))
def test_the_list_is_one_wnid_a_line(name):
    count, in_sorted_order = LISTS[name]
    body = text(name)
    assert body.endswith("\n") and not body.endswith("\n\n")
    lines = body.splitlines()
    assert "" not in lines
    assert [line for line in lines if not WNID.fullmatch(line)] == []
    assert len(lines) == count
    assert len(set(lines)) == count
    assert (lines == sorted(lines)) is in_sorted_order


def test_imagenette_is_its_ten_classes_in_label_order():
    lines = text("imagenette").splitlines()
    assert set(lines) == IMAGENETTE
    assert lines == sorted(IMAGENETTE)  # Imagenette's folders sorted: its labels 0..9


def test_imagenet100_is_cmcs_file_unchanged():
    data = (CLASSES / "imagenet100.txt").read_bytes()
    assert hashlib.sha256(data).hexdigest() == IMAGENET100_SHA256
    assert data.splitlines()[0] == b"n02869837"  # CMC's first line (bonnet)
