import functools
import hashlib
import json
import os
import re
import sys
import time

# scripts/ is on sys.path already: the Snakefile puts it there before it includes this file.
from imgprep.config import ConfigError, validate_config
from imgprep.datasets import dataset_list
from imgprep.datasets.selection import downloads_name, labels_name, member_list_name
from imgprep.index import IndexBusy, shard_index_path, update_index
from imgprep.formats import get_format
from imgprep.slim import checkpoint_files
from imgprep.publish import adopt_snakemake_settings, publish_index
from imgprep.report import failure_report, success_report
from imgprep.slurm import job_cpu_limit
from imgprep.upstream import embed_settings, upstream_digest

try:
    _validated = validate_config(config)
except ConfigError as error:
    raise WorkflowError(str(error)) from None
config.clear()
config.update(_validated)

RESULTS = config["results"]
RUN_STARTED = time.time()
SOURCE_SPLITS = config["splits"]
SOURCE_LABEL_BASE = config["labels"]["base"]
# folder ("" without `datasets:`, else "<name>/") -> Dataset: its effective configuration
# (imgprep.datasets) is what every rule of that dataset reads
DATASETS = {dataset.folder: dataset for dataset in dataset_list(config)}
# every split named anywhere: the source's (index, downloads) and the datasets' own
SPLITS = list(dict.fromkeys([*SOURCE_SPLITS, *(s for d in DATASETS.values() for s in d.splits)]))
SCHEMAS = list(dict.fromkeys(s for d in DATASETS.values() for s in d.config["records"]["schemas"]))
FORMATS = {schema: get_format(schema) for schema in SCHEMAS}


def dataset(wildcards):
    """The Dataset of a job (wildcard ``ds``: its folder)."""
    return DATASETS[wildcards.ds]


def settings(wildcards):
    """A job's dataset's effective configuration."""
    return DATASETS[wildcards.ds].config


def stage_settings(stage, section=None):
    """For a per-shard stage job (wildcards key, split): the effective configuration (or
    one ``section`` of it) of the first dataset whose outputs it makes (see stage_key);
    every dataset with that key has the same settings for it."""

    def values(wildcards):
        made_for = DATASETS[STAGE_KEYS[stage][(wildcards.key, wildcards.split)]].config
        return made_for[section] if section else made_for

    return values


def any_of(patterns):
    """One regex matching any of `patterns` (a wildcard constraint from the registry)."""
    return "|".join(f"(?:{pattern})" for pattern in dict.fromkeys(patterns))


def dataset_schemas(indexed):
    """Constraint of the records rules' ``ds``: each dataset's folder, followed by
    [checksums/]records/<a schema of its whose shards get an index file (indexed=True),
    or get none> (a lookahead: whether a shard gets one depends on the format and the
    dataset's compression together, and one rule's outputs are fixed)."""
    choices = []
    for folder, ds in DATASETS.items():
        compression = ds.config["records"]["compression"]
        schemas = [
            schema
            for schema in ds.config["records"]["schemas"]
            if FORMATS[schema].has_record_index(compression) == indexed
        ]
        if schemas:
            choices.append(
                f"{re.escape(folder)}(?=(?:checksums/)?records/(?:{'|'.join(schemas)})/)"
            )
    return "|".join(choices)


INDEXED_RECORDS = dataset_schemas(True)
UNINDEXED_RECORDS = dataset_schemas(False)


wildcard_constraints:
    # (?:) for the folder "": an empty constraint would mean none (.+)
    ds="|".join(f"(?:{re.escape(folder)})" for folder in DATASETS),
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


def shard_ids(ds, split):
    return [f"{i:05d}" for i in range(DATASETS[ds].splits[split]["shards"])]


def source_shard_index(split, shard):
    """A shard list of the source index (what one download job fetches)."""
    return index_file(shard_index_path("", split, shard).relative_to("index").as_posix())


def shard_index(ds, split, shard):
    """A dataset shard's member list: the source's own list, or the dataset's planned one
    (imgprep.datasets.selection)."""
    return index_file(member_list_name(DATASETS[ds], split, shard))


