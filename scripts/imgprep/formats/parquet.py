"""parquet: the Hugging Face layout that ``datasets.load_dataset(folder)`` loads.
Long because: the format owns its writer and reader (a minimal Parquet, below).

Shards are ``data/{split}-{i:05d}-of-{n:05d}.parquet`` with two columns, as ``datasets``
stores an ``Image`` and a ``ClassLabel`` feature: ``image`` a struct of ``bytes`` (the
resized JPEG) and ``path`` (the file name; bytes that are not UTF-8 shown as ``\\xNN``,
since Parquet strings must be UTF-8), and ``label`` the 0-based class index (-1
unlabelled). The folder's ``README.md`` declares both in its YAML header (``dataset_info:
features``, class names in label order) and maps each split to its files (``configs``).

The files are written here, without pyarrow: with pyarrow importable, pandas 3 keeps
strings in Arrow, which refuses the surrogate escapes of undecodable file names that the
workflow's tables carry (requirements-tfds.txt tells the same story), and a hand-made
file has no writer version or timestamp in it, so the bytes depend on the samples only.
What is written is the smallest valid Parquet (format 1, as Apache Arrow reads it): per
row group one PLAIN data page (v1) per column, uncompressed (JPEG does not compress),
every value present (definition levels one RLE run), no statistics. Verification reads
them back with the small reader below; tests/test_parquet_format.py loads them with
pyarrow and ``datasets``. ``records.compression`` does not apply (the TFRecord
framing's): Parquet columns of JPEGs stay uncompressed.

Thrift's compact protocol (parquet.thrift's structs) takes ~100 lines both ways; a reason
for a module of this size.
"""

from __future__ import annotations

import io
import json
import re
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from imgprep.atomic import atomic_write
from imgprep.files.labels import read_labels
from imgprep.formats.base import MetadataInputs, RecordFormat, Sample, UnreadableShard, written
from imgprep.formats.jpeg import jpeg_header

__all__ = ["FORMAT", "ROW_GROUP_ROWS", "shown_name"]

# rows per row group: what datasets wrote for image datasets (~10 MB of ImageNet JPEGs),
# the unit its viewer and streaming read
ROW_GROUP_ROWS = 100
_MAGIC = b"PAR1"
_CARD = "README.md"

# -- thrift compact protocol -------------------------------------------------------------

_I32, _I64, _BINARY, _LIST, _STRUCT = 5, 6, 8, 9, 12
# parquet.thrift
_INT64, _BYTE_ARRAY = 2, 6
_OPTIONAL = 1
_UTF8 = 0
_PLAIN, _RLE = 0, 3
_UNCOMPRESSED = 0
_DATA_PAGE = 0


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _zigzag(value: int) -> bytes:
    return _varint((value << 1) ^ (value >> 63))


class _Struct:
    """A thrift struct being written; fields in ascending id order."""

    def __init__(self):
        self._out = bytearray()
        self._last = 0

    def _field(self, field_id: int, kind: int) -> bytearray:
        self._out.append((field_id - self._last) << 4 | kind)  # ids here are <= 15 apart
        self._last = field_id
        return self._out

    def i32(self, field_id: int, value: int) -> _Struct:
        self._field(field_id, _I32).extend(_zigzag(value))
        return self

    def i64(self, field_id: int, value: int) -> _Struct:
        self._field(field_id, _I64).extend(_zigzag(value))
        return self

    def text(self, field_id: int, value: str) -> _Struct:
        data = value.encode("utf-8")
        self._field(field_id, _BINARY).extend(_varint(len(data)) + data)
        return self

    def struct(self, field_id: int, value: _Struct) -> _Struct:
        self._field(field_id, _STRUCT).extend(value.bytes())
        return self

    def list(self, field_id: int, kind: int, items: list) -> _Struct:
        out = self._field(field_id, _LIST)
        out.extend([len(items) << 4 | kind] if len(items) < 15 else [0xF0 | kind])
        if len(items) >= 15:
            out.extend(_varint(len(items)))
        for item in items:
            if kind == _STRUCT:
                out.extend(item.bytes())
            elif kind == _BINARY:
                data = item.encode("utf-8")
                out.extend(_varint(len(data)) + data)
            else:
                out.extend(_zigzag(item))
        return self

    def bytes(self) -> bytes:
        return bytes(self._out) + b"\x00"


