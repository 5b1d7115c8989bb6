import os
import sys
import time

# scripts/ is on sys.path already: the Snakefile puts it there before it includes this file.
from imgprep.config import ConfigError, validate_config
from imgprep.index import IndexBusy, shard_index_path, update_index
from imgprep.records import record_index_path, shard_path
from imgprep.slim import checkpoint_files
from imgprep.tfds_metadata import LABELS_FILE as TFDS_LABELS_FILE
from imgprep.tfds_metadata import metadata_files
from imgprep.s3_index import adopt_snakemake_settings, publish_index
from imgprep.report import failure_report, success_report
from imgprep.slurm import job_cpu_limit
from imgprep.upstream import upstream_digest

try:
    _validated = validate_config(config)
except ConfigError as error:
    raise WorkflowError(str(error)) from None
config.clear()
config.update(_validated)

RESULTS = config["results"]
RUN_STARTED = time.time()
SPLITS = list(config["splits"])
SCHEMAS = config["records"]["schemas"]
# DALI's fn.readers.tfrecord and the tfrecord package seek by an index, and TFDS opens
# TFRecords uncompressed: index files and TFDS metadata exist for uncompressed shards only.
UNCOMPRESSED = config["records"]["compression"] == "none"


wildcard_constraints:
    split="|".join(SPLITS),
    shard=r"\d{5}",
    schema="|".join(SCHEMAS),


# --storage-s3-* settings also serve an s3:// source's scan and the jobs that read it;
# with --default-storage-provider s3 the index lists must be in that storage too.
S3_STORAGE = adopt_snakemake_settings(workflow)

# The scan of the sources runs once, in the process that plans the jobs; cluster jobs
# re-parse this file and must not walk a million files again.
# A build holds the index lock until it ends; a dry run beside it plans from private
# copies of the changed index files (INDEX.pending) and leaves the build's files alone.
INDEX = None
if workflow.is_main_process:
    try:
        INDEX = update_index(config, dryrun=workflow.output_settings.dryrun)
    except IndexBusy as error:
        raise WorkflowError(str(error)) from None
    if not INDEX.pending:
        publish_index(config, INDEX, S3_STORAGE)


def index_file(name):
    """An index file (train/00001.tsv, labels.tsv) as this invocation plans with it."""
    if INDEX is not None and name in INDEX.pending and S3_STORAGE is None:
        return INDEX.pending[name]
    return f"{RESULTS}/index/{name}"


LABELS_TSV = index_file("labels.tsv")
IGNORED_TSV = index_file("ignored.tsv")


def stage_threads(stage):
    """A rule's threads: ``threads.<stage>``, lowered to what one SLURM job can get
    (the largest node's CPUs), so `--profile profiles/slurm` needs no --max-threads."""

    def threads(wildcards):
        wanted = config["threads"][stage]
        executor = getattr(workflow.executor_plugin, "name", None)
        limit = job_cpu_limit(executor, workflow.remote_exec)
        if limit is None or wanted <= limit:
            return wanted
        if workflow.is_main_process and stage not in _LOWERED_THREADS:
            _LOWERED_THREADS.add(stage)
            print(
                f"threads.{stage}: {wanted} lowered to {limit}, the CPUs of the largest "
                "SLURM node",
                file=sys.stderr,
            )
        return limit

    return threads


_LOWERED_THREADS = set()


def shard_ids(split):
    return [f"{i:05d}" for i in range(config["splits"][split]["shards"])]


def shard_index(split, shard):
    return index_file(shard_index_path("", split, shard).relative_to("index").as_posix())


def record_name(schema, split, shard):
    """The shard's path in records/<schema>/: the schema names it (imgprep.records)."""
    return shard_path(schema, split, int(shard), config["splits"][split]["shards"])


def record_shard(schema, split, shard):
    return f"{RESULTS}/records/{schema}/{record_name(schema, split, shard)}"


def record_sources():
    """(schema, name in records/<schema>/) -> (split, shard); two splits that a schema
    names alike (koalarization: val and validation) are a configuration error."""
    sources = {}
    for schema in SCHEMAS:
        for split in SPLITS:
            for shard in shard_ids(split):
                name = record_name(schema, split, shard)
                other = sources.setdefault((schema, name), (split, shard))[0]
                if other != split:
                    raise WorkflowError(
                        f"config key 'splits.{split}': schema {schema} names splits "
                        f"{other} and {split} alike ({name})"
                    )
    return sources


RECORD_SOURCES = record_sources()


def record_source(wildcards):
    """(split, shard) of a records file (tangler's in a folder per split)."""
    name = wildcards.name
    if "folder" in wildcards.keys():
        name = f"{wildcards.folder}/{name}"
    try:
        return RECORD_SOURCES[(wildcards.schema, name)]
    except KeyError:
        raise ValueError(
            f"records/{wildcards.schema}/{name} is no shard of this configuration"
        ) from None


