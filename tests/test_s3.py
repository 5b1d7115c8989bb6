"""S3: sources under s3://, and the sample workflow run with S3 as Snakemake's default
storage, against moto's S3 server on 127.0.0.1 (no internet, no AWS account).

The S3 packages are not in .venv; they are installed beside it (requirements-aws-test.txt):
    .venv/bin/pip install --no-deps --target .plugins/aws -r requirements-aws-test.txt
`make test` installs them; without them every test here fails, saying so (a skip would
leave S3 untested without anyone noticing).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import REPO, SAMPLE, base_config, jpeg_bytes, make_tree

PLUGINS = REPO / ".plugins" / "aws"
# appended, not prepended: this process keeps .venv's versions of shared packages
if PLUGINS.is_dir() and str(PLUGINS) not in sys.path:
    sys.path.append(str(PLUGINS))
try:
    import boto3
    import snakemake_storage_plugin_s3  # noqa: F401
    from moto.server import ThreadedMotoServer
except ImportError as error:
    MISSING = (
        f"S3 test packages missing or incomplete in {PLUGINS} ({error}); `make test` installs "
        f"them: .venv/bin/pip install --no-deps --target {PLUGINS} -r requirements-aws-test.txt"
    )
else:
    MISSING = None

from imgprep import s3  # noqa: E402
from imgprep.config import ConfigError, validate_config  # noqa: E402
from imgprep.index import scan, update_index  # noqa: E402
from imgprep.kernels.resize import ResizeParams  # noqa: E402
from imgprep.publish import StorageTarget, publish_index  # noqa: E402
from imgprep.stages.resize import resize_shard  # noqa: E402

SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
BUCKET = "imgprep-test"
KEYS = {"access_key": "testing", "secret_key": "testing"}
# a sample run kept small: every shard job costs a process and a TensorFlow import
SPLITS = {"train": {"dir": "train", "shards": 2}, "validation": {"dir": "validation", "shards": 1}}


@pytest.fixture(scope="module", autouse=True)
def s3_packages():
    """First of the module's fixtures: a missing package fails each test, saying which."""
    if MISSING:
        pytest.fail(MISSING, pytrace=False)


@pytest.fixture(scope="module")
def endpoint():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="module")
def bucket(endpoint):
    """A bucket holding a copy of the sample under sample/."""
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=KEYS["access_key"],
        aws_secret_access_key=KEYS["secret_key"],
    )
    client.create_bucket(Bucket=BUCKET)
    upload_tree(client, SAMPLE, "sample")
    return client


@pytest.fixture
def s3_env(endpoint, monkeypatch):
    """This process's imgprep.s3 client, configured the way the workflow configures it."""
    values = {"endpoint_url": endpoint, "region": "us-east-1", **KEYS}
    for name, variable in s3.PLUGIN_ENV.items():
        monkeypatch.setenv(variable, values.get(name, ""))
    monkeypatch.setattr(s3, "_CLIENT", None)


def upload_tree(client, root: Path, prefix: str) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            key = f"{prefix}/{path.relative_to(root).as_posix()}"
            client.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes())