def members_origin(ds, split):
    """Whose member lists a dataset split's shards have: "source" (the index's own) or the
    dataset's name (its planned lists)."""
    spec = DATASETS[ds]
    return "source" if spec.same_as_source(split) else spec.name


@functools.cache  # called for every job's inputs: the digest once per dataset split
def stage_key(ds, split, stage):
    """The folder (under results/<stage>/, <stage> resized, ravel or embed) of a dataset
    split's per-shard outputs: "" without `datasets:`, else a digest of what they are made
    from (the stage's and its upstream settings, and whose member lists). Datasets that
    resize (ravel, embed) alike share one set of files; a dataset whose settings change
    gets a folder of its own and leaves the others' files, and jobs, alone."""
    if not DATASETS[ds].folder:
        return ""
    made_from = f"{upstream_digest(DATASETS[ds].config, stage)} {members_origin(ds, split)}"
    return hashlib.sha256(made_from.encode()).hexdigest()[:12] + "/"


def stage_keys(stage, needed):
    """(key, split) -> the first dataset folder with that key, for the datasets whose
    formats need the stage (``needed(dataset)``): whose settings the stage's jobs read."""
    keys = {}
    for ds, spec in DATASETS.items():
        if needed(spec):
            for split in spec.splits:
                keys.setdefault((stage_key(ds, split, stage), split), ds)
    return keys


def needs_stage(stage):
    def needed(spec):
        return any(
            stage in FORMATS[s].needs
            or (stage == "embed" and FORMATS[s].uses_embeddings(spec.config))
            for s in spec.config["records"]["schemas"]
        )

    return needed


STAGE_KEYS = {
    "resize": stage_keys("resize", lambda spec: True),
    "ravel": stage_keys("ravel", needs_stage("ravel")),
    "embed": stage_keys("embed", needs_stage("embed")),
}


def key_constraint(stage):
    return "|".join(f"(?:{re.escape(key)})" for key in {k for k, _ in STAGE_KEYS[stage]}) or "(?!)"


# the folders of per-shard stage outputs under results/, and the stage that writes each
STAGE_FOLDERS = {"resized": "resize", "rejects": "resize", "ravel": "ravel", "embed": "embed"}


def stage_path(ds, split, folder, name):
    """A per-shard stage output of a dataset split: results/<folder>/<key><split>/<name>."""
    return f"{RESULTS}/{folder}/{stage_key(ds, split, STAGE_FOLDERS[folder])}{split}/{name}"


def resized_for(stage):
    """A ravel or embed job's resized tar: the one of the dataset it is made for."""

    def tar(wildcards):
        ds = STAGE_KEYS[stage][(wildcards.key, wildcards.split)]
        return stage_path(ds, wildcards.split, "resized", f"{wildcards.shard}.tar")

    return tar


def dataset_labels(ds):
    """The dataset's label map (the source's, unless it selects classes or its own base)."""
    return index_file(labels_name(DATASETS[ds], SOURCE_LABEL_BASE))


def record_name(ds, schema, split, shard):
    """The shard's path in records/<schema>/: the format names it (imgprep.formats)."""
    total = DATASETS[ds].splits[split]["shards"]
    return FORMATS[schema].shard_path(split, int(shard), total)


def record_wildcards(ds, schema, split, shard):
    """The records rules' wildcards for the shard: its folder ("" or "<folder>/") and file."""
    folder, _, file = record_name(ds, schema, split, shard).rpartition("/")
    return {"ds": ds, "schema": schema, "folder": f"{folder}/" if folder else "", "file": file}


def record_shard(ds, schema, split, shard):
    return f"{RESULTS}/{ds}records/{schema}/{record_name(ds, schema, split, shard)}"