class _Decoder:
    """Reads thrift compact structs into {field id: value} dicts (lists as lists)."""

    def __init__(self, data: bytes, offset: int = 0):
        self.data, self.offset = data, offset

    def _byte(self) -> int:
        value = self.data[self.offset]
        self.offset += 1
        return value

    def _varint(self) -> int:
        shift = value = 0
        while True:
            byte = self._byte()
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7

    def _int(self) -> int:
        raw = self._varint()
        return (raw >> 1) ^ -(raw & 1)

    def _value(self, kind: int):
        if kind in (1, 2):  # booleans carry their value in the type
            return kind == 1
        if kind == 3:
            return self._byte()
        if kind in (4, 5, 6):
            return self._int()
        if kind == 7:
            self.offset += 8
            return struct.unpack_from("<d", self.data, self.offset - 8)[0]
        if kind == _BINARY:
            size = self._varint()
            self.offset += size
            return self.data[self.offset - size : self.offset]
        if kind in (_LIST, 10):
            header = self._byte()
            size, element = header >> 4, header & 0x0F
            if size == 15:
                size = self._varint()
            return [self._value(element) for _ in range(size)]
        if kind == _STRUCT:
            return self.struct()
        raise ValueError(f"thrift type {kind} not expected in a Parquet footer")

    def struct(self) -> dict:
        fields, last = {}, 0
        while (header := self._byte()) != 0:
            delta, kind = header >> 4, header & 0x0F
            last = last + delta if delta else self._int()
            fields[last] = self._value(kind)
        return fields


# -- writing -------------------------------------------------------------------------


def shown_name(name: str) -> str:
    """A file name as valid UTF-8 text: undecodable bytes (surrogate escapes) as \\xNN."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _levels(count: int, level: int) -> bytes:
    """One page's definition levels, all ``level``: an RLE run behind its 4-byte length."""
    run = _varint(count << 1) + bytes([level])  # bit width <= 8: one byte per value
    return struct.pack("<I", len(run)) + run


def _byte_arrays(values: Iterable[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(value)) + value for value in values)


# the leaf columns: (path in the schema, physical type, max definition level)
_COLUMNS = (
    (("image", "bytes"), _BYTE_ARRAY, 2),
    (("image", "path"), _BYTE_ARRAY, 2),
    (("label",), _INT64, 1),
)


def _schema() -> list[_Struct]:
    string = _Struct().struct(1, _Struct())  # LogicalType is a union: STRING is field 1
    return [
        _Struct().text(4, "schema").i32(5, 2),
        _Struct().i32(3, _OPTIONAL).text(4, "image").i32(5, 2),
        _Struct().i32(1, _BYTE_ARRAY).i32(3, _OPTIONAL).text(4, "bytes"),
        _Struct()
        .i32(1, _BYTE_ARRAY)
        .i32(3, _OPTIONAL)
        .text(4, "path")
        .i32(6, _UTF8)
        .struct(10, string),
        _Struct().i32(1, _INT64).i32(3, _OPTIONAL).text(4, "label"),
    ]


def _write_row_group(
    handle, offset: int, rows: list[tuple[bytes, str, int]]
) -> tuple[int, _Struct]:
    """Write one row group at ``offset``; return the offset after it and its metadata."""
    count, start, chunks = len(rows), offset, []
    values = (
        _byte_arrays(image for image, _, _ in rows),
        _byte_arrays(path.encode("utf-8") for _, path, _ in rows),
        struct.pack(f"<{count}q", *(label for _, _, label in rows)),
    )
    for (path, kind, level), plain in zip(_COLUMNS, values, strict=True):
        body = _levels(count, level) + plain
        page = _Struct().i32(1, _DATA_PAGE).i32(2, len(body)).i32(3, len(body))
        page.struct(5, _Struct().i32(1, count).i32(2, _PLAIN).i32(3, _RLE).i32(4, _RLE))
        chunk = page.bytes() + body
        handle.write(chunk)
        meta = _Struct().i32(1, kind).list(2, _I32, [_PLAIN, _RLE]).list(3, _BINARY, list(path))
        meta.i32(4, _UNCOMPRESSED).i64(5, count).i64(6, len(chunk)).i64(7, len(chunk))
        chunks.append(_Struct().i64(2, offset).struct(3, meta.i64(9, offset)))
        offset += len(chunk)
    size = offset - start
    group = _Struct().list(1, _STRUCT, chunks).i64(2, size).i64(3, count).i64(5, start)
    return offset, group.i64(6, size)


# -- reading -------------------------------------------------------------------------


def _footer(data: bytes) -> dict:
    if len(data) < 12 or data[:4] != _MAGIC or data[-4:] != _MAGIC:
        raise ValueError("not a Parquet file (no PAR1 at both ends)")
    size = struct.unpack_from("<I", data, len(data) - 8)[0]
    if size > len(data) - 12:
        raise ValueError(f"footer length {size} is longer than the file")
    return _Decoder(data, len(data) - 8 - size).struct()


