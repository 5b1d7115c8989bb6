"""Record schemas: turn one shard's resized images into one TFRecord file.

A schema names its shard files and builds the tf.train.Example of one image, so a
new consumer (another training code base with its own feature keys) plugs in
with a builder function and an entry in SCHEMAS. Writing goes through
imgprep.files.tfrecord, which needs no TensorFlow: this runs once per shard.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from PIL import Image

from imgprep import koalarization
from imgprep.files.tables import read_tsv
from imgprep.files.tfrecord import (
    Feature,
    TFRecordWriter,
    bytes_feature,
    encode_example,
    float_feature,
    int64_feature,
    serialize_tensor_uint8,
)

__all__ = [
    "KOALARIZATION_EMBEDDING",
    "KOALARIZATION_LAB_SIZE",
    "SCHEMAS",
    "LabelMap",
    "Sample",
    "Schema",
    "get_schema",
    "iter_samples",
    "read_labels",
    "record_index_path",
    "shard_filename",
    "shard_path",
    "slim_logits",
    "write_shard",
]

INDEX_COLUMNS = ("path", "class")
LABEL_COLUMNS = ("index", "label", "synset", "text")
META_COLUMNS = ("position", "width", "height", "channels", "colorspace")
META_INTS = ("position", "width", "height", "channels")
COLORSPACE_CHANNELS = {"RGB": 3, "Grayscale": 1}
# Pillow mode of a decoded JPEG -> channel count TensorFlow decodes it to
_MODE_CHANNELS = {"L": 1, "RGB": 3, "CMYK": 4}


# -- inputs -------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelMap:
    """The label table keyed by class (synset) name."""

    index: dict[str, int]
    text: dict[str, str]

    def __len__(self) -> int:
        return len(self.index)


def read_labels(path, label_base: int = 0) -> LabelMap:
    """Read the labels TSV and check it was made for this ``label_base``.

    The table's ``label`` column is ``index + label_base``; a table made with
    another base would silently shift every label, so that is an error.
    """
    frame = read_tsv(path, LABEL_COLUMNS, ints=("index", "label"))
    for column in ("synset", "index"):
        duplicated = frame[column][frame[column].duplicated()].tolist()
        if duplicated:
            raise ValueError(f"{path}: duplicate {column} value(s): {duplicated[:5]}")
    wrong = frame[frame["label"] != frame["index"] + label_base]
    if len(wrong):
        row = wrong.iloc[0]
        raise ValueError(
            f"{path}: label column does not equal index + label_base ({label_base}), "
            f"e.g. {row['synset']}: index {row['index']}, label {row['label']}"
        )
    synsets = frame["synset"].tolist()
    return LabelMap(
        index=dict(zip(synsets, frame["index"].tolist(), strict=True)),
        text=dict(zip(synsets, frame["text"].tolist(), strict=True)),
    )


def _tar_files(path) -> Iterator[tuple[str, bytes]]:
    """Yield (name, bytes) of the tar's regular files, streaming (nothing extracted)."""
    if os.path.getsize(path) == 0:  # an empty shard's tar may be an empty file
        return
    with tarfile.open(path, mode="r|") as tar:
        for member in tar:
            if member.isfile():
                handle = tar.extractfile(member)
                yield member.name.removeprefix("./"), handle.read()


# -- schemas ------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One resized image with what its metadata and the label table say about it."""

    position: int
    path: str
    data: bytes  # JPEG bytes from the resized tar
    width: int
    height: int
    channels: int
    colorspace: str
    label_index: int | None  # 0-based position in the label map; None: unlabelled
    synset: str
    text: str
    boxes: tuple[tuple[float, float, float, float], ...] = ()
    pin_path: np.ndarray | None = None  # ravel pin path (schemas that need targets)
    n_pins: int | None = None
    embedding: np.ndarray | None = None  # float32 [D] CNN embedding (stage embed)

    @property
    def filename(self) -> str:
        return os.path.basename(self.path)

    def where(self) -> str:
        return f"position {self.position} ({self.path})"


