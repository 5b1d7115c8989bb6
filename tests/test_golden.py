"""Golden outputs: the bytes a restructure must keep.

Placement (split, shard and order inside it) is pinned for a fixed tree of paths and a fixed
seed through the public API; the sample's records, their index and checksum files and the
index lists are pinned by sha256. A change here is a change of every dataset built before:
update a pin only on purpose, and say so in the commit.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from helpers import base_config
from imgprep.config import validate_config
from imgprep.index import scan, shard_index_path, update_index
from test_workflow import new_workdir, snakemake

SEED = 7
# fixed names: placement hashes the path relative to the split folder, nothing else
SPLIT_FOLDER_TREE = {
    "train": {"n01440764": 5, "n02102040": 4, "n03000684": 3},
    "validation": {"n01440764": 2, "n02102040": 2, "n03000684": 1},
}
CLASS_FOLDER_TREE = {"n01440764": 6, "n02102040": 5, "n03000684": 4}


def write_tree(root: Path, folders: dict[str, int]) -> None:
    """Empty files: the scan reads names, sizes and mtimes, never pixels."""
    for folder, count in folders.items():
        (root / folder).mkdir(parents=True)
        for i in range(count):
            (root / folder / f"{Path(folder).name}_{i:03d}.JPEG").write_bytes(b"")


def split_folder_config(tmp: Path) -> dict:
    root = tmp / "src"
    for split, classes in SPLIT_FOLDER_TREE.items():
        write_tree(root / split, classes)
    splits = {"train": {"shards": 4}, "validation": {"shards": 2}}
    return validate_config(base_config(root, tmp / "results", splits=splits, seed=SEED))


def class_folder_config(tmp: Path) -> dict:
    root = tmp / "src"
    write_tree(root, CLASS_FOLDER_TREE)
    # 4 and 2 shards, not 3: 256 % 3 == 1, so a number modulo 3 does not depend on the byte
    # order it is read in, and a changed byte order would pass unnoticed
    splits = {
        "train": {"fraction": 0.75, "shards": 4},
        "validation": {"fraction": 0.25, "shards": 2},
    }
    source = {"root": str(root), "layout": "class-folders"}
    return validate_config(
        base_config(root, tmp / "results", splits=splits, source=source, seed=SEED)
    )


def placement(config: dict) -> dict[str, list[list[str]]]:
    """Per split, per shard, the paths (relative to source.root) in shard order."""
    root = config["source"]["root"] + "/"
    result = scan(config)
    return {
        split: [[path.removeprefix(root) for path in result.paths(split, shard)]
                for shard in range(len(shards))]
        for split, shards in result.shards.items()
    }  # fmt: skip


SPLIT_FOLDERS = {
    "train": [
        [
            "train/n03000684/n03000684_001.JPEG",
            "train/n01440764/n01440764_000.JPEG",
            "train/n02102040/n02102040_002.JPEG",
            "train/n02102040/n02102040_003.JPEG",
        ],
        ["train/n01440764/n01440764_002.JPEG", "train/n03000684/n03000684_000.JPEG"],
        ["train/n02102040/n02102040_001.JPEG", "train/n01440764/n01440764_003.JPEG"],
        [
            "train/n01440764/n01440764_001.JPEG",
            "train/n03000684/n03000684_002.JPEG",
            "train/n02102040/n02102040_000.JPEG",
            "train/n01440764/n01440764_004.JPEG",
        ],
    ],
    "validation": [
        ["validation/n02102040/n02102040_001.JPEG", "validation/n01440764/n01440764_000.JPEG"],
        [
            "validation/n01440764/n01440764_001.JPEG",
            "validation/n02102040/n02102040_000.JPEG",
            "validation/n03000684/n03000684_000.JPEG",
        ],
    ],
}
CLASS_FOLDERS = {
    "train": [
        [
            "n03000684/n03000684_001.JPEG",
            "n01440764/n01440764_000.JPEG",
            "n02102040/n02102040_003.JPEG",
        ],
        ["n01440764/n01440764_005.JPEG", "n03000684/n03000684_000.JPEG"],
        [],
        [
            "n01440764/n01440764_001.JPEG",
            "n03000684/n03000684_002.JPEG",
            "n02102040/n02102040_000.JPEG",
        ],
    ],
    "validation": [
        [
            "n02102040/n02102040_001.JPEG",
            "n02102040/n02102040_002.JPEG",
            "n01440764/n01440764_003.JPEG",
        ],
        [
            "n03000684/n03000684_003.JPEG",
            "n01440764/n01440764_002.JPEG",
            "n02102040/n02102040_004.JPEG",
            "n01440764/n01440764_004.JPEG",
        ],
    ],
}


def test_placement_of_split_folders_is_pinned(tmp_path):
    assert placement(split_folder_config(tmp_path)) == SPLIT_FOLDERS


def test_placement_of_hash_drawn_splits_is_pinned(tmp_path):
    assert placement(class_folder_config(tmp_path)) == CLASS_FOLDERS


def test_the_written_shard_lists_keep_the_pinned_order(tmp_path):
    config = split_folder_config(tmp_path)
    update_index(config)
    root = config["source"]["root"] + "/"
    for split, shards in SPLIT_FOLDERS.items():
        for shard, paths in enumerate(shards):
            lines = shard_index_path(config["results"], split, shard).read_text().splitlines()
            assert [line.split("\t", 1)[0].removeprefix(root) for line in lines[1:]] == paths


# -- the embedded sample ---------------------------------------------------------------

# every file of the copied sample gets this mtime: the index lists record it (a changed
# file is re-read), and a checkout's mtimes are the time it was made
SAMPLE_MTIME_NS = 1_700_000_000_123_456_789
# what the sample run's sha256 is pinned for: the shards (TFRecords), their DALI/tfrecord
# index files and checksums, the index lists and the resized tars records are made from
# (TFDS' JSON metadata, the logs and index/cache/ are left out: they hold versions, times
# and inodes)
PINNED = (
    "records/*/*-of-*",
    "records/*/idx/*",
    "checksums/**/*.sha256",
    "index/**/*.tsv",
    "resized/*/*",
)


def sample_hashes(work: Path) -> dict[str, str]:
    results = work / "results"
    paths = {p for pattern in PINNED for p in results.glob(pattern) if p.is_file()}
    # index/cache/ (scan caches, written.tsv) holds inodes and times: not outputs
    paths = {p for p in paths if "cache" not in p.relative_to(results).parts}
    return {
        p.relative_to(results).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(paths)
    }


def run_sample(base: Path) -> Path:
    """The default configuration on a copy of the sample, its files' mtimes fixed."""
    work = new_workdir(base)
    for path in [work / "sample", *(work / "sample").rglob("*")]:
        os.utime(path, ns=(SAMPLE_MTIME_NS, SAMPLE_MTIME_NS), follow_symlinks=False)
    snakemake(work, "--cores", "2")
    return work


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    return run_sample(tmp_path_factory.mktemp("golden") / "sample")


