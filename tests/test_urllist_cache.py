"""The URL list's parse cache (sources.url_list.shard_lists, imgprep.parsecache) and the
index's digest-known lists: a warm scan reads the cache, not the list, and writes the same
bytes; anything the lists depend on invalidates it."""

import os

import pytest
from imgprep import parsecache
from imgprep.config import validate_config
from imgprep.files.tables import IndexRow
from imgprep.index import _index_files, _sorted_shards, cache_dir, index_dir, scan, update_index
from imgprep.parsecache import ShardList
from imgprep.sources import url_list

LINES = [
    f"n{c:08d}_{i}\thttp://farm{c}.example.com/{c}/{i}_ab.jpg" for c in range(3) for i in range(40)
]
EXTRA = [
    "# a comment",
    "",
    "not a url at all",
    "n00000000_3\thttp://dup.example.com/again.jpg",  # duplicate key
    "http://plain.example.com/unlabelled.jpg",
    "n00000009_1\thttp://example.com/caf\xe9.jpg",  # non-ASCII: percent-encoded
]


def make_config(tmp_path, lines=None, **overrides):
    urls = tmp_path / "urls.txt"
    if not urls.exists():
        urls.write_bytes(("\n".join(lines or LINES + EXTRA) + "\n").encode("latin-1"))
    config = {
        "results": str(tmp_path / "results"),
        "source": {"type": "urls", "urls": str(urls)},
        "splits": {
            "train": {"fraction": 0.75, "shards": 3},
            "validation": {"fraction": 0.25, "shards": 2},
        },
    }
    config.update(overrides)
    return validate_config(config)


def index_bytes(config) -> dict[str, bytes]:
    folder = index_dir(config["results"])
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*.tsv"))
        if "cache" not in path.parts
    }


def classic_files(config) -> dict[str, bytes]:
    """What the index made before the cache: url_list.scan rows, sorted by index.scan."""
    found = url_list.scan(config, cache_dir(config["results"]))
    shards = _sorted_shards(found, config["splits"], {})
    result = scan(config)
    result.shards = shards
    return {name: data for name, data in _index_files(result) if isinstance(data, bytes)}


@pytest.fixture
def count_parses(monkeypatch):
    calls = []
    real = url_list.iter_url_list

    def counting(path, problems):
        calls.append(path)
        return real(path, problems)

    monkeypatch.setattr(url_list, "iter_url_list", counting)
    return calls


def test_the_lists_are_the_ones_the_rows_made(tmp_path):
    config = make_config(tmp_path)
    update_index(config)
    files = index_bytes(config)
    assert files == {name: data for name, data in classic_files(config).items() if name in files}
    assert set(files) == {
        "labels.tsv",
        "ignored.tsv",
        *(f"train/0000{i}.tsv" for i in range(3)),
    } | {
        "validation/00000.tsv",
        "validation/00001.tsv",
    }
    ignored = files["ignored.tsv"].decode()
    assert "duplicate key 'n00000000_3'" in ignored and "not an http(s) URL" in ignored
    rows = [
        line
        for name, data in files.items()
        if "/" in name
        for line in data.decode().splitlines()[1:]
    ]
    assert len(rows) == len(LINES) + 2  # the unlabelled and the percent-encoded one
    assert "http://example.com/caf%E9.jpg\tn00000009\t-1\t0\t-1\t" in rows
    assert IndexRow("u", "c").line().split("\t", 2)[2] == url_list._LINE_REST


def test_a_warm_scan_reads_the_cache_not_the_list(tmp_path, count_parses):
    config = make_config(tmp_path)
    update_index(config)
    cold = index_bytes(config)
    assert len(count_parses) == 1
    mtimes = {p: p.stat().st_mtime_ns for p in index_dir(config["results"]).rglob("*.tsv")}
    result = update_index(config)
    assert len(count_parses) == 1, "the warm scan parsed the list again"
    assert result.changed == []
    assert all(isinstance(s, ShardList) for lists in result.shards.values() for s in lists)
    assert index_bytes(config) == cold
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes


def test_a_lost_index_list_is_rewritten_from_the_cache(tmp_path, count_parses):
    config = make_config(tmp_path)
    update_index(config)
    cold = index_bytes(config)
    shard = index_dir(config["results"]) / "train" / "00001.tsv"
    shard.unlink()
    assert update_index(config).changed == ["train/00001.tsv"]
    other = index_dir(config["results"]) / "train" / "00002.tsv"
    other.write_bytes(other.read_bytes() + b"edited\n")  # edited in place: stamp changes
    assert update_index(config).changed == ["train/00002.tsv"]
    assert index_bytes(config) == cold
    assert len(count_parses) == 1