def _split_index_of_total(split: str, index: int, total: int) -> str:
    return f"{split}-{index:05d}-of-{total:05d}"


@dataclass(frozen=True)
class Schema:
    """How one consumer wants its shards named and its examples laid out."""

    name: str
    build: Callable[[Sample, int], dict[str, Feature]]  # (sample, label) -> features
    shard_name: Callable[[str, int, int], str] = _split_index_of_total
    split_folders: bool = False  # each split's shards in a folder named after the split
    zero_based_labels: bool = False  # ignore label_base (consumer wants 0..n-1)
    needs_targets: bool = False  # build reads Sample.pin_path and Sample.n_pins
    needs_embeddings: bool = False  # build reads Sample.embedding
    takes_embeddings: bool = False  # build stores Sample.embedding when there is one
    stores_boxes: bool = False  # build stores Sample.boxes
    description: str = field(default="", compare=False)

    def label(self, index: int | None, label_base: int) -> int:
        """The stored label; -1 for an unlabelled image (index None), as TFDS does."""
        if index is None:
            return -1
        return index if self.zero_based_labels else index + label_base

    def filename(self, split: str, index: int, total: int) -> str:
        if not 0 <= index < total:
            raise ValueError(f"shard index {index} outside 0..{total - 1}")
        return self.shard_name(split, index, total)

    def path(self, split: str, index: int, total: int) -> str:
        """The shard's path inside the schema's records folder."""
        name = self.filename(split, index, total)
        return f"{split}/{name}" if self.split_folders else name


def _jpeg_header(sample: Sample) -> Image.Image:
    """Open (not decode) the JPEG and check it against the metadata row."""
    try:
        image = Image.open(io.BytesIO(sample.data))
    except Exception as exc:
        raise ValueError(f"{sample.where()}: not a readable image: {exc}") from exc
    channels = _MODE_CHANNELS.get(image.mode)
    if (
        image.format != "JPEG"
        or image.size != (sample.width, sample.height)
        or (channels != sample.channels)
    ):
        raise ValueError(
            f"{sample.where()}: metadata says {sample.width}x{sample.height}x"
            f"{sample.channels} JPEG, bytes are {image.size[0]}x{image.size[1]} "
            f"{image.format} mode {image.mode}"
        )
    return image


_JPEG = bytes_feature(b"JPEG")
_TENSOR = bytes_feature(b"tensor")


def _described_image(sample: Sample, label: int, encoded: bytes, format_: Feature) -> dict:
    """Keys both layouts share: the image's shape, colorspace, class and name."""
    return {
        "image/encoded": bytes_feature(encoded),
        "image/format": format_,
        "image/height": int64_feature(sample.height),
        "image/width": int64_feature(sample.width),
        "image/channels": int64_feature(sample.channels),
        "image/colorspace": bytes_feature(sample.colorspace),
        "image/class/label": int64_feature(label),
        "image/class/synset": bytes_feature(sample.synset),
        "image/class/text": bytes_feature(sample.text),
        "image/filename": bytes_feature(sample.filename),
    }


def _with_embedding(sample: Sample, features: dict[str, Feature]) -> dict[str, Feature]:
    """Add ``image/embedding`` when the sample has one; otherwise the features unchanged."""
    if sample.embedding is not None:
        features["image/embedding"] = float_feature(sample.embedding)
    return features


def _imagenet_features(sample: Sample, label: int) -> dict[str, Feature]:
    """The tensorflow/models (build_imagenet_data, imagenet_to_gcs) layout."""
    _jpeg_header(sample)
    boxes = np.asarray(sample.boxes, dtype=np.float64).reshape(-1, 4)
    features = {
        **_described_image(sample, label, sample.data, _JPEG),
        "image/object/bbox/xmin": float_feature(boxes[:, 0]),
        "image/object/bbox/ymin": float_feature(boxes[:, 1]),
        "image/object/bbox/xmax": float_feature(boxes[:, 2]),
        "image/object/bbox/ymax": float_feature(boxes[:, 3]),
        "image/object/bbox/label": int64_feature([label] * len(boxes)),
    }
    return _with_embedding(sample, features)


