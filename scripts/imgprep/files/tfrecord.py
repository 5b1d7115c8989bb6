"""Write (and read back) TFRecord files of tf.train.Example without TensorFlow.

The records job runs once per shard, over a thousand times for ImageNet, and
``import tensorflow`` alone costs seconds per process. The wire formats involved
are small and stable, so they are encoded here directly:

* tf.train.Example protobuf, byte-identical to
  ``tf.train.Example(...).SerializeToString(deterministic=True)`` as produced by
  the pinned protobuf (upb backend);
* TFRecord framing (length, masked CRC32C of the length, data, masked CRC32C of
  the data), optionally inside one GZIP or ZLIB stream as tf.data reads it;
* the record index DALI's ``fn.readers.tfrecord`` and the PyTorch ``tfrecord``
  package read: one ``"<offset> <length>\n"`` line per record, offset of its length
  field in the file, length of the whole framed record (8 + 4 + data + 4 bytes),
  as their ``tfrecord2idx`` tools write it. Uncompressed files only: both readers
  seek to those offsets in the raw file.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import numbers
import os
import struct
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import google_crc32c
import numpy as np

from imgprep.atomic import atomic_write

__all__ = [
    "Feature",
    "TFRecordWriter",
    "bytes_feature",
    "encode_example",
    "float_feature",
    "int64_feature",
    "iter_records",
    "masked_crc32c",
    "normalize_compression",
    "record_index",
    "serialize_tensor_uint8",
]

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_UINT64_MASK = (1 << 64) - 1
# zlib window bits: 15 = zlib container, 16 + 15 = gzip container. zlib's own
# gzip header has mtime 0 and no file name, so the output depends on the data only.
_WBITS = {"ZLIB": 15, "GZIP": 16 + 15}
# TensorFlow's writer default (Z_DEFAULT_COMPRESSION); JPEG bytes barely shrink anyway.
_LEVEL = 6


# -- protobuf wire encoding ---------------------------------------------------------


def _varint(value: int) -> bytes:
    """Base-128 varint; negative int64 become their 10-byte two's complement."""
    value &= _UINT64_MASK
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field (tags used here are single-byte)."""
    return bytes((tag,)) + _varint(len(payload)) + payload


@dataclass(frozen=True, slots=True)
class Feature:
    """One tf.train.Feature, kept as its serialized bytes.

    Encoding at construction time lets a builder reuse a feature (a constant
    ``image/format``) across examples without paying for it again.
    """

    kind: str  # "bytes_list" | "float_list" | "int64_list"
    payload: bytes  # the serialized Feature message


def _is_scalar(values) -> bool:
    return isinstance(values, (str, bytes, bytearray, memoryview, numbers.Number, np.generic))


def _as_bytes(value) -> bytes:
    if isinstance(value, str):  # surrogate escapes: the original bytes of an odd file name
        return value.encode("utf-8", "surrogateescape")
    if isinstance(value, (bytes, bytearray, memoryview, np.bytes_)):
        return bytes(value)
    raise TypeError(f"bytes_feature takes bytes or str, not {type(value).__name__}")


def bytes_feature(values) -> Feature:
    """BytesList feature from bytes/str or a list of them (str is UTF-8 encoded)."""
    if _is_scalar(values):
        values = [values]
    body = b"".join(_field(0x0A, _as_bytes(v)) for v in values)
    return Feature("bytes_list", _field(0x0A, body))  # Feature.bytes_list = 1


def int64_feature(values) -> Feature:
    """Int64List feature (packed varints) from an int or a sequence/array of ints."""
    if _is_scalar(values):
        values = [values]
    if isinstance(values, np.ndarray):
        if values.dtype.kind not in "iub":
            raise TypeError(f"int64_feature needs integers, got dtype {values.dtype}")
        values = values.ravel().tolist()
    ints = []
    for v in values:
        if isinstance(v, (float, np.floating)) or not isinstance(v, (numbers.Integral)):
            raise TypeError(f"int64_feature needs integers, got {v!r}")
        v = int(v)
        if not _INT64_MIN <= v <= _INT64_MAX:
            raise ValueError(f"{v} does not fit in int64")
        ints.append(v)
    if ints and all(0 <= v < 0x80 for v in ints):
        packed = bytes(ints)  # the common case (labels, sizes < 128): one byte each
    else:
        packed = b"".join(map(_varint, ints))
    body = _field(0x0A, packed) if ints else b""  # empty packed fields are omitted
    return Feature("int64_list", _field(0x1A, body))  # Feature.int64_list = 3


def float_feature(values) -> Feature:
    """FloatList feature (packed float32); numpy arrays of any shape are flattened."""
    array = np.asarray(values, dtype="<f4").ravel()
    body = _field(0x0A, array.tobytes()) if array.size else b""
    return Feature("float_list", _field(0x12, body))  # Feature.float_list = 2


def _map_order(key: bytes) -> tuple[int, ...]:
    """Sort key reproducing upb's deterministic map order for string keys.

    Keys compare bytewise, but where one key is a prefix of another the LONGER
    one comes first (so "" is last). C++ protobuf puts the shorter first; the two
    agree whenever no key is a prefix of another, as in every schema here.
    """
    return (*key, 256)


def encode_example(features: Mapping[str, Feature]) -> bytes:
    """Serialize a tf.train.Example holding ``features`` (deterministic map order)."""
    entries = []
    for key in sorted((k.encode("utf-8") for k in features), key=_map_order):
        feature = features[key.decode("utf-8")]
        if not isinstance(feature, Feature):
            raise TypeError(f"feature {key.decode()!r} is {type(feature).__name__}, not Feature")
        # map entry: key = 1, value = 2; upb writes both even when empty
        entries.append(_field(0x0A, _field(0x0A, key) + _field(0x12, feature.payload)))
    return _field(0x0A, b"".join(entries))  # Example.features = 1


_DT_UINT8 = 4  # tensorflow.DataType


def serialize_tensor_uint8(values: np.ndarray) -> bytes:
    """A 1-D uint8 array as ``tf.io.serialize_tensor`` writes it (a TensorProto).

    Fields: dtype = 1 (DT_UINT8), tensor_shape = 2 (one dim, its size = 1 inside
    dim = 2), tensor_content = 4 (the raw bytes; omitted when empty, as proto3 does).
    """
    array = np.asarray(values)
    if array.ndim != 1 or array.dtype != np.uint8:
        raise ValueError(f"need a 1-D uint8 array, got {array.dtype} {array.shape}")
    size = int(array.shape[0])
    dim = b"\x08" + _varint(size) if size else b""  # Dim.size = 1 (0 is omitted)
    shape = _field(0x12, dim)  # TensorShapeProto.dim = 2
    content = _field(0x22, array.tobytes()) if size else b""
    return b"\x08" + _varint(_DT_UINT8) + _field(0x12, shape) + content


# -- TFRecord framing ---------------------------------------------------------------


def masked_crc32c(data: bytes) -> int:
    """CRC32C masked the way TFRecord stores it (so CRCs of CRCs stay useful)."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def normalize_compression(compression: str | None) -> str:
    """TensorFlow's compression_type ("", "GZIP", "ZLIB") for None, "" or the config's
    none/gzip/zlib, in any case."""
    name = (compression or "").upper()
    name = "" if name == "NONE" else name
    if name not in ("", "GZIP", "ZLIB"):
        raise ValueError(f"compression must be None, 'none', 'GZIP' or 'ZLIB', not {compression!r}")
    return name