def resize_inputs(wildcards):
    """The shard's list; for a URL list also what download_shard fetched."""
    inputs = {"index": shard_index(wildcards.split, wildcards.shard)}
    if config["source"]["type"] == "urls":
        # paths, not rules.download_shard.output: with --default-storage-provider s3 that
        # is a storage object, which expand() and str.format refuse or lose
        inputs["downloads"] = f"{RESULTS}/downloads/{wildcards.split}/{wildcards.shard}.tar"
        inputs["download_status"] = f"{RESULTS}/downloads/{wildcards.split}/{wildcards.shard}.tsv"
    return inputs


def source_read_params():
    """How resize_shard reads source files: the byte cap, and symlinks followed only for a
    manifest, which names its files (a folder scan never indexes a symlink)."""
    return {
        "max_file_bytes": config["source"]["max_file_bytes"],
        "follow_symlinks": config["source"]["type"] == "manifest",
    }


def embed_params():
    """What the embeddings depend on (lab_size and in_records do not change them)."""
    keys = ("model", "weights", "output", "input_size", "batch_size", "seed")
    return {key: config["embed"][key] for key in keys}


def embed_weights(wildcards):
    """A weights file as an input (a TF checkpoint is several): a changed one re-runs the
    embeddings. None for random weights and Keras' ImageNet download."""
    weights = config["embed"]["weights"]
    if weights in (None, "imagenet"):
        return {}
    return {"weights": checkpoint_files(weights) or weights}


def record_inputs(wildcards):
    """A records job's inputs: the shard's list, labels, resized images and meta, plus
    pin paths (tangler) and embeddings (koalarization; others with embed.in_records)."""
    split, shard = record_source(wildcards)
    inputs = {
        "index": shard_index(split, shard),
        "labels": LABELS_TSV,
        "tar": f"{RESULTS}/resized/{split}/{shard}.tar",
        "meta": f"{RESULTS}/resized/{split}/{shard}.meta.tsv",
    }
    if wildcards.schema == "tangler":
        inputs["targets"] = f"{RESULTS}/ravel/{split}/{shard}.npy"
    elif wildcards.schema == "koalarization" or config["embed"]["in_records"]:
        inputs["embeddings"] = f"{RESULTS}/embed/{split}/{shard}.npy"
    return inputs


def record_n_pins(wildcards):
    """Pins of the ravel targets, for the schema that stores them."""
    return config["ravel"]["pins"] if wildcards.schema == "tangler" else None


def record_shards(schema, split):
    return [record_shard(schema, split, shard) for shard in shard_ids(split)]


def record_index_output(record):
    """The records rules' `index` output for the shard pattern `record`, when shards get one."""
    return {"index": record_index_path(record)} if UNCOMPRESSED else {}


def record_indexes(schema):
    """The index file of every shard of `schema` (none for compressed shards)."""
    if not UNCOMPRESSED:
        return []
    return [record_index_path(r) for split in SPLITS for r in record_shards(schema, split)]


def tfds_record_paths(schema):
    """Per split, the shard paths relative to the schema's folder (TFDS' data_dir)."""
    folder = f"{RESULTS}/records/{schema}/"
    return {
        split: [r.removeprefix(folder) for r in record_shards(schema, split)] for split in SPLITS
    }


def tfds_metadata_setting(schema, key):
    """A setting of the schema's TFDS features; None where the schema's features do not
    use it (so changing it re-runs no other schema's metadata)."""
    if key == "channels" and schema == "imagenet":
        return 3 if config["resize"]["colorspace"] == "rgb" else 1
    if key == "embedding" and schema in ("imagenet", "dlbs"):
        return config["embed"]["in_records"]
    if key == "lab_size" and schema == "koalarization":
        return config["embed"]["lab_size"]
    return None


def tfds_metadata_outputs():
    """TFDS metadata of every schema; none for compressed shards, which TFDS cannot read."""
    if not UNCOMPRESSED:
        return []
    return [f"{RESULTS}/records/{s}/{name}" for s in SCHEMAS for name in metadata_files(s)]


def split_shard_indexes(wildcards):
    return [shard_index(wildcards.split, shard) for shard in shard_ids(wildcards.split)]


def all_rejects():
    """Every shard's rejects table (resize_shard's output `rejects`; written out here, as
    expand() refuses the storage object that output is under --default-storage-provider)."""
    return [
        f"{RESULTS}/rejects/{split}/{shard}.tsv" for split in SPLITS for shard in shard_ids(split)
    ]


def summary_outputs():
    return [f"{RESULTS}/summary.json", f"{RESULTS}/summary.tsv", f"{RESULTS}/rejects.tsv"]


def upstream(stage, schema=None):
    """Digest of the settings a stage's output is made from, its own and upstream ones: a
    params value, so a changed setting re-runs the stage even when the intermediate files
    between (resized tars, ...) are gone."""
    return upstream_digest(config, stage, schema)


def record_checksum(record):
    """The sha256 written with a record shard, in a tree beside records/ (a file next to
    the shards would match the consumers' globs, train-*)."""
    return f"{RESULTS}/checksums/{os.path.relpath(record, RESULTS)}.sha256"


def verify_full():
    """verify.full: a token new in every invocation, so the params change and every
    verification re-runs, reading every shard (its cache ignored)."""
    return f"full {time.time_ns()}" if config["verify"]["full"] else False