def listing(client, prefix: str) -> dict[str, tuple[str, object]]:
    """key -> (ETag, LastModified) of every object under ``prefix``."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {
        item["Key"]: (item["ETag"], item["LastModified"])
        for page in pages
        for item in page.get("Contents", ())
    }


def body(client, key: str) -> bytes:
    return client.get_object(Bucket=BUCKET, Key=key)["Body"].read()


# -- the scan and the reads ---------------------------------------------------------------


def quirky_tree(root: Path) -> None:
    """Images plus everything the scan must ignore or look through."""
    make_tree(root, {"train/n01": 6, "train/n02": 5, "validation/n01": 3, "validation/n02": 2})
    (root / "train" / "n01" / "nested").mkdir()
    (root / "train" / "n01" / "nested" / "deep.jpg").write_bytes(jpeg_bytes(seed=7))
    (root / "train" / "n01" / ".hidden.JPEG").write_bytes(jpeg_bytes(seed=8))
    (root / "train" / "n02" / ".cache").mkdir()
    (root / "train" / "n02" / ".cache" / "a.JPEG").write_bytes(jpeg_bytes(seed=9))
    (root / "train" / "n02" / ".cache" / "b.JPEG").write_bytes(jpeg_bytes(seed=10))
    (root / "train" / "n02" / "notes.txt").write_text("not an image")
    (root / "train" / "README").write_text("not inside a class folder")
    (root / "train" / ".DS_Store").write_bytes(b"\0")
    (root / "validation" / "n02" / "tab\tname.jpg").write_bytes(jpeg_bytes(seed=11))


def without_paths(result, prefix: str) -> dict:
    """Shard lists with the root prefix cut off and mtimes left out (S3 has its own)."""
    shards = {}
    for split, lists in result.shards.items():
        shards[split] = []
        for members in lists:
            rows = [line.split("\t") for line in members]
            assert all(row[0].startswith(prefix) for row in rows)
            shards[split].append([(row[0][len(prefix) :], row[1], row[2]) for row in rows])
    return shards


@pytest.mark.parametrize("layout", ["split-folders", "class-folders"])
def test_an_s3_source_is_indexed_as_the_same_local_folder(bucket, s3_env, tmp_path, layout):
    local = tmp_path / "src"
    quirky_tree(local)
    if layout == "class-folders":
        local = local / "train"
        splits = {
            "train": {"shards": 3, "fraction": 0.7},
            "validation": {"shards": 1, "fraction": 0.3},
        }
    else:
        splits = {"train": {"shards": 3}, "validation": {"shards": 2}}
    url = f"s3://{BUCKET}/quirky-{layout}"
    upload_tree(bucket, local, url.split("/", 3)[3])
    bucket.put_object(Bucket=BUCKET, Key=url.split("/", 3)[3] + "/", Body=b"")  # folder marker

    def indexed(root):
        source = {"root": root, "layout": layout}
        return scan(
            validate_config(base_config(root, tmp_path / "r", source=source, splits=splits))
        )

    on_disk, in_s3 = indexed(str(local)), indexed(url)
    assert without_paths(in_s3, url + "/") == without_paths(on_disk, f"{local}/")
    assert in_s3.ignored == on_disk.ignored
    assert in_s3.labels == on_disk.labels
    assert ("n02/.cache", "hidden file") in [
        (p.removeprefix("train/"), r) for p, r in in_s3.ignored
    ]
    sizes = {
        row[0]: int(row[2])
        for row in (line.split("\t") for s in in_s3.shards.values() for m in s for line in m)
    }
    assert all(len(s3.read_object(path)) == size for path, size in sizes.items())


def test_a_missing_bucket_or_split_folder_names_the_config_key(bucket, s3_env, tmp_path):
    cases = {
        "s3://no-such-bucket/sample": ("'source.root'", SPLITS),
        f"s3://{BUCKET}/sample": ("'splits.test.dir'", {**SPLITS, "test": {"shards": 1}}),
    }
    for root, (key, splits) in cases.items():
        config = validate_config(base_config(root, tmp_path / "r", splits=splits))
        with pytest.raises(ConfigError, match=key):
            scan(config)


def test_objects_are_read_whole_or_by_range_and_missing_ones_are_rejects(bucket, s3_env, tmp_path):
    key = "sample/train/n02123045/n02123045_1.JPEG"
    data = (SAMPLE / "train" / "n02123045" / "n02123045_1.JPEG").read_bytes()
    url = f"s3://{BUCKET}/{key}"
    assert s3.read_object(url) == data
    assert s3.read_object(url, offset=10, size=20) == data[10:30]
    assert s3.read_object(url, offset=len(data) - 5) == data[-5:]
    assert s3.read_object(url, offset=3, size=0) == b""
    missing = f"s3://{BUCKET}/sample/train/n02123045/missing.JPEG"
    with pytest.raises(FileNotFoundError):
        s3.read_object(missing)

    out = tmp_path / "out"
    resized, rejected = resize_shard(
        [url, missing, f"s3://{BUCKET}/sample/validation/n04266014/ILSVRC2012_val_00048412.JPEG"],
        ResizeParams.from_config(validate_config({"source": {"root": str(SAMPLE)}})["resize"]),
        out / "s.tar",
        out / "s.meta.tsv",
        out / "s.rejects.tsv",
        threads=2,
    )
    assert (resized, rejected) == (1, 2)
    rejects = (out / "s.rejects.tsv").read_text().splitlines()[1:]
    assert rejects[0].startswith(f"1\t{missing}\tunreadable: FileNotFoundError")
    assert rejects[1].startswith("2\ts3://") and "empty" in rejects[1].lower()


def test_index_lists_are_published_only_when_their_content_changes(
    bucket, s3_env, tmp_path, monkeypatch
):
    root = tmp_path / "src"
    make_tree(root, {"train/n01": 8, "train/n02": 8, "validation/n01": 4})
    config = validate_config(
        base_config(root, "results", splits={"train": {"shards": 4}, "validation": {"shards": 1}})
    )
    target = StorageTarget(f"s3://{BUCKET}/publish")
    monkeypatch.chdir(tmp_path)  # relative results, as Snakemake's default storage has them
    first = publish_index(config, update_index(config), target)
    assert len(first) == 4 + 1 + 2  # shard lists, labels, ignored
    before = listing(bucket, "publish/")
    assert publish_index(config, update_index(config), target) == []
    assert listing(bucket, "publish/") == before

    image = sorted((root / "train" / "n02").iterdir())[0]
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    changed = publish_index(config, update_index(config), target)
    assert len(changed) == 1 and changed[0].startswith(
        f"s3://{BUCKET}/publish/results/index/train/"
    )
    assert str(image) in body(bucket, changed[0].split("/", 3)[3]).decode()

    config["splits"]["train"]["shards"] = 2
    changed = publish_index(config, update_index(config), target)
    after = listing(bucket, "publish/results/index/train/")
    assert sorted(after) == [f"publish/results/index/train/{i:05d}.tsv" for i in range(2)]
    assert sum(url.endswith(("00002.tsv", "00003.tsv")) for url in changed) == 2


# -- the sample workflow with S3 as default storage ---------------------------------------


def sample_config(root: str, synsets: str) -> dict:
    with open(REPO / "config.yaml") as handle:
        config = yaml.safe_load(handle)
    config["source"]["root"] = root
    config["labels"]["synsets"] = synsets
    config["splits"] = SPLITS
    config["records"]["schemas"] = ["imagenet"]
    del config["datasets"]  # one dataset, in results/ itself (datasets on S3: below)
    return config


def run(workdir: Path, *args, env=None, profile="local") -> str:
    proc = subprocess.run(
        [*SNAKEMAKE, "--profile", str(REPO / "profiles" / profile), "-d", str(workdir), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    return output


def job_counts(output: str) -> dict[str, int]:
    if "Nothing to be done" in output:
        return {}
    table = output.split("Job stats:", 1)[1]
    return {m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s+(\d+)$", table, re.M) if m[0] != "total"}


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The reference: the same configuration on a local copy of the sample."""
    workdir = tmp_path_factory.mktemp("local")
    shutil.copytree(SAMPLE, workdir / "sample")
    (workdir / "config.yaml").write_text(
        yaml.safe_dump(sample_config("sample", "sample/synsets.txt"))
    )
    run(workdir, "--cores", "2")
    return workdir / "results"