def _column_values(data: bytes, chunk: dict, rows: int) -> list:
    meta = chunk[3]
    decoder = _Decoder(data, meta[9])
    header = decoder.struct()
    if header[1] != _DATA_PAGE or meta[4] != _UNCOMPRESSED or header[5][1] != rows:
        raise ValueError("a column chunk is not one uncompressed data page of the group's rows")
    offset = decoder.offset
    offset += 4 + struct.unpack_from("<I", data, offset)[0]  # definition levels (all set)
    if meta[1] == _INT64:
        return list(struct.unpack_from(f"<{rows}q", data, offset))
    values = []
    for _ in range(rows):
        size = struct.unpack_from("<I", data, offset)[0]
        values.append(data[offset + 4 : offset + 4 + size])
        offset += 4 + size
    return values


class _ShardReader:
    """Reads our Parquet shards back row group by row group; decodes every JPEG."""

    def batches(self, path, compression: str) -> Iterator[dict]:
        data = Path(path).read_bytes()
        try:
            groups = _footer(data).get(4) or []
        except (ValueError, IndexError, KeyError, struct.error) as error:
            raise UnreadableShard(f"unreadable Parquet footer: {error}") from None
        for number, group in enumerate(groups):
            try:
                rows = group[3]
                columns = {
                    tuple(part.decode() for part in chunk[3][3]): _column_values(data, chunk, rows)
                    for chunk in group[1]
                }
                images, names, labels = (columns[path] for path, _, _ in _COLUMNS)
            except (ValueError, IndexError, KeyError, TypeError, struct.error) as error:
                raise UnreadableShard(f"row group {number}: {error}") from None
            formats = [_decoded_format(image) for image in images]
            yield {
                "filename": np.array(
                    [n.decode("utf-8").encode("utf-8", "surrogateescape") for n in names],
                    dtype=object,
                ),
                "record_bytes": np.array([len(image) for image in images], dtype=np.int64),
                "label": np.array(labels, dtype=np.int64),
                "format": np.array(formats, dtype=object),
            }


