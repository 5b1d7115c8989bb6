import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "scripts"))

from imgprep.config import ConfigError, validate_config
from imgprep.index import shard_index_path, update_index
from imgprep.records import record_index_path
from imgprep.tfds_metadata import LABELS_FILE as TFDS_LABELS_FILE
from imgprep.tfds_metadata import metadata_files
from imgprep.s3_index import adopt_snakemake_settings, publish_index

try:
    _validated = validate_config(config)
except ConfigError as error:
    raise WorkflowError(str(error)) from None
config.clear()
config.update(_validated)

RESULTS = config["results"]
SPLITS = list(config["splits"])
SCHEMAS = config["records"]["schemas"]
# DALI's fn.readers.tfrecord and the tfrecord package seek by an index: uncompressed only.
RECORD_INDEXES = config["records"]["compression"] == "none"


wildcard_constraints:
    split="|".join(SPLITS),
    shard=r"\d{5}",
    schema="|".join(SCHEMAS),


# --storage-s3-* settings also serve an s3:// source's scan and the jobs that read it;
# with --default-storage-provider s3 the index lists must be in that storage too.
S3_STORAGE = adopt_snakemake_settings(workflow)

# The scan of the sources runs once, in the process that plans the jobs; cluster jobs
# re-parse this file and must not walk a million files again.
if workflow.is_main_process:
    publish_index(config, update_index(config), S3_STORAGE)


def shard_ids(split):
    return [f"{i:05d}" for i in range(config["splits"][split]["shards"])]


def shard_index(split, shard):
    return str(shard_index_path(RESULTS, split, shard))


def record_shard(schema, split, shard):
    total = config["splits"][split]["shards"]
    if schema == "koalarization":
        return f"{RESULTS}/records/koalarization/{koalarization_name(split, shard)}.tfrecord"
    if schema == "tangler":
        return (
            f"{RESULTS}/records/tangler/{split}/tangle_{int(shard) + 1:05d}-of-{total:05d}.tfrecord"
        )
    return f"{RESULTS}/records/{schema}/{split}-{shard}-of-{total:05d}"


def koalarization_name(split, shard):
    """Koalarization's readers glob lab_images_*.tfrecord and val_lab_images_*.tfrecord."""
    prefix = {"train": "", "validation": "val_", "val": "val_"}.get(split, f"{split}_")
    return f"{prefix}lab_images_{int(shard)}"


KOALARIZATION = {
    koalarization_name(split, shard): (split, shard)
    for split in SPLITS
    for shard in shard_ids(split)
}


def koalarization_shard(wildcards):
    """(split, shard) of a Koalarization file name."""
    return KOALARIZATION[wildcards.name]


def resize_inputs(wildcards):
    """The shard's list; for a URL list also what download_shard fetched."""
    inputs = {"index": shard_index(wildcards.split, wildcards.shard)}
    if config["source"]["type"] == "urls":
        inputs["downloads"] = f"{RESULTS}/downloads/{wildcards.split}/{wildcards.shard}.tar"
        inputs["download_status"] = f"{RESULTS}/downloads/{wildcards.split}/{wildcards.shard}.tsv"
    return inputs


def embed_params():
    """What the embeddings depend on (lab_size and in_records do not change them)."""
    keys = ("model", "weights", "output", "input_size", "batch_size", "seed")
    return {key: config["embed"][key] for key in keys}


def embed_inputs(wildcards):
    inputs = {"tar": f"{RESULTS}/resized/{wildcards.split}/{wildcards.shard}.tar"}
    weights = config["embed"]["weights"]
    if weights not in (None, "imagenet"):
        inputs["weights"] = weights  # a changed weights file re-runs the embeddings
    return inputs


def shard_embeddings(wildcards):
    """Embeddings for imagenet/dlbs records when embed.in_records asks for them."""
    if not config["embed"]["in_records"]:
        return []
    return f"{RESULTS}/embed/{wildcards.split}/{wildcards.shard}.npy"


def tangler_shard(wildcards):
    """Tangler numbers its files from 1; our shards from 0."""
    return f"{int(wildcards.number) - 1:05d}"


def record_shards(schema, split):
    return [record_shard(schema, split, shard) for shard in shard_ids(split)]


def record_index_output(record):
    """The records rules' `index` output for the shard pattern `record`, when shards get one."""
    return {"index": record_index_path(record)} if RECORD_INDEXES else {}


def record_indexes(schema):
    """The index file of every shard of `schema` (none for compressed shards)."""
    if not RECORD_INDEXES:
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
    if not RECORD_INDEXES:
        return []
    return [f"{RESULTS}/records/{s}/{name}" for s in SCHEMAS for name in metadata_files(s)]


def split_shard_indexes(wildcards):
    return [shard_index(wildcards.split, shard) for shard in shard_ids(wildcards.split)]


def all_rejects():
    return [
        f"{RESULTS}/rejects/{split}/{shard}.tsv" for split in SPLITS for shard in shard_ids(split)
    ]


def summary_outputs():
    return [f"{RESULTS}/summary.json", f"{RESULTS}/summary.tsv", f"{RESULTS}/rejects.tsv"]