def s3_workdir(workdir: Path, **records) -> Path:
    shutil.copy(SAMPLE / "synsets.txt", workdir / "synsets.txt")  # config: read at parse time
    config = sample_config(f"s3://{BUCKET}/sample", "synsets.txt")
    config["records"].update(records)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    return workdir


def storage_env() -> dict[str, str]:
    """No AWS variable and no AWS file: S3 is known only through Snakemake's options."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SNAKEMAKE_STORAGE_S3"))
    }
    env.update(
        PYTHONPATH=os.pathsep.join([str(PLUGINS), *filter(None, [os.environ.get("PYTHONPATH")])]),
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


def storage_args(endpoint: str, prefix: str) -> list[str]:
    return [
        "--default-storage-provider",
        "s3",
        "--default-storage-prefix",
        prefix,
        "--storage-s3-endpoint-url",
        endpoint,
        "--storage-s3-access-key",
        KEYS["access_key"],
        "--storage-s3-secret-key",
        KEYS["secret_key"],
    ]


@pytest.fixture(scope="module")
def s3_run(bucket, endpoint, tmp_path_factory):
    """The S3 run: sources in s3://.../sample, every input and output under s3://.../run.

    Only --storage-s3-* options say where S3 is and who we are: no AWS variable is set,
    so the scan and the resize jobs must take them from Snakemake.
    """
    workdir = s3_workdir(tmp_path_factory.mktemp("s3"))
    env, storage = storage_env(), storage_args(endpoint, f"s3://{BUCKET}/run")

    def snakemake(*args):
        return run(workdir, *storage, *args, env=env)

    output = snakemake("--cores", "2")
    return {"workdir": workdir, "snakemake": snakemake, "output": output}


def test_records_land_in_s3_byte_identical_to_a_local_run(bucket, local_run, s3_run):
    import tensorflow as tf

    stored = listing(bucket, "run/results/records/")
    local = sorted(p for p in (local_run / "records").rglob("*") if p.is_file())
    assert sorted(stored) == [f"run/results/{p.relative_to(local_run).as_posix()}" for p in local]
    assert not (s3_run["workdir"] / "results" / "records").exists(), "outputs went to S3 only"
    downloaded = s3_run["workdir"] / "downloaded"
    shards = [p for p in local if re.fullmatch(r".+-\d{5}-of-\d{5}", p.name)]
    counts = {}
    for path in local:
        key = f"run/results/{path.relative_to(local_run).as_posix()}"
        data = body(bucket, key)
        assert hashlib.sha256(data).digest() == hashlib.sha256(path.read_bytes()).digest(), key
        if path not in shards:  # index files and TFDS metadata: compared, not parsed
            continue
        target = downloaded / path.name
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(data)
        split = path.name.split("-")[0]
        for record in tf.data.TFRecordDataset(str(target)):
            example = tf.train.Example.FromString(record.numpy())
            assert example.features.feature["image/encoded"].bytes_list.value[0][:2] == b"\xff\xd8"
            counts[split] = counts.get(split, 0) + 1
    local_counts = {
        split: sum(
            1 for f in shards if f.name.startswith(split) for _ in tf.data.TFRecordDataset(str(f))
        )
        for split in SPLITS
    }
    assert counts == local_counts and sum(counts.values()) > 0

    summary = json.loads(body(bucket, "run/results/summary.json"))
    assert summary == json.loads((local_run / "summary.json").read_text())
    for split, entry in summary["splits"].items():
        assert entry["schemas"]["imagenet"]["records"] == counts[split]
        assert entry["schemas"]["imagenet"]["records"] + entry["rejects"] == entry["images"]


def test_the_s3_run_read_its_inputs_from_s3_and_stored_logs_there(bucket, s3_run):
    lists = [k for k in listing(bucket, "run/results/index/") if re.search(r"/\d{5}\.tsv$", k)]
    assert len(lists) == 3
    paths = [
        line.split("\t")[0] for key in lists for line in body(bucket, key).decode().splitlines()[1:]
    ]
    assert paths and all(p.startswith(f"s3://{BUCKET}/sample/") for p in paths)
    assert not (s3_run["workdir"] / "sample").exists()
    keys = listing(bucket, "run/results/")
    for split, spec in SPLITS.items():
        for shard in range(spec["shards"]):
            assert f"run/results/logs/resize/{split}/{shard:05d}.log" in keys
            assert f"run/results/benchmarks/resize/{split}/{shard:05d}.tsv" in keys
    assert "run/results/verify/imagenet.json" in keys


def test_a_second_s3_run_has_nothing_to_do(bucket, s3_run):
    before = listing(bucket, "run/")
    output = s3_run["snakemake"]("--cores", "2")
    assert "Nothing to be done" in output
    assert "0 of 5 index files uploaded" in output
    assert listing(bucket, "run/") == before


def test_reuploading_one_source_image_reruns_only_its_shard(bucket, s3_run):
    key = "sample/train/n02123045/n02123045_3.JPEG"
    data = body(bucket, key)
    stamped = bucket.head_object(Bucket=BUCKET, Key=key)["LastModified"]
    while bucket.head_object(Bucket=BUCKET, Key=key)["LastModified"] == stamped:
        time.sleep(0.5)  # S3 stamps whole seconds: the same second would change nothing
        bucket.put_object(Bucket=BUCKET, Key=key, Body=data)

    output = s3_run["snakemake"]("-n")
    assert "1 of 5 index files uploaded" in output
    assert job_counts(output) == {
        "index_table": 1,
        "resize_shard": 1,
        "records_shard": 1,
        "verify_records": 1,
        "records_metadata": 3,
        "summary": 1,
        "dataset_card": 1,
        "duplicates_audit": 1,  # its meta tables changed
        "report_sheet": 2,
        "report_split": 2,
        "report_dataset": 1,
        "report_duplicates": 1,
        "all": 1,
    }
    lists = listing(bucket, "run/results/index/train/")
    holder = [k for k in lists if f"s3://{BUCKET}/{key}" in body(bucket, k).decode()]
    shard = holder[0].rsplit("/", 1)[1].removesuffix(".tsv")
    resized = re.findall(r"output: s3://\S+/results/resized/(\w+/\d{5})\.tar", output)
    assert resized == [f"train/{shard}"]


def test_datasets_on_s3_share_one_scan_and_land_per_dataset(bucket, endpoint, tmp_path):
    """Two datasets under --default-storage-provider s3: a dataset's planned member lists
    are uploaded with the index, each dataset's records land in its folder and read back,
    and a second invocation has nothing to do."""
    import tensorflow as tf

    workdir = s3_workdir(tmp_path)
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["datasets"] = {
        "full": {"preset": "tpu", "splits": {"train": {"shards": 2}, "validation": {"shards": 1}}},
        "two": {"preset": "tfds", "classes": ["n02123045", "n07920052"], "resize": {"size": 64}},
    }
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    storage = storage_args(endpoint, f"s3://{BUCKET}/datasets")
    run(workdir, *storage, "--cores", "2", env=storage_env())
    keys = listing(bucket, "datasets/results/")
    assert any(k.startswith("datasets/results/index/datasets/two/train/") for k in keys)
    assert len({k.split("/")[3] for k in keys if k.startswith("datasets/results/resized/")}) == 2
    for name in ("full", "two"):
        summary = json.loads(body(bucket, f"datasets/results/{name}/summary.json"))
        for split, entry in summary["splits"].items():
            table = body(bucket, f"datasets/results/{name}/index/{split}.tsv").decode()
            assert entry["images"] == len(table.splitlines()) - 1
            shards = [
                k
                for k in keys
                if re.fullmatch(
                    rf"datasets/results/{name}/records/imagenet/{split}-\d{{5}}-of-\d{{5}}", k
                )
            ]
            records = 0
            for key in shards:
                local = tmp_path / "shards" / name / key.rsplit("/", 1)[1]
                local.parent.mkdir(parents=True, exist_ok=True)
                local.write_bytes(body(bucket, key))
                records += sum(1 for _ in tf.data.TFRecordDataset(str(local)))
            assert records == entry["schemas"]["imagenet"]["records"] > 0, (name, split)
    again = run(workdir, *storage, "--cores", "2", env=storage_env())
    assert "Nothing to be done" in again


def test_the_batch_profile_reserves_what_each_rule_uses(bucket, endpoint, tmp_path):
    """A dry run with profiles/aws-batch: it parses, each job's pool matches its vCPUs
    (a container sees the whole instance), and only the embedding asks for a GPU."""
    workdir = s3_workdir(tmp_path, schemas=["imagenet", "koalarization"])
    output = run(
        workdir,
        *storage_args(endpoint, f"s3://{BUCKET}/profile"),
        "-n",
        "--cores",
        "64",
        env=storage_env(),
        profile="aws-batch",
    )
    jobs = []
    for block in re.findall(r"^rule (\w+):\n((?:    .*\n)+)", output, re.M):
        threads = re.search(r"threads: (\d+)", block[1])
        resources = dict(re.findall(r"(aws_batch_\w+)=([\w-]+)", block[1]))
        jobs.append((block[0], int(threads[1]) if threads else 1, resources))
    assert {rule for rule, _, _ in jobs} >= {"resize_shard", "embed_shard", "records_shard"}
    for rule, threads, resources in jobs:
        assert int(resources["aws_batch_vcpu"]) == threads, rule
        assert int(resources["aws_batch_mem_mb"]) >= 2048, rule
        gpu = rule == "embed_shard"
        assert resources.get("aws_batch_gpu") == ("1" if gpu else None), rule
        assert resources.get("aws_batch_job_queue") == ("imgprep-gpu" if gpu else None), rule