def _dlbs_features(sample: Sample, label: int) -> dict[str, Feature]:
    """DLBS fast ingestion: pre-decoded HWC uint8 pixels, so training skips JPEG decode."""
    pixels = np.asarray(_jpeg_header(sample))  # decodes; shape checked by the header
    return _with_embedding(sample, _described_image(sample, label, pixels.tobytes(), _TENSOR))


TANGLER_VERSION = 6


def _tangler_features(sample: Sample, label: int) -> dict[str, Feature]:
    """Tangler's make_tfrecords.py format version 6: gray square JPEG + ravel target."""
    from imgprep.kernels.stringart import adjacency_indices  # numba: only for this schema

    _jpeg_header(sample)
    if sample.channels != 1 or sample.width != sample.height:
        raise ValueError(
            f"{sample.where()}: tangler needs a square 1-channel JPEG, got "
            f"{sample.width}x{sample.height}x{sample.channels} (configure gray center-crop)"
        )
    if sample.pin_path is None or sample.n_pins is None:
        raise ValueError(f"{sample.where()}: tangler needs a pin path and n_pins")
    indices = adjacency_indices(sample.pin_path, sample.n_pins)
    return {
        "record/version": int64_feature(TANGLER_VERSION),
        "record/name": bytes_feature(sample.filename),
        "image/encoded": bytes_feature(sample.data),
        "image/res": int64_feature(sample.width),
        "target/n_pins": int64_feature(sample.n_pins),
        "target/sparsity": int64_feature(len(indices)),
        "target/indices": bytes_feature(serialize_tensor_uint8(indices.reshape(-1))),
        "target/path": int64_feature(sample.pin_path),
    }


def _tangle_of_total(split: str, index: int, total: int) -> str:
    return f"tangle_{index + 1:05d}-of-{total:05d}.tfrecord"  # split is not in the name


# what Deep Koalarization's LabImageRecordReader declares
KOALARIZATION_LAB_SIZE = koalarization.LAB_SIZE
KOALARIZATION_EMBEDDING = koalarization.EMBEDDING


def slim_logits(embedding: np.ndarray) -> np.ndarray:
    """ImageNet logits in TF-slim's 1001-class order (0 = background, slim k+1 = Keras k).

    1001 values are slim's already and stay as they are. 1000 values (a Keras
    classifier, which has no background class) get a background entry at index 0 that
    holds their minimum: never the argmax, and softmax gives it the least probability,
    as a trained slim model does (no ImageNet image is labelled background).
    """
    embedding = np.asarray(embedding, dtype=np.float32)
    if embedding.shape == (KOALARIZATION_EMBEDDING,):
        return embedding
    if embedding.shape == (KOALARIZATION_EMBEDDING - 1,):
        return np.concatenate([embedding.min(keepdims=True), embedding])
    raise ValueError(
        f"koalarization stores {KOALARIZATION_EMBEDDING} ImageNet logits (TF-slim's order) "
        f"or takes 1000 (Keras' order, background added); the embedding has "
        f"{embedding.size} values (embed.output must be 'logits')"
    )