# `cd results && sha256sum <file>` for each pinned file
SAMPLE_SHA256 = dict(
    line.split()[::-1]
    for line in """
3fd2a38412c8ef4aee890389d356d72412bd4a174a18973d6fce9aedc336225c  checksums/records/dlbs/train-00000-of-00004.sha256
3df7bcb07245fd151f5b4fd468f14fa620c856fc72416f392240094267b59bea  checksums/records/dlbs/train-00001-of-00004.sha256
0ca690514416f2448869ecb54285c4cae720670c5196fc4129e288face59ae96  checksums/records/dlbs/train-00002-of-00004.sha256
9f8fe4c68d191c4e4ac91c485de3e80d7af976e74263a527e9ef6497d67d4c7f  checksums/records/dlbs/train-00003-of-00004.sha256
5e6dc0678f01b9f0d98a22a3e45f9d620ba3c284cc8819a4294f91cb1daba9f4  checksums/records/dlbs/validation-00000-of-00002.sha256
04d0d0c1e6409ce4de2b3f6074731065b28b83cbbc032d0c7cc7ce9de623765c  checksums/records/dlbs/validation-00001-of-00002.sha256
e1795043ddf9484a3c7da67ab6317e87cd1a34b4007d5f068074f873cf6f5d20  checksums/records/imagenet/train-00000-of-00004.sha256
74370127942205477b96f5d359740324a91346ac08ec848f062588f1e6eeb4c5  checksums/records/imagenet/train-00001-of-00004.sha256
c177866a454c82bafbb7363327c8967d348f6ae8f055c2da1a07101752ebec0d  checksums/records/imagenet/train-00002-of-00004.sha256
c47db92818a4e051a196f0f1449929ab9104d82beb3310aae2bb03162c7f280c  checksums/records/imagenet/train-00003-of-00004.sha256
6c3580f7e011424e5feaa79d2fc52f6b2627526993c4b2cd072459a446756a5b  checksums/records/imagenet/validation-00000-of-00002.sha256
7eecf3cd6c332ff4642815d0c2a55670bf21ebf031db22676d2cabb75b4999f0  checksums/records/imagenet/validation-00001-of-00002.sha256
ea4723b81ccf2addaec7144881463db9e06881a4fe2667fff81708530dc6194d  index/ignored.tsv
3b68c79af50cfd0d8b09caff8f40268f13f92197052f4d86363e9ae43c175e17  index/labels.tsv
5299b6644ad093e4ea545f5508490cdec87f16dd0558ee86e0b6aaaae6b9d889  index/train/00000.tsv
6c76e781a88a187bebca81abc59eb5aeb03f5890265a59e1dae41285d02b93af  index/train/00001.tsv
ba561a1cae6b39ec7d98ae94135bb5b9bca3781514453e0c53619ba9301fcfc1  index/train/00002.tsv
93e0e2b9b17eae741b75bd67e46e8d95e741b5685eeb0e413276a4160f49cc49  index/train/00003.tsv
eff82c92620d3fdd51612a289d1cda9b648a2c45dc744aabe8a1284cd6e4e10e  index/train.tsv
cb985239b8a344e704bac5ea9ef47d3e5be573db97e04c9364886f7db61c0508  index/validation/00000.tsv
07104d8042b78a21baf136c257f6cf482cc70d624a0578505f5fc40deb3975cc  index/validation/00001.tsv
93fbec49edcf224d44eacf85c6a86d17d68042bbc3c0d48001035ac991cbc71b  index/validation.tsv
5c9c25f293a7e5949a9fdd83635eff786ea9dec0dd3bc9c1bb64b1cf0e340bd0  records/dlbs/idx/train-00000-of-00004.idx
e9f91a77816665a6024e884958f4e31da7217807536c16f1f04cbd477f6d9b00  records/dlbs/idx/train-00001-of-00004.idx
5d51e5d6af2919ba165793562af9e2d8d7633e55807bbc0fdf7a08f19231009a  records/dlbs/idx/train-00002-of-00004.idx
e117d5e8dd71f305867fb98704fc44a8b6985ba3e017459b54323c8e763831b4  records/dlbs/idx/train-00003-of-00004.idx
8f476856ba3e5c747199c963f74c42c02dc55a2103db498aa46a9d1f73cb03df  records/dlbs/idx/validation-00000-of-00002.idx
c54ba922a0f75d1dd3bd5fbc53e0a23490aea335ba662c708a76d65bdbbf887d  records/dlbs/idx/validation-00001-of-00002.idx
d50b71ba5f295c4db5f5776985f0fd276366628e25369a619e6b2715906ac988  records/dlbs/train-00000-of-00004
61238c1549f0a26d07fbaf914e4f4c5dce712763fbe97933519bfe6f7b36e56b  records/dlbs/train-00001-of-00004
f82a34cfce0a278f10cfcdaa443d7be9ac6702adbaa1f489e0956030a7414cd9  records/dlbs/train-00002-of-00004
fd6a0b5715215710b570088722c94165400568df6707b32abce70b300e5cd2d6  records/dlbs/train-00003-of-00004
96162b7f0d9ce812d8428b48e198b48f36f73cf72c133a31dccac9fdd3b81fe0  records/dlbs/validation-00000-of-00002
3dd286912a6fe9ee6d8058adc4f16b0eafcf093538a4e8f3cdb8308533b8f872  records/dlbs/validation-00001-of-00002
c7f2f1d21e52cae6700e1d5361a5c3da6227f3c4f3033a643009896436ab82f0  records/imagenet/idx/train-00000-of-00004.idx
2420f02ad1f6094f675549de7d0c0021d744a8270ba8f89b57db9b31f92dfe24  records/imagenet/idx/train-00001-of-00004.idx
4c65fe56740faeb897488c1d1d2a5aedde12b0b2de39695b217fa08a6119f016  records/imagenet/idx/train-00002-of-00004.idx
f52278114dbe3fe152cfbd19ee45debfcaeb4c774f1ff1b1a3c534db89f53add  records/imagenet/idx/train-00003-of-00004.idx
a9a99e2f4fc54a2f74de84acac24be2ecd46ac3857f26b529c19fee0568d22b4  records/imagenet/idx/validation-00000-of-00002.idx
69dc7a5b84aeea345679ee93ebacd5718c9b1682a7ffdea57e0cace3d836101d  records/imagenet/idx/validation-00001-of-00002.idx
a7f1574f5030ce8dcde055f5877a4469014ed9c51ccc4be0d8159572cda28c59  records/imagenet/train-00000-of-00004
4a84af128a0fbd93bdbbce843720a04efc78b10d0a4937143f60dfc80ea3e1da  records/imagenet/train-00001-of-00004
7d7fd96f4c932386940c1d167439aedae20785f7f3dc58a1c7b3a0ca4c0bac70  records/imagenet/train-00002-of-00004
3e68f4a3c92e03c41c4fe2e9fd635cc7d58dca487b9889cd701d5b1137b9623a  records/imagenet/train-00003-of-00004
70d5cc658f27ad99cda7a623ae79a6f02676afd2d3c63858d4af03f753e17146  records/imagenet/validation-00000-of-00002
273ec5fbf285a3d20804b2b08228bf1fbe0652c06a7e6252c53c26221ab5318c  records/imagenet/validation-00001-of-00002
48d9d833f4620faee8e193937392268ba2adf3bfecd799c8b195147b33d8841b  resized/train/00000.meta.tsv
4601a2495bceb9271c94539ab9764aa68844b9af68f961733579c6f8af38b121  resized/train/00000.tar
61a7a905e6bab2cb4f3199cc0bebfbf7d3359ecf03fd528b8eebc48ebc0ba244  resized/train/00001.meta.tsv
26887f80b1d2a04088d0d35d008cad814b6de79813de1cfbfc22b6bf5260c47d  resized/train/00001.tar
fc17c26c39615d0ca61d4e069dbcbf42682e3990fc9bca8fe9f4e6c057f2f525  resized/train/00002.meta.tsv
27e72b19e7790ca0df741d88eda41adcb9ea2084b785e94be9243f62164d15fa  resized/train/00002.tar
fe0517f00a9235a83123505a1a1f469653d0bd265e720c40b31a82cb7841f3ec  resized/train/00003.meta.tsv
b91b357a3597ccf5d08ca5f2657025ed3f3e15fc70ccf50dc359c28efbe58543  resized/train/00003.tar
12f468a5f8c44ff3045529aaa0a9f3163cda36a094d3a006bc14c36788e0e922  resized/validation/00000.meta.tsv
858de04bbf134f61f0cdb6482384d8476b5839ba6ddcc319add07aa92281a634  resized/validation/00000.tar
1174b7a2fefcd22a918a2c971ed6cff274833e92460ce20e6ca3f694f7f80324  resized/validation/00001.meta.tsv
2bf9afe13f1ec25ab9f34a1a597323f41f0b0e0d0d39e0b7cadebea549015647  resized/validation/00001.tar
""".splitlines()
    if line
)


def test_the_sample_run_is_pinned_byte_for_byte(sample_run):
    got = sample_hashes(sample_run)
    changed = {name: sha for name, sha in got.items() if SAMPLE_SHA256.get(name) != sha}
    missing = sorted(set(SAMPLE_SHA256) - set(got))
    assert (changed, missing) == ({}, []), "outputs differ from the pinned bytes"


def test_checksum_files_check_their_shard(sample_run):
    """Each ``checksums/records/<schema>/<shard>.sha256`` is ``sha256sum`` output naming
    its shard, so ``cd records/<schema> && sha256sum -c <it>`` checks the shard itself."""
    results = sample_run / "results"
    checked = 0
    for checksum in sorted((results / "checksums" / "records").rglob("*.sha256")):
        relative = checksum.relative_to(results / "checksums").with_suffix("")
        shard = results / relative
        digest, name = checksum.read_text().rstrip("\n").split("  ")
        assert name == shard.name, checksum
        assert hashlib.sha256(shard.read_bytes()).hexdigest() == digest, checksum
        checked += 1
    assert checked == 12