@pytest.mark.parametrize("change", ["append", "touch"])
def test_a_changed_list_invalidates_the_cache(tmp_path, count_parses, change):
    config = make_config(tmp_path)
    update_index(config)
    urls = tmp_path / "urls.txt"
    if change == "append":
        with open(urls, "a") as handle:
            handle.write("n00000001_999\thttp://farm1.example.com/new.jpg\n")
    else:
        stat = urls.stat()
        os.utime(urls, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    result = update_index(config)
    assert len(count_parses) == 2
    rows = sum(result.counts().values())
    assert rows == len(LINES) + 2 + (change == "append")
    assert (len(result.changed) == 1) == (change == "append")  # the new URL's shard only
    update_index(config)
    assert len(count_parses) == 2, "the re-parse was not cached"


@pytest.mark.parametrize(
    "setting",
    [
        {"seed": 7},
        {
            "splits": {
                "train": {"fraction": 0.5, "shards": 3},
                "validation": {"fraction": 0.5, "shards": 2},
            }
        },
        {
            "splits": {
                "train": {"fraction": 0.75, "shards": 4},
                "validation": {"fraction": 0.25, "shards": 2},
            }
        },
    ],
)
def test_a_setting_change_invalidates_the_cache(tmp_path, count_parses, setting):
    update_index(make_config(tmp_path))
    config = make_config(tmp_path, **setting)
    update_index(config)
    assert len(count_parses) == 2
    files = index_bytes(config)
    assert files == {name: data for name, data in classic_files(config).items() if name in files}


def only_cache_file(config):
    (found,) = cache_dir(config["results"]).glob("*.urls")
    return found


def test_a_damaged_trailer_is_ignored_and_rewritten(tmp_path, count_parses):
    config = make_config(tmp_path)
    update_index(config)
    cold = index_bytes(config)
    cache = only_cache_file(config)
    data = bytearray(cache.read_bytes())
    data[-80] ^= 1  # in the trailer's digest line or JSON
    cache.write_bytes(bytes(data))
    assert update_index(config).changed == []
    assert len(count_parses) == 2
    assert index_bytes(config) == cold
    assert parsecache.load(
        cache, url_list._cache_key(config, tmp_path / "urls.txt", os.stat(tmp_path / "urls.txt"))
    )


def test_damaged_section_bytes_are_parsed_again_when_needed(tmp_path, count_parses):
    config = make_config(tmp_path)
    update_index(config)
    cold = index_bytes(config)
    cache = only_cache_file(config)
    with open(cache, "r+b") as handle:  # the first section's first byte: in train/00000
        handle.seek(len(parsecache._MAGIC))
        first = handle.read(1)
        handle.seek(len(parsecache._MAGIC))
        handle.write(bytes([first[0] ^ 0x20]))
    (index_dir(config["results"]) / "train" / "00000.tsv").unlink()
    assert update_index(config).changed == ["train/00000.tsv"]
    assert len(count_parses) == 2
    assert index_bytes(config) == cold


def test_a_foreign_cache_file_is_ignored(tmp_path, count_parses):
    config = make_config(tmp_path)
    update_index(config)
    cache = only_cache_file(config)
    cache.write_bytes(b"something else entirely\n")
    update_index(config)
    assert len(count_parses) == 2
    assert cache.read_bytes().startswith(parsecache._MAGIC)


def test_a_list_changed_while_parsed_is_not_cached(tmp_path, monkeypatch):
    config = make_config(tmp_path)
    urls = tmp_path / "urls.txt"
    real = url_list.iter_url_list

    def changing(path, problems):
        yield from real(path, problems)
        with open(urls, "a") as handle:  # another writer, mid-parse
            handle.write("n00000002_777\thttp://late.example.com/x.jpg\n")

    monkeypatch.setattr(url_list, "iter_url_list", changing)
    result = update_index(config)
    assert sum(result.counts().values()) == len(LINES) + 2  # what was read, not the line after
    assert not list(cache_dir(config["results"]).glob("*.urls"))
    monkeypatch.setattr(url_list, "iter_url_list", real)
    assert sum(update_index(config).counts().values()) == len(LINES) + 3
    assert len(list(cache_dir(config["results"]).glob("*.urls"))) == 1


def test_datasets_with_lists_of_their_own_place_from_the_rows(tmp_path, count_parses):
    config = make_config(
        tmp_path,
        datasets={"sub": {"splits": {"train": {"fraction": 0.5, "shards": 2}, "validation": {}}}},
    )
    result = update_index(config)
    assert not list(cache_dir(config["results"]).glob("*.urls"))
    assert len(result.placed["train"]) == sum(len(s) for s in result.shards["train"])