def _koalarization_features(sample: Sample, label: int) -> dict[str, Feature]:
    """Deep Koalarization's lab_batch records: L and ab targets + the CNN embedding.

    Keys and scaling follow its reader: image_l is 2L/100 - 1 and image_ab is ab/127,
    both flattened row-major (HW, HWC) at 224 x 224; image_embedding holds 1001
    logits in slim's order; no label is stored.
    """
    from imgprep.kernels.lab import lab_targets  # colour conversion: only for this schema

    _jpeg_header(sample)
    if sample.embedding is None:
        raise ValueError(f"{sample.where()}: koalarization needs an embedding")
    try:
        logits = slim_logits(sample.embedding)
    except ValueError as error:
        raise ValueError(f"{sample.where()}: {error}") from None
    size = KOALARIZATION_LAB_SIZE
    lightness, ab = lab_targets(sample.data, size)
    lightness, ab = np.asarray(lightness), np.asarray(ab)
    if lightness.shape != (size, size) or ab.shape != (size, size, 2):
        raise ValueError(
            f"{sample.where()}: Lab targets have shapes {lightness.shape} and {ab.shape}, "
            f"want ({size}, {size}) and ({size}, {size}, 2)"
        )
    return {
        "image_name": bytes_feature(sample.filename),
        "image_l": float_feature(lightness),
        "image_ab": float_feature(ab),
        "image_embedding": float_feature(logits),
    }


def _lab_images(split: str, index: int, total: int) -> str:
    """Koalarization's training reader globs lab_images_*.tfrecord and its evaluation
    reader val_lab_images_*.tfrecord, both in one folder; other splits get their name
    as prefix, so neither glob picks them up."""
    prefix = {"train": "", "validation": "val_", "val": "val_"}.get(split, f"{split}_")
    return f"{prefix}lab_images_{index}.tfrecord"


SCHEMAS: dict[str, Schema] = {
    schema.name: schema
    for schema in (
        Schema(
            "imagenet",
            _imagenet_features,
            takes_embeddings=True,
            stores_boxes=True,
            description="JPEG bytes + tensorflow/models ImageNet keys",
        ),
        Schema(
            "dlbs",
            _dlbs_features,
            zero_based_labels=True,
            takes_embeddings=True,
            description="raw HWC uint8 tensor, 0-based labels (DLBS)",
        ),
        Schema(
            "tangler",
            _tangler_features,
            shard_name=_tangle_of_total,
            split_folders=True,
            needs_targets=True,
            description="gray square JPEG + ravel pin path and adjacency (Tangler v6)",
        ),
        Schema(
            "koalarization",
            _koalarization_features,
            shard_name=_lab_images,
            needs_embeddings=True,
            takes_embeddings=True,
            description="Lab targets (image_l, image_ab) + CNN embedding (Deep Koalarization)",
        ),
    )
}


def get_schema(name: str) -> Schema:
    try:
        return SCHEMAS[name]
    except KeyError:
        raise ValueError(f"unknown schema {name!r}; known: {', '.join(sorted(SCHEMAS))}") from None


def shard_filename(schema: str, split: str, index: int, total: int) -> str:
    """File name of shard ``index`` of ``total`` (0-based) for ``split``."""
    return get_schema(schema).filename(split, index, total)


def shard_path(schema: str, split: str, index: int, total: int) -> str:
    """Path of shard ``index`` of ``total`` inside ``records/<schema>/`` (the rules' too)."""
    return get_schema(schema).path(split, index, total)


def record_index_path(record) -> str:
    """Where the DALI / ``tfrecord`` index of a shard lives: ``idx/<shard file name>.idx``
    in the shard's folder (DALI's ``<file>.idx``), in a subfolder so that no consumer's
    glob over the shards (TPU ``train-*``, slim ``%s-*``, DLBS ``%s-*-of-*``,
    Koalarization ``lab_images_*``, Tangler's per-split folder) picks it up."""
    folder, name = os.path.split(os.fspath(record))
    return os.path.join(folder, "idx", f"{name}.idx")


# -- writing ------------------------------------------------------------------------