def _decoded_format(data: bytes) -> str:
    """Pillow's format name once the image decoded (what datasets' Image feature does),
    or the error."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        return image.format or "unknown"
    except Exception as error:  # noqa: BLE001 - any decoder failure is the finding
        return f"undecodable: {error}"


class ParquetFormat(RecordFormat):
    name = "parquet"
    description = "Hugging Face datasets layout: data/{split}-*.parquet, Image + ClassLabel"
    name_pattern = r"[^/]+-\d{5}-of-\d{5}\.parquet"
    zero_based_labels = True  # ClassLabel counts from 0
    metadata_pattern = re.escape(_CARD)

    def shard_name(self, split: str, index: int, total: int) -> str:
        return f"{split}-{index:05d}-of-{total:05d}.parquet"

    def shard_folder(self, split: str) -> str:
        return "data"  # every split's files in data/, as the Hub lays them out

    def write_shard(
        self, samples: Iterable[Sample], out_path, compression: str, index_path, label_base: int
    ) -> dict:
        count, groups, rows = 0, [], []
        with atomic_write(out_path) as handle:
            handle.write(_MAGIC)
            offset = len(_MAGIC)
            for sample in samples:
                jpeg_header(sample)
                label = self.label(sample.label_index, label_base)
                rows.append((sample.data, shown_name(sample.filename), label))
                if len(rows) == ROW_GROUP_ROWS:
                    offset, group = _write_row_group(handle, offset, rows)
                    groups.append(group)
                    count, rows = count + len(rows), []
            if rows:
                offset, group = _write_row_group(handle, offset, rows)
                groups.append(group)
                count += len(rows)
            footer = _Struct().i32(1, 1).list(2, _STRUCT, _schema()).i64(3, count)
            footer = footer.list(4, _STRUCT, groups).text(6, "imgprep").bytes()
            handle.write(footer + struct.pack("<I", len(footer)) + _MAGIC)
        return written(out_path, count)

    def reader(self, threads: int) -> _ShardReader:
        return _ShardReader()

    def previews(self, path, compression: str | None, limit: int) -> Iterator:
        """The first ``limit`` rows by this module's reader, the image bytes decoded by
        Pillow (what datasets' Image feature does), in the stored mode; the text is the
        ClassLabel name (the synset) from the folder's README.md where it is there."""
        from imgprep.formats.base import Preview

        data = Path(path).read_bytes()
        names = self.class_names(Path(path).parent.parent / _CARD)
        left = limit
        for group in _footer(data).get(4) or []:
            if left <= 0:
                break
            rows = group[3]
            columns = {
                tuple(part.decode() for part in chunk[3][3]): _column_values(data, chunk, rows)
                for chunk in group[1]
            }
            images, paths, labels = (columns[column][:left] for column, _, _ in _COLUMNS)
            for image_bytes, name, label in zip(images, paths, labels, strict=True):
                with Image.open(io.BytesIO(image_bytes)) as image:
                    pixels = np.asarray(image)
                yield Preview(
                    filename=name.decode("utf-8"),
                    label=label,
                    text=names[label] if 0 <= label < len(names) else "",
                    image=pixels.reshape(*pixels.shape[:2], -1),
                )
            left -= len(images)

    @staticmethod
    def class_names(card) -> list[str]:
        """The ClassLabel names of a dataset card that ``dataset_card`` wrote (one JSON
        quoted ``"i": "name"`` line each); none where there is no card."""
        try:
            lines = Path(card).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        start = lines.index("        names:") + 1 if "        names:" in lines else len(lines)
        names = []
        for line in lines[start:]:
            if not line.startswith("          "):
                break
            number, _, name = line.strip().partition(": ")
            if int(json.loads(number)) != len(names):
                raise ValueError(f"{card}: class {number} out of order")
            names.append(json.loads(name))
        return names

    def check_batch(self, batch: dict, first: int, expected, problems, seen) -> None:
        # names are stored as shown_name(): map them back to the index's names
        originals = {shown_name(name): name for name in expected}
        for i, raw in enumerate(batch["filename"]):
            stored = raw.decode("utf-8", "surrogateescape")
            name = originals.get(stored, stored)
            where = f"record {first + i} ({stored})"
            seen["names"][name] += 1
            label = int(batch["label"][i])
            seen["labels"].add(label)
            if batch["format"][i] != "JPEG":
                problems.add("image not a decodable JPEG", f"{where}: {batch['format'][i]}")
            wanted = expected.get(name)
            if wanted and all(w[0] != label for w in wanted):
                problems.add("wrong label", f"{where}: {label}, want {wanted[0][0]}")

    # -- the dataset card ------------------------------------------------------------

    def metadata_files(self, splits, compression: str) -> list[str]:
        return [_CARD]

    def metadata(self, name: str, inputs: MetadataInputs) -> str:
        if name != _CARD:
            return super().metadata(name, inputs)
        labels = read_labels(inputs.labels_tsv, inputs.label_base)
        synsets = sorted(labels.index, key=labels.index.__getitem__)
        return dataset_card(synsets, inputs.record_paths)

    def loading_snippet(self, records_folder: str, splits, config: dict) -> str:
        """``datasets.load_dataset`` over the folder (README, *Hugging Face datasets*):
        its README.md declares the features and each split's files."""
        import json

        return f"""import datasets

data_dir = {json.dumps(records_folder)}  # relative to this card's folder: run it from there
dataset = datasets.load_dataset(data_dir)  # a local folder: no network
for split in {json.dumps(list(splits))}:
    rows = dataset[split]
    names = rows.features["label"].names  # the synsets, in label order
    count = sum(1 for row in rows if row["image"].size)  # a PIL image, the class index
    print(f"{{split}}: {{count}} records")
"""


def dataset_card(class_names: list[str], record_paths) -> str:
    """README.md whose YAML header ``datasets`` reads: the features (class names in label
    order) and, per split, its files. Written as JSON-quoted YAML (a YAML superset of
    JSON strings), so no name needs YAML escaping rules."""
    quoted = json.dumps
    lines = [
        "---",
        "dataset_info:",
        "  features:",
        "  - name: image",
        "    dtype: image",
        "  - name: label",
        "    dtype:",
        "      class_label:",
        "        names:",
        *(
            f"          {quoted(str(i))}: {quoted(shown_name(n))}"
            for i, n in enumerate(class_names)
        ),
        "configs:",
        "- config_name: default",
        "  data_files:",
    ]
    for split, paths in record_paths.items():
        lines += [f"  - split: {quoted(split)}", "    path:"]
        lines += [f"    - {quoted(path)}" for path in paths]
    body = (
        "Images resized by imgprep, in the layout of Hugging Face `datasets`: "
        '`datasets.load_dataset("<this folder>")` gives `image` (an Image) and `label` '
        "(a ClassLabel of the synsets above)."
    )
    return "\n".join([*lines, "---", "", body, ""])


FORMAT = ParquetFormat()
