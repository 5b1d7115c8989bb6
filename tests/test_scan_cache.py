"""The scan cache of folder sources (imgprep.sources.dircache): a warm scan stats folders,
not files, and gives the index a cold scan gives; what it misses, a rescan and the resize
stage catch."""

import os
import time
from pathlib import Path

import pytest
from helpers import base_config, make_tree
from imgprep.config import section_config, validate_config
from imgprep.index import index_dir, scan, update_index
from imgprep.kernels.resize import ResizeParams
from imgprep.sourcefile import SourceChangedError
from imgprep.sources import dircache
from imgprep.stages.resize import resize_shard

LAYOUT = {"train/n01": 6, "train/n02": 5, "train/n02/inner": 2, "validation/n01": 3}
PAST_NS = (time.time_ns() // 10**9 - 3600) * 10**9  # an hour ago: not racy


def age(root: Path) -> None:
    """Folders last changed an hour ago, as a source tree usually is."""
    for folder in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        os.utime(folder, ns=(PAST_NS, PAST_NS))


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "src"
    make_tree(root, LAYOUT)
    age(root)
    return root


def configure(tree, results, **source):
    config = base_config(tree, results)
    config["source"].update(source)
    return validate_config(config)


class CountingLstat:
    """os.lstat, counting the calls on regular files (what the fast path must not do)."""

    def __init__(self, monkeypatch):
        self.files = []
        real = os.lstat

        def lstat(path, *args, **kwargs):
            result = real(path, *args, **kwargs)
            if not os.path.isdir(path):
                self.files.append(str(path))
            return result

        monkeypatch.setattr(os, "lstat", lstat)


def index_bytes(results) -> dict[str, bytes]:
    folder = index_dir(results)
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*.tsv"))
        if "cache" not in p.parts
    }


def test_a_warm_scan_stats_no_file_and_writes_the_same_index(tree, tmp_path, monkeypatch):
    warm = configure(tree, tmp_path / "warm")
    update_index(warm)  # cold: fills the cache
    assert list((index_dir(warm["results"]) / "cache" / "folders").glob("*.scan"))
    counter = CountingLstat(monkeypatch)
    result = update_index(warm)
    assert counter.files == []  # folders only: no per-file lstat
    assert result.changed == []
    monkeypatch.undo()
    cold = configure(tree, tmp_path / "cold", rescan=True)
    update_index(cold)
    assert index_bytes(warm["results"]) == index_bytes(cold["results"])
    assert sum(result.counts().values()) == 16


def paths_of(config) -> set[str]:
    result = scan(config)
    return {line.split("\t")[0] for lists in result.shards.values() for s in lists for line in s}


def test_added_removed_and_renamed_files_are_seen(tree, tmp_path):
    config = configure(tree, tmp_path / "r")
    before = paths_of(config)
    (tree / "train" / "n01" / "n01_0.JPEG").rename(tree / "train" / "n01" / "moved.JPEG")
    (tree / "train" / "n02" / "inner" / "inner_1.JPEG").unlink()
    (tree / "validation" / "n01" / "new.JPEG").write_bytes(b"x")
    after = paths_of(config)
    assert before - after == {
        f"{tree}/train/n01/n01_0.JPEG",
        f"{tree}/train/n02/inner/inner_1.JPEG",
    }
    assert after - before == {f"{tree}/train/n01/moved.JPEG", f"{tree}/validation/n01/new.JPEG"}
    assert paths_of(configure(tree, tmp_path / "fresh", rescan=True)) == after


def sizes_of(config) -> dict[str, tuple[int, int]]:
    result = scan(config)
    rows = [line.split("\t") for lists in result.shards.values() for s in lists for line in s]
    return {row[0]: (int(row[2]), int(row[3])) for row in rows}


def test_a_file_rewritten_in_place_is_missed_until_a_rescan(tree, tmp_path):
    config = configure(tree, tmp_path / "r")
    before = sizes_of(config)
    target = tree / "train" / "n02" / "n02_1.JPEG"
    stat = target.stat()
    with open(target, "ab") as handle:  # in place: its folder's mtime does not change
        handle.write(b"more")
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert sizes_of(config) == before  # the documented miss
    rescanned = sizes_of(configure(tree, tmp_path / "r", rescan=True))
    assert rescanned[str(target)] == (stat.st_size + 4, stat.st_mtime_ns + 10**9)
    assert sizes_of(config) == rescanned  # the rescan refreshed the cache


def test_a_damaged_or_foreign_cache_is_ignored_and_rewritten(tree, tmp_path):
    config = configure(tree, tmp_path / "r")
    scan(config)
    caches = sorted((index_dir(config["results"]) / "cache" / "folders").glob("*.scan"))
    assert len(caches) == 2  # one per split folder
    target = tree / "train" / "n01" / "n01_2.JPEG"
    good = {cache: cache.read_bytes() for cache in caches}
    for n, damage in enumerate(
        (lambda b: b[:-10], lambda b: b[:-1] + bytes([b[-1] ^ 1]), lambda b: b"")
    ):
        for cache, data in good.items():
            cache.write_bytes(damage(data))
        os.utime(target, ns=(n + 1, n + 1))  # a change only a re-stat sees
        assert sizes_of(config)[str(target)][1] == n + 1  # the cache was not trusted
        for cache in caches:
            assert cache.read_bytes().startswith(dircache.FORMAT)  # rewritten
    # a cache made for other settings (another seed) is another file, not this one's
    other = configure(tree, tmp_path / "r")
    other["seed"] = 7
    os.utime(target, ns=(9, 9))
    assert sizes_of(other)[str(target)][1] == 9
    assert len(list(caches[0].parent.glob("*.scan"))) == 4


def test_a_racy_folder_is_listed_again(tree, tmp_path, monkeypatch):
    config = configure(tree, tmp_path / "r")
    folder = tree / "validation" / "n01"
    os.utime(folder, None)  # changed just now: within RACY_SECONDS of the scan
    scan(config)
    counter = CountingLstat(monkeypatch)
    scan(config)
    assert counter.files and all(p.startswith(f"{folder}/") for p in counter.files)
    assert len(counter.files) == 3


def test_resize_fails_naming_a_file_changed_since_the_scan(tmp_path):
    (path,) = make_tree(tmp_path / "src", {"train/n01": 1})
    stat = path.stat()
    params = ResizeParams.from_config(section_config("resize", {}))
    outputs = [tmp_path / f"o.{ext}" for ext in ("tar", "meta.tsv", "rejects.tsv")]
    assert resize_shard([(str(path), -1, stat.st_size, stat.st_mtime_ns)], params, *outputs) == (
        1,
        0,
    )
    with pytest.raises(SourceChangedError) as error:
        resize_shard([(str(path), -1, stat.st_size + 1, stat.st_mtime_ns)], params, *outputs)
    message = str(error.value)
    assert str(path) in message and f"size {stat.st_size + 1} -> {stat.st_size}" in message
    assert "rescan: true" in message
    with pytest.raises(SourceChangedError, match="mtime_ns"):
        resize_shard([(str(path), -1, stat.st_size, 5)], params, *outputs, threads=2)