def _read_meta(path, n_index: int) -> pd.DataFrame:
    meta = read_tsv(path, META_COLUMNS, ints=(*META_INTS, "nbytes"))
    meta = meta.sort_values("position", kind="stable").reset_index(drop=True)
    positions = meta["position"]
    if positions.duplicated().any():
        duplicated = positions[positions.duplicated()].tolist()
        raise ValueError(f"{path}: duplicate position(s) {duplicated[:5]}")
    outside = positions[(positions < 0) | (positions >= n_index)].tolist()
    if outside:
        raise ValueError(
            f"{path}: position(s) outside the shard index (0..{n_index - 1}): {outside[:5]}"
        )
    bad = meta[meta["colorspace"].map(COLORSPACE_CHANNELS) != meta["channels"]]
    if len(bad):
        row = bad.iloc[0]
        raise ValueError(
            f"{path}: position {row['position']}: colorspace "
            f"{row['colorspace']!r} with {row['channels']} channel(s)"
        )
    return meta


def iter_samples(
    index_tsv,
    labels: LabelMap,
    meta_tsv,
    tar_path,
    boxes=None,
    pin_paths=None,
    n_pins=None,
    embeddings=None,
) -> Iterator[Sample]:
    """The shard's images in position order, each joined with its label row.

    ``pin_paths`` and ``embeddings`` (optional) hold one row per meta row, in position
    order; row r becomes the r-th sample's ``pin_path`` / ``embedding``.
    """
    index = read_tsv(index_tsv, INDEX_COLUMNS)
    meta = _read_meta(meta_tsv, len(index))
    for what, rows in (("targets", pin_paths), ("embeddings", embeddings)):
        if rows is not None and len(rows) != len(meta):
            raise ValueError(f"{what} have {len(rows)} row(s), {meta_tsv} has {len(meta)} image(s)")
    paths = index["path"].tolist()
    classes = index["class"].tolist()
    unknown = sorted({classes[p] for p in meta["position"]} - labels.index.keys() - {""})
    if unknown:
        raise ValueError(f"{index_tsv}: class(es) not in the labels table: {unknown[:10]}")
    if boxes is None:
        boxes = _index_boxes(index, meta)
    has_nbytes = "nbytes" in meta.columns
    files = _tar_files(tar_path)
    try:
        for number, row in enumerate(meta.itertuples(index=False)):
            position = int(row.position)
            expected_name = f"{position:06d}.jpg"
            name, data = next(files, (None, None))
            if name != expected_name:
                raise ValueError(f"{tar_path}: expected member {expected_name}, found {name}")
            if has_nbytes and len(data) != row.nbytes:
                raise ValueError(
                    f"{tar_path}: {name} has {len(data)} bytes, meta says {row.nbytes}"
                )
            synset = classes[position]
            yield Sample(
                position=position,
                path=paths[position],
                data=data,
                width=int(row.width),
                height=int(row.height),
                channels=int(row.channels),
                colorspace=row.colorspace,
                label_index=labels.index[synset] if synset else None,
                synset=synset,
                text=labels.text[synset] if synset else "",
                boxes=tuple(tuple(map(float, box)) for box in boxes.get(position, ())),
                pin_path=None if pin_paths is None else pin_paths[number],
                n_pins=n_pins,
                embedding=None if embeddings is None else embeddings[number],
            )
        extra = next(files, None)
        if extra is not None:
            raise ValueError(f"{tar_path}: member {extra[0]} has no row in {meta_tsv}")
    finally:
        files.close()


def _index_boxes(index: pd.DataFrame, meta: pd.DataFrame) -> dict[int, list]:
    """Boxes of the index (raw, source pixels) moved into each stored image's frame."""
    if "boxes" not in index.columns or not index["boxes"].astype(bool).any():
        return {}
    from imgprep.boxes import decode_boxes, normalize_boxes, transform_boxes

    texts = index["boxes"].tolist()
    found = {}
    for row in meta.to_dict("records"):
        text = texts[int(row["position"])]
        if text:
            raw = decode_boxes(text)
            normalized = normalize_boxes(raw, int(row["source_width"]), int(row["source_height"]))
            found[int(row["position"])] = transform_boxes(normalized, row)
    return found