_FRAMING = 8 + 4 + 4  # length, its CRC, the data's CRC


class TFRecordWriter:
    """Write a TFRecord file atomically: the file appears only on a clean close.

    ``count``, ``nbytes`` and ``sha256`` (of the bytes on disk) are filled in at
    close so callers can record them without re-reading the shard. With
    ``index_path`` (uncompressed only) the DALI / ``tfrecord`` index is written
    alongside, in the same pass, and appears at the same close.
    """

    def __init__(self, path, compression: str | None = None, index_path=None):
        self.path = path
        self.compression = normalize_compression(compression)
        if index_path is not None and self.compression:
            raise ValueError(
                f"no record index for {self.compression} files: DALI and tfrecord seek in "
                "the raw file, which a compressed stream does not allow"
            )
        self.count = 0
        self.nbytes: int | None = None
        self.sha256: str | None = None
        self._hash = hashlib.sha256()
        self._written = 0
        self._stack = contextlib.ExitStack()
        self._file = self._stack.enter_context(atomic_write(path, "wb"))
        self._index = (
            self._stack.enter_context(atomic_write(index_path, "w", encoding="ascii", newline=""))
            if index_path is not None
            else None
        )
        self._zip = (
            zlib.compressobj(_LEVEL, zlib.DEFLATED, _WBITS[self.compression])
            if self.compression
            else None
        )
        self._closed = False

    def _emit(self, data: bytes) -> None:
        if self._zip is not None:
            data = self._zip.compress(data)
            if not data:
                return
        self._hash.update(data)
        self._written += len(data)
        self._file.write(data)

    def write(self, record: bytes) -> None:
        """Append one record (any bytes; usually an encoded Example)."""
        if self._closed:
            raise ValueError("write to a closed TFRecordWriter")
        length = struct.pack("<Q", len(record))
        offset = self._written
        self._emit(length + struct.pack("<I", masked_crc32c(length)))
        self._emit(record)
        self._emit(struct.pack("<I", masked_crc32c(record)))
        if self._index is not None:
            self._index.write(f"{offset} {self._written - offset}\n")
        self.count += 1

    def close(self) -> None:
        """Finish the stream and move the file into place."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._zip is not None:
                tail = self._zip.flush()
                self._zip = None
                self._hash.update(tail)
                self._written += len(tail)
                self._file.write(tail)
        except BaseException as exc:
            self._stack.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self._stack.close()
        self.nbytes = self._written
        self.sha256 = self._hash.hexdigest()

    def abort(self) -> None:
        """Drop everything written so far; no file (and no temp file) remains."""
        if self._closed:
            return
        self._closed = True
        self._zip = None
        with contextlib.suppress(_Aborted):
            self._stack.__exit__(_Aborted, _Aborted(), None)

    def __enter__(self) -> TFRecordWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


def record_index(path) -> bytes:
    """The index ``tfrecord2idx`` (DALI's and the ``tfrecord`` package's) computes for
    an uncompressed TFRecord file: ``"<offset> <length>\n"`` per record.

    Walks the length fields only (seeking past the data), so checking an index costs
    one small read per record. Raises ValueError on a truncated file.
    """
    lines = []
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        offset = 0
        while offset < size:
            header = handle.read(8)
            if len(header) < 8:
                raise ValueError(f"{path}: truncated record at byte {offset}")
            (length,) = struct.unpack("<Q", header)
            framed = length + _FRAMING
            if offset + framed > size:
                raise ValueError(f"{path}: record at byte {offset} runs past the end")
            lines.append(f"{offset} {framed}\n")
            offset += framed
            handle.seek(offset)
    return "".join(lines).encode("ascii")


class _Aborted(Exception):
    """Thrown into atomic_write to make it discard the temp file."""


class _ZlibReader:
    """Minimal read(n) over a single zlib stream, decompressing in bounded chunks."""

    def __init__(self, raw, wbits: int):
        self._raw = raw
        self._inflate = zlib.decompressobj(wbits)
        self._buf = bytearray()

    def read(self, n: int) -> bytes:
        while len(self._buf) < n and not self._inflate.eof:
            chunk = self._inflate.unconsumed_tail or self._raw.read(1 << 16)
            if not chunk:
                raise ValueError("compressed stream ends early")
            self._buf += self._inflate.decompress(chunk, 1 << 20)
        if self._inflate.eof and (self._inflate.unused_data or self._raw.read(1)):
            raise ValueError("data after the end of the compressed stream")
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out


def iter_records(path, compression: str | None = None) -> Iterator[bytes]:
    """Yield the records of a TFRecord file, checking both CRCs of each.

    Raises ValueError on a bad CRC, a truncated record or a broken stream. Meant
    for debugging and tests; tf.data is the fast reader.
    """
    compression = normalize_compression(compression)
    with open(path, "rb") as raw:
        if compression == "GZIP":
            # gzip.GzipFile also accepts concatenated members, as TF's reader does
            stream = gzip.GzipFile(fileobj=raw, mode="rb")
        elif compression == "ZLIB":
            stream = _ZlibReader(raw, _WBITS["ZLIB"])
        else:
            stream = raw
        number = 0
        while True:
            try:
                header = stream.read(12)
                if not header:
                    return
                if len(header) < 12:
                    raise ValueError(f"{path}: record {number}: truncated header")
                (length,) = struct.unpack("<Q", header[:8])
                (length_crc,) = struct.unpack("<I", header[8:])
                if masked_crc32c(header[:8]) != length_crc:
                    raise ValueError(f"{path}: record {number}: length CRC mismatch")
                data = stream.read(length)
                footer = stream.read(4)
            except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
                raise ValueError(f"{path}: record {number}: corrupt stream: {exc}") from exc
            if len(data) < length or len(footer) < 4:
                raise ValueError(f"{path}: record {number}: truncated data")
            if masked_crc32c(data) != struct.unpack("<I", footer)[0]:
                raise ValueError(f"{path}: record {number}: data CRC mismatch")
            yield data
            number += 1
