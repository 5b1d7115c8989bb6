import os
import sys
import time

# scripts/ is on sys.path already: the Snakefile puts it there before it includes this file.
from imgprep.config import ConfigError, validate_config
from imgprep.index import IndexBusy, shard_index_path, update_index
from imgprep.formats import get_format
from imgprep.slim import checkpoint_files
from imgprep.publish import adopt_snakemake_settings, publish_index
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
FORMATS = {schema: get_format(schema) for schema in SCHEMAS}
COMPRESSION = config["records"]["compression"]
# Each format says whether its shards get an index file (TFRecord formats: DALI's
# fn.readers.tfrecord and the tfrecord package seek by one, for uncompressed files only).
INDEXED_SCHEMAS = [s for s, f in FORMATS.items() if f.has_record_index(COMPRESSION)]
UNINDEXED_SCHEMAS = [s for s in SCHEMAS if s not in INDEXED_SCHEMAS]


def any_of(patterns):
    """One regex matching any of `patterns` (a wildcard constraint from the registry)."""
    return "|".join(f"(?:{pattern})" for pattern in dict.fromkeys(patterns))


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
    """The shard's path in records/<schema>/: the format names it (imgprep.formats)."""
    return FORMATS[schema].shard_path(split, int(shard), config["splits"][split]["shards"])


def record_wildcards(schema, split, shard):
    """The records rules' wildcards for the shard: its folder ("" or "<folder>/") and file."""
    folder, _, file = record_name(schema, split, shard).rpartition("/")
    return {"schema": schema, "folder": f"{folder}/" if folder else "", "file": file}


def record_shard(schema, split, shard):
    return f"{RESULTS}/records/{schema}/{record_name(schema, split, shard)}"


def record_sources():
    """(schema, name in records/<schema>/) -> (split, shard); two splits that a format
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
# the records rules' `file` and the metadata rule's `metafile`: what the formats name
RECORD_FILE = any_of(f.name_pattern for f in FORMATS.values())
METADATA_FILE = any_of(f.metadata_pattern for f in FORMATS.values())


def record_source(wildcards):
    """(split, shard) of a records file."""
    name = f"{wildcards.folder}{wildcards.file}"
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
    what the format needs: pin paths (ravel) and embeddings (embed; or taken with
    embed.in_records)."""
    split, shard = record_source(wildcards)
    spec = FORMATS[wildcards.schema]
    inputs = {
        "index": shard_index(split, shard),
        "labels": LABELS_TSV,
        "tar": f"{RESULTS}/resized/{split}/{shard}.tar",
        "meta": f"{RESULTS}/resized/{split}/{shard}.meta.tsv",
    }
    if "ravel" in spec.needs:
        inputs["targets"] = f"{RESULTS}/ravel/{split}/{shard}.npy"
    elif spec.uses_embeddings(config):
        inputs["embeddings"] = f"{RESULTS}/embed/{split}/{shard}.npy"
    return inputs


def record_n_pins(wildcards):
    """Pins of the ravel targets, for the formats that store them."""
    return config["ravel"]["pins"] if "ravel" in FORMATS[wildcards.schema].needs else None


def record_mem_mb(wildcards, attempt):
    """What one records job of the format holds (its mem_mb request), more on a retry."""
    return FORMATS[wildcards.schema].memory_mb * attempt


def record_shards(schema, split):
    return [record_shard(schema, split, shard) for shard in shard_ids(split)]


def record_paths(schema):
    """Per split, the shard paths relative to the format's folder, in shard order."""
    return {
        split: [record_name(schema, split, shard) for shard in shard_ids(split)] for split in SPLITS
    }


def records_metadata_outputs():
    """The metadata files of every format's folder (none for compressed TFRecords)."""
    return [
        f"{RESULTS}/records/{schema}/{name}"
        for schema, spec in FORMATS.items()
        for name in spec.metadata_files(SPLITS, COMPRESSION)
    ]


def verify_inputs(wildcards):
    """verify_records' inputs by name: the labels, and per shard `<split>/<shard>/<role>`
    (record, sha256, index, rejects and, where the format writes one, record_index)."""
    spec = FORMATS[wildcards.schema]
    # apply_wildcards, not str.format: under --default-storage-provider s3 these are
    # storage objects, which only apply_wildcards fills in with their storage query
    outputs = rules.records_shard.output
    inputs = {"labels": LABELS_TSV}
    for split in SPLITS:
        for shard in shard_ids(split):
            made = record_wildcards(wildcards.schema, split, shard)
            inputs[f"{split}/{shard}/record"] = outputs.record.apply_wildcards(made)
            inputs[f"{split}/{shard}/sha256"] = outputs.sha256.apply_wildcards(made)
            inputs[f"{split}/{shard}/index"] = shard_index(split, shard)
            inputs[f"{split}/{shard}/rejects"] = f"{RESULTS}/rejects/{split}/{shard}.tsv"
            if spec.has_record_index(COMPRESSION):
                inputs[f"{split}/{shard}/record_index"] = outputs.index.apply_wildcards(made)
    return inputs


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


def verify_full():
    """verify.full: a token new in every invocation, so the params change and every
    verification re-runs, reading every shard (its cache ignored)."""
    return f"full {time.time_ns()}" if config["verify"]["full"] else False