def record_sources():
    """(dataset folder, schema, name in records/<schema>/) -> (split, shard); two splits
    that a format names alike (koalarization: val and validation) are a configuration
    error."""
    sources = {}
    for ds, spec in DATASETS.items():
        for schema in spec.config["records"]["schemas"]:
            for split in spec.splits:
                for shard in shard_ids(ds, split):
                    name = record_name(ds, schema, split, shard)
                    other = sources.setdefault((ds, schema, name), (split, shard))[0]
                    if other != split:
                        raise WorkflowError(
                            f"config key '{spec.key(f'splits.{split}')}': schema {schema} "
                            f"names splits {other} and {split} alike ({name})"
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
        return RECORD_SOURCES[(wildcards.ds, wildcards.schema, name)]
    except KeyError:
        raise ValueError(
            f"{wildcards.ds}records/{wildcards.schema}/{name} is no shard of this configuration"
        ) from None


def download_feeds(ds, split, shard):
    """URL lists: the source shards (download jobs) whose images a dataset shard holds."""
    spec = DATASETS[ds]
    if spec.same_as_source(split):
        return [shard]
    return [f"{i:05d}" for i in _feeds(index_file(downloads_name(spec)))[split][shard]]


@functools.cache
def _feeds(path):
    with open(path) as handle:
        return json.load(handle)


def resize_inputs(wildcards):
    """The shard's list; for a URL list also what download_shard fetched for it, with the
    source lists that say which URL each downloaded position is."""
    ds = STAGE_KEYS["resize"][(wildcards.key, wildcards.split)]
    inputs = {"index": shard_index(ds, wildcards.split, wildcards.shard)}
    if config["source"]["type"] == "urls":
        # paths, not rules.download_shard.output: with --default-storage-provider s3 that
        # is a storage object, which expand() and str.format refuse or lose
        source = DATASETS[ds].splits[wildcards.split]["from"]
        feeds = download_feeds(ds, wildcards.split, wildcards.shard)
        where = f"{RESULTS}/downloads/{source}"
        inputs["downloads"] = [f"{where}/{shard}.tar" for shard in feeds]
        inputs["download_status"] = [f"{where}/{shard}.tsv" for shard in feeds]
        inputs["download_index"] = [source_shard_index(source, shard) for shard in feeds]
    return inputs


def source_read_params():
    """How resize_shard reads source files: the byte cap, and symlinks followed only for a
    manifest, which names its files (a folder scan never indexes a symlink)."""
    return {
        "max_file_bytes": config["source"]["max_file_bytes"],
        "follow_symlinks": config["source"]["type"] == "manifest",
    }


def embed_params(wildcards):
    """What the embeddings depend on (lab_size and in_records do not change them)."""
    return embed_settings(stage_settings("embed")(wildcards))


def embed_weights(wildcards):
    """A weights file as an input (a TF checkpoint is several): a changed one re-runs the
    embeddings. None for random weights and Keras' ImageNet download."""
    weights = stage_settings("embed", "embed")(wildcards)["weights"]
    if weights in (None, "imagenet"):
        return {}
    return {"weights": checkpoint_files(weights) or weights}


def record_inputs(wildcards):
    """A records job's inputs: the shard's list, labels, resized images and meta, plus
    what the format needs: pin paths (ravel) and embeddings (embed; or taken with
    embed.in_records)."""
    split, shard = record_source(wildcards)
    spec = FORMATS[wildcards.schema]
    ds = wildcards.ds
    inputs = {
        "index": shard_index(ds, split, shard),
        "labels": dataset_labels(ds),
        "tar": stage_path(ds, split, "resized", f"{shard}.tar"),
        "meta": stage_path(ds, split, "resized", f"{shard}.meta.tsv"),
    }
    if "ravel" in spec.needs:
        inputs["targets"] = stage_path(ds, split, "ravel", f"{shard}.npy")
    elif spec.uses_embeddings(settings(wildcards)):
        inputs["embeddings"] = stage_path(ds, split, "embed", f"{shard}.npy")
    inputs.update(leak_drops(ds, split))
    return inputs


def record_n_pins(wildcards):
    """Pins of the ravel targets, for the formats that store them."""
    if "ravel" in FORMATS[wildcards.schema].needs:
        return settings(wildcards)["ravel"]["pins"]
    return None


def record_mem_mb(wildcards, attempt):
    """What one records job of the format holds (its mem_mb request), more on a retry."""
    return FORMATS[wildcards.schema].memory_mb * attempt


def label_base(wildcards):
    return settings(wildcards)["labels"]["base"]


def compression(wildcards):
    return settings(wildcards)["records"]["compression"]


def dataset_records(ds):
    """Every record shard of the dataset: the product (a deleted one is rebuilt, not just
    re-verified)."""
    spec = DATASETS[ds]
    return [
        record_shard(ds, schema, split, shard)
        for schema in spec.config["records"]["schemas"]
        for split in spec.splits
        for shard in shard_ids(ds, split)
    ]


def record_paths(wildcards):
    """Per split, the shard paths relative to the format's folder, in shard order."""
    return {
        split: [
            record_name(wildcards.ds, wildcards.schema, split, s)
            for s in shard_ids(wildcards.ds, split)
        ]
        for split in dataset(wildcards).splits
    }


def metadata_outputs(ds):
    """The metadata files of each of the dataset's format folders (none for compressed
    TFRecords)."""
    spec = DATASETS[ds]
    compression = spec.config["records"]["compression"]
    return [
        f"{RESULTS}/{ds}records/{schema}/{name}"
        for schema in spec.config["records"]["schemas"]
        for name in FORMATS[schema].metadata_files(list(spec.splits), compression)
    ]


def dataset_outputs(ds):
    """What building a dataset means: its summary, records and metadata files, its card,
    the duplicate audit and the report's figures (`snakemake --report report.html`
    collects them)."""
    return [
        *summary_outputs(ds),
        *metadata_outputs(ds),
        *dataset_records(ds),
        *duplicates_outputs(ds),
        *report_outputs(ds),
        *card_outputs(ds),
    ]


def verify_inputs(wildcards):
    """verify_records' inputs by name: the labels, and per shard `<split>/<shard>/<role>`
    (record, sha256, index, rejects and, where the format writes one, record_index)."""
    ds, spec = wildcards.ds, FORMATS[wildcards.schema]
    # apply_wildcards, not str.format: under --default-storage-provider s3 these are
    # storage objects, which only apply_wildcards fills in with their storage query
    indexed = spec.has_record_index(compression(wildcards))
    if indexed or not INDEXED_RECORDS:
        outputs = rules.records_shard.output
    else:
        outputs = rules.records_shard_unindexed.output
    inputs = {"labels": dataset_labels(ds), **leak_drops(ds)}
    for split in dataset(wildcards).splits:
        for shard in shard_ids(ds, split):
            made = record_wildcards(ds, wildcards.schema, split, shard)
            inputs[f"{split}/{shard}/record"] = outputs.record.apply_wildcards(made)
            inputs[f"{split}/{shard}/sha256"] = outputs.sha256.apply_wildcards(made)
            inputs[f"{split}/{shard}/index"] = shard_index(ds, split, shard)
            inputs[f"{split}/{shard}/rejects"] = stage_path(ds, split, "rejects", f"{shard}.tsv")
            if indexed:
                inputs[f"{split}/{shard}/record_index"] = outputs.index.apply_wildcards(made)
    return inputs


def split_shard_indexes(wildcards):
    return [
        shard_index(wildcards.ds, wildcards.split, shard)
        for shard in shard_ids(wildcards.ds, wildcards.split)
    ]


def summary_inputs(wildcards):
    """The summary's inputs: every verification, split table and rejects table of the
    dataset (paths written out: expand() refuses the storage objects that outputs are
    under --default-storage-provider), and the source's ignored files."""
    ds, spec = wildcards.ds, dataset(wildcards)
    return {
        "verified": [f"{RESULTS}/{ds}verify/{s}.json" for s in spec.config["records"]["schemas"]],
        "tables": [f"{RESULTS}/{ds}index/{split}.tsv" for split in spec.splits],
        "rejects": [
            stage_path(ds, split, "rejects", f"{shard}.tsv")
            for split in spec.splits
            for shard in shard_ids(ds, split)
        ],
        "ignored": IGNORED_TSV,
        "duplicates": duplicates_outputs(ds)[1],
        **leak_drops(ds),
    }


def stage_benchmarks(ds):
    """Stage -> the benchmark files of the dataset's jobs of that stage (download, resize,
    ravel, embed, records <schema>, verify <schema>): the summary's per-stage totals.
    Shared jobs (one resize for two datasets) count in each. A params value, not inputs:
    a missing benchmark file (a build from before records had one) is a job not
    measured, never a reason to re-run it."""
    spec = DATASETS[ds]
    made = f"{RESULTS}/benchmarks"
    shards = {split: shard_ids(ds, split) for split in spec.splits}
    stages = {}
    if config["source"]["type"] == "urls":
        stages["download"] = [
            f"{made}/download/{source}/{shard}.tsv"
            for source in dict.fromkeys(spec.splits[split]["from"] for split in spec.splits)
            for shard in shard_ids_of_source(source)
        ]
    for stage, folder in (("resize", "resize"), ("ravel", "ravel"), ("embed", "embed")):
        if stage == "resize" or needs_stage(stage)(spec):
            stages[stage] = [
                f"{made}/{folder}/{stage_key(ds, split, stage)}{split}/{shard}.tsv"
                for split in spec.splits
                for shard in shards[split]
            ]
    for schema in spec.config["records"]["schemas"]:
        stages[f"records {schema}"] = [
            f"{made}/records/{ds}records/{schema}/{record_name(ds, schema, split, shard)}.tsv"
            for split in spec.splits
            for shard in shards[split]
        ]
        stages[f"verify {schema}"] = [f"{made}/verify/{ds}{schema}.tsv"]
    return stages


def shard_ids_of_source(split):
    return [f"{i:05d}" for i in range(SOURCE_SPLITS[split]["shards"])]


def summary_outputs(ds):
    made = f"{RESULTS}/{ds}"
    return [f"{made}summary.json", f"{made}summary.tsv", f"{made}rejects.tsv", f"{made}stages.tsv"]


def upstream(stage):
    """Digest of the settings a stage's output is made from, its own and upstream ones: a
    params value, so a changed setting re-runs the stage even when the intermediate files
    between (resized tars, ...) are gone."""

    def digest(wildcards):
        if stage == "records":
            return _records_digest(wildcards.ds, wildcards.schema)
        return _stage_digest(STAGE_KEYS[stage][(wildcards.key, wildcards.split)], stage)

    return digest


@functools.cache
def _records_digest(ds, schema):
    return upstream_digest(DATASETS[ds].config, "records", schema)


@functools.cache
def _stage_digest(ds, stage):
    return upstream_digest(DATASETS[ds].config, stage)


def verify_full():
    """verify.full: a token new in every invocation, so the params change and every
    verification re-runs, reading every shard (its cache ignored)."""
    return f"full {time.time_ns()}" if config["verify"]["full"] else False


# -- duplicates --


def duplicates_inputs(wildcards):
    """The audit's inputs: each split's member table (paths) and its shards' meta tables
    (the hashes resize wrote), in split and shard order."""
    ds, spec = wildcards.ds, dataset(wildcards)
    return {
        "tables": [f"{RESULTS}/{ds}index/{split}.tsv" for split in spec.splits],
        "meta": [
            stage_path(ds, split, "resized", f"{shard}.meta.tsv")
            for split in spec.splits
            for shard in shard_ids(ds, split)
        ],
    }


def duplicates_outputs(ds):
    """The dataset's audit: pairs table, counts, leaking train images."""
    made = f"{RESULTS}/{ds}"
    return [f"{made}duplicates.tsv", f"{made}duplicates.json", f"{made}duplicates.leaks.tsv"]


def leak_drops(ds, split=None):
    """{"leaks": the audit's leaks table} where the dataset drops leaking train images
    (duplicates.leaks: drop): for the records of its train splits (split given) or the
    whole dataset (verify, summary); else nothing, so a build that keeps them does not
    wait for the audit."""
    found = DATASETS[ds].config["duplicates"]
    if found["leaks"] != "drop" or (split is not None and split not in found["train_splits"]):
        return {}
    return {"leaks": duplicates_outputs(ds)[2]}


# -- report --


def report_category(wildcards):
    """The report's category of a dataset's results: its name ("imgprep" without
    `datasets:`)."""
    return DATASETS[wildcards.ds].name if wildcards.ds else "imgprep"


def report_sample_shards(ds, split):
    """The shards a split's contact sheets sample: report.shards of them, evenly spaced
    from the first to the last (rounded half up, so always distinct)."""
    n = DATASETS[ds].splits[split]["shards"]
    k = min(DATASETS[ds].config["report"]["shards"], n)
    if k <= 1:
        return shard_ids(ds, split)[:k]
    return [f"{(2 * i * (n - 1) + k - 1) // (2 * (k - 1)):05d}" for i in range(k)]


def report_sheet_inputs(wildcards):
    """A contact sheet's record shards, and their verification: a shard that failed its
    check gets no sheet."""
    ds, split, schema = wildcards.ds, wildcards.split, wildcards.schema
    return {
        "verified": f"{RESULTS}/{ds}verify/{schema}.json",
        "records": [record_shard(ds, schema, split, s) for s in report_sample_shards(ds, split)],
    }


def report_split_inputs(wildcards):
    """A split's member table, its shards' resize metadata (source sizes) and the summary
    (records and bytes per shard)."""
    ds, split = wildcards.ds, wildcards.split
    return {
        "table": f"{RESULTS}/{ds}index/{split}.tsv",
        "meta": [stage_path(ds, split, "resized", f"{s}.meta.tsv") for s in shard_ids(ds, split)],
        "summary": f"{RESULTS}/{ds}summary.json",
    }


def report_dataset_inputs(wildcards):
    """The rejects gallery's tables (the summary's rejects and reason counts, the split
    tables with each file's place in its source, the ignored files) and the summary's
    per-stage totals (stages.tsv, from the benchmark files)."""
    ds, spec = wildcards.ds, dataset(wildcards)
    made = f"{RESULTS}/{ds}"
    return {
        "rejects": f"{made}rejects.tsv",
        "summary": f"{made}summary.json",
        "stages": f"{made}stages.tsv",
        "tables": [f"{made}index/{split}.tsv" for split in spec.splits],
        "ignored": IGNORED_TSV,
    }


def report_outputs(ds):
    """A dataset's report files (rules/report.smk): per split its contact sheets (one
    per schema, with the sampled records' table) and plots, per dataset the rejects
    gallery, ignored list, throughput and the duplicate audit's pairs."""
    spec = DATASETS[ds]
    made = f"{RESULTS}/{ds}report"
    paths = []
    for split in spec.splits:
        for schema in spec.config["records"]["schemas"]:
            paths += [f"{made}/{split}/sheet_{schema}.png", f"{made}/{split}/sheet_{schema}.tsv"]
        paths += [f"{made}/{split}/{name}.png" for name in REPORT_SPLIT_FIGURES]
    return paths + [f"{made}/{name}" for name in REPORT_DATASET_FILES]


REPORT_SPLIT_FIGURES = ("classes", "source_size", "source_aspect", "shards")
REPORT_DATASET_FILES = (
    "rejects.png",
    "rejects.tsv",
    "ignored.tsv",
    "throughput.png",
    "throughput.tsv",
    "duplicates.png",
    "duplicates.tsv",
)


# -- dataset card --

from imgprep.stages.card import config_sha256, source_description


def card_outputs(ds):
    return [f"{RESULTS}/{ds}README.md"]


def card_inputs(wildcards):
    """A card's inputs: the summary (counts, shard hashes), the label map, the member
    tables, the rejects table and the duplicate audit's counts."""
    ds, spec = wildcards.ds, dataset(wildcards)
    made = f"{RESULTS}/{ds}"
    inputs = {
        "summary": f"{made}summary.json",
        "rejects": f"{made}rejects.tsv",
        "labels": dataset_labels(ds),
        "tables": [f"{made}index/{split}.tsv" for split in spec.splits],
    }
    inputs["duplicates"] = duplicates_outputs(ds)[1]  # (an optional input of the card)
    return inputs


def card_preset(wildcards):
    spec = dataset(wildcards)
    return config["datasets"][spec.name].get("preset") if spec.folder else None


@functools.cache
def _card_config_sha256(ds):
    return config_sha256(DATASETS[ds].config)


def card_config_sha256(wildcards):
    """sha256 of the dataset's effective configuration as canonical JSON."""
    return _card_config_sha256(wildcards.ds)


def card_source():
    return source_description(config)


def card_snippets(wildcards):
    """Each format's loading snippet, paths relative to the card's folder."""
    spec = dataset(wildcards)
    return {
        schema: FORMATS[schema].loading_snippet(f"records/{schema}", list(spec.splits), spec.config)
        for schema in spec.config["records"]["schemas"]
    }