def _read_targets(schema: str, targets, n_pins) -> np.ndarray:
    """Load and check the pin paths a ``needs_targets`` schema requires."""
    if targets is None:
        raise ValueError(f"schema {schema!r} needs targets (a .npy file of pin paths)")
    if n_pins is None or isinstance(n_pins, bool) or not 1 <= int(n_pins) <= 256:
        raise ValueError(f"schema {schema!r} needs n_pins in 1..256, got {n_pins!r}")
    paths = np.load(targets, allow_pickle=False)
    if paths.ndim != 2 or paths.dtype.kind not in "iu":
        raise ValueError(f"{targets}: need a 2-D integer array, got {paths.dtype} {paths.shape}")
    if paths.size and (paths.min() < 0 or paths.max() >= n_pins):
        raise ValueError(f"{targets}: pins outside 0..{n_pins - 1}")
    return paths.astype(np.int64)


def _read_embeddings(schema: str, embeddings) -> np.ndarray:
    """Load and check a ``.npy`` of float embeddings, shape [meta rows, D]."""
    if embeddings is None:
        raise ValueError(f"schema {schema!r} needs embeddings (a .npy file, one row per image)")
    array = np.load(embeddings, allow_pickle=False)
    if array.ndim != 2 or array.dtype.kind != "f" or array.shape[1] == 0:
        raise ValueError(
            f"{embeddings}: need a 2-D float array [images, D>0], got {array.dtype} {array.shape}"
        )
    if not np.isfinite(array).all():
        raise ValueError(f"{embeddings}: embeddings are not all finite")
    return array.astype(np.float32)


def write_shard(
    schema: str,
    index_tsv,
    labels_tsv,
    meta_tsv,
    tar_path,
    out_path,
    compression: str | None = None,
    label_base: int = 0,
    boxes: Mapping[int, Sequence[Sequence[float]]] | None = None,
    targets=None,
    n_pins: int | None = None,
    embeddings=None,
    index_path=None,
) -> dict:
    """Write one TFRecord shard; same inputs give a byte-identical file.

    ``boxes`` maps position -> [(xmin, ymin, xmax, ymax), ...] (normalized) for
    schemas that carry bounding boxes; None takes them from the index's boxes column
    and the meta's resize geometry. ``targets`` is a ``.npy`` file of integer
    pin paths, shape [meta rows, lines + 1], row r for the r-th meta row in position
    order, with pins numbered 0..``n_pins``-1 (schemas with ``needs_targets``; others
    ignore both). ``embeddings`` is a float ``.npy`` file, shape [meta rows, D], row r
    for the r-th meta row in position order: required by schemas with
    ``needs_embeddings``, stored as ``image/embedding`` by imagenet and dlbs when given
    (their records are otherwise unchanged), an error for other schemas.
    ``index_path`` (uncompressed shards only) gets the shard's DALI / ``tfrecord``
    index, written in the same pass.
    Returns records, sha256 and bytes.
    """
    spec = get_schema(schema)
    labels = read_labels(labels_tsv, label_base)
    vectors = None
    if spec.needs_embeddings or (embeddings is not None and spec.takes_embeddings):
        vectors = _read_embeddings(schema, embeddings)
    elif embeddings is not None:
        raise ValueError(f"schema {schema!r} does not store embeddings")
    pin_paths = None
    if spec.needs_targets:
        pin_paths = _read_targets(schema, targets, n_pins)
        n_pins = int(n_pins)
    else:
        n_pins = None
    if boxes is None and not spec.stores_boxes:
        boxes = {}  # the index's boxes are moved through the geometry only where stored
    samples = iter_samples(index_tsv, labels, meta_tsv, tar_path, boxes, pin_paths, n_pins, vectors)
    with TFRecordWriter(out_path, compression, index_path) as writer:
        for sample in samples:
            label = spec.label(sample.label_index, label_base)
            writer.write(encode_example(spec.build(sample, label)))
    return {"records": writer.count, "sha256": writer.sha256, "bytes": writer.nbytes}
