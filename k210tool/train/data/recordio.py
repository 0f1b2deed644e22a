"""insightface RecordIO (``train.rec`` + ``train.idx``), read and written without mxnet.

The layout, as dmlc-core's RecordIO and mxnet's ``recordio.py`` define it (learned from their sources):

* ``.rec`` is a sequence of chunks: ``uint32 magic (0xCED7230A)``, ``uint32 lrecord`` whose upper 3 bits are
  a continuation flag and lower 29 bits the chunk length, the chunk bytes, zero padding to 4 bytes. A record
  whose bytes contain the magic number at a 4-byte aligned position is split there into several chunks
  (flag 1 = first, 2 = middle, 3 = last; 0 = a whole record); the reader puts the magic back between them.
* ``.idx`` is text, one ``key<TAB>byte offset`` line per record.
* A record is an image record: the 24-byte ``IRHeader`` (``uint32 flag, float32 label, uint64 id,
  uint64 id2``; if ``flag > 0`` the label is instead ``flag`` float32 values following the header) and then
  the encoded image.
* insightface's face sets put a header record at key 0 with ``flag > 0`` and ``label = (first identity
  record, end of identity records)``: images are keys ``1 .. label[0]-1``, then one record per identity
  whose label is the ``(first image key, end image key)`` range of that identity.

Everything is little-endian, as mxnet writes it on x86 and ARM.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from k210tool.errors import InputError

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_LENGTH_BITS = 29
_CHUNK_HEAD = struct.Struct("<II")
IR_HEADER = struct.Struct("<IfQQ")  # flag, label, id, id2: 24 bytes


@dataclass(frozen=True)
class IRHeader:
    flag: int
    label: tuple[float, ...]  # one value when flag == 0, else ``flag`` values
    id: int = 0
    id2: int = 0


def pack(label: float | tuple[float, ...] | list[float], payload: bytes, id: int = 0, id2: int = 0) -> bytes:
    """An image record: IRHeader (+ extra float32 labels when ``label`` is a sequence) + ``payload``."""
    if isinstance(label, (int, float)):
        return IR_HEADER.pack(0, float(label), id, id2) + payload
    values = np.asarray(label, "<f4")
    return IR_HEADER.pack(len(values), 0.0, id, id2) + values.tobytes() + payload


def unpack(record: bytes, where: str = "record") -> tuple[IRHeader, bytes]:
    if len(record) < IR_HEADER.size:
        raise InputError(f"{where} is {len(record)} bytes, shorter than an image record header")
    flag, label, rid, rid2 = IR_HEADER.unpack_from(record)
    body = record[IR_HEADER.size:]
    if flag == 0:
        return IRHeader(0, (float(label),), rid, rid2), body
    if len(body) < 4 * flag:
        raise InputError(f"{where} says it has {flag} labels but is too short for them")
    labels = tuple(float(v) for v in np.frombuffer(body[: 4 * flag], "<f4"))
    return IRHeader(flag, labels, rid, rid2), body[4 * flag:]


def read_idx(path: Path | str) -> list[tuple[int, int]]:
    """``(key, offset)`` pairs of a ``.idx`` file, in file order."""
    p = Path(path)
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read RecordIO index {p}: {exc}") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t") if "\t" in line else line.split()
        try:
            out.append((int(parts[0]), int(parts[1])))
        except (ValueError, IndexError):
            raise InputError(f"{p}:{n}: expected 'key<TAB>offset', got {line[:60]!r}") from None
    if not out:
        raise InputError(f"RecordIO index {p} is empty")
    return out


def read_record(fd: int, offset: int, where: str = "RecordIO file") -> bytes:
    """The record starting at byte ``offset`` of the open file ``fd`` (chunks joined, magic restored)."""
    parts: list[bytes] = []
    pos = offset
    while True:
        head = os.pread(fd, _CHUNK_HEAD.size, pos)
        if len(head) < _CHUNK_HEAD.size:
            raise InputError(f"{where}: truncated record at byte {pos}")
        magic, lrec = _CHUNK_HEAD.unpack(head)
        if magic != MAGIC:
            raise InputError(f"{where}: no RecordIO record at byte {pos} (bad magic {magic:#x})",
                             "is the .idx file the one written with this .rec?")
        flag, length = lrec >> _LENGTH_BITS, lrec & ((1 << _LENGTH_BITS) - 1)
        data = os.pread(fd, length, pos + _CHUNK_HEAD.size)
        if len(data) < length:
            raise InputError(f"{where}: record at byte {pos} is cut off")
        parts.append(data)
        pos += _CHUNK_HEAD.size + ((length + 3) & ~3)
        if flag in (0, 3):
            return _MAGIC_BYTES.join(parts)
        if flag not in (1, 2):
            raise InputError(f"{where}: invalid continuation flag {flag} at byte {pos}")


def encode_chunks(record: bytes) -> bytes:
    """The on-disk form of one record, split where the magic number occurs at aligned positions."""
    splits = [i for i in range(0, len(record) - 3, 4) if record[i:i + 4] == _MAGIC_BYTES]
    out = bytearray()
    start = 0
    for n, i in enumerate(splits):
        out += _chunk(1 if n == 0 else 2, record[start:i])
        start = i + 4
    out += _chunk(3 if splits else 0, record[start:])
    return bytes(out)


def _chunk(flag: int, data: bytes) -> bytes:
    pad = (-len(data)) % 4
    return _CHUNK_HEAD.pack(MAGIC, (flag << _LENGTH_BITS) | len(data)) + data + b"\0" * pad


class RecordIOWriter:
    """Writes ``name.rec`` + ``name.idx``; both appear (renamed from temporary files) only on success."""

    def __init__(self, rec_path: Path | str, idx_path: Path | str | None = None) -> None:
        from k210tool.fileio import check_output_path

        self.rec_path = check_output_path(rec_path)
        self.idx_path = check_output_path(idx_path or self.rec_path.with_suffix(".idx"))
        self._rec_tmp = self.rec_path.with_name(f".{self.rec_path.name}.{os.getpid()}.tmp")
        self._idx_tmp = self.idx_path.with_name(f".{self.idx_path.name}.{os.getpid()}.tmp")
        self._rec = open(self._rec_tmp, "wb")
        self._idx = open(self._idx_tmp, "w")

    def write(self, key: int, record: bytes) -> None:
        self._idx.write(f"{key}\t{self._rec.tell()}\n")
        self._rec.write(encode_chunks(record))

    def close(self, ok: bool = True) -> None:
        for fh in (self._rec, self._idx):
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
        if ok:
            os.replace(self._rec_tmp, self.rec_path)
            os.replace(self._idx_tmp, self.idx_path)
        else:
            for tmp in (self._rec_tmp, self._idx_tmp):
                tmp.unlink(missing_ok=True)

    def __enter__(self) -> RecordIOWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.close(ok=exc_type is None)


def write_face_recordio(rec_path: Path | str, samples: Iterator[tuple[bytes, int]] | list[tuple[bytes, int]]) -> int:
    """Write (encoded image, class) samples in insightface's layout (header record, identity records).

    Samples must come grouped by class with classes 0, 1, 2, ... in order. Returns the image count.
    """
    items = list(samples)
    labels = [label for _, label in items]
    if labels != sorted(labels) or (labels and (labels[0] != 0 or len(set(labels)) != labels[-1] + 1)):
        raise InputError("RecordIO samples must be grouped by class, classes numbered 0..N-1 in order")
    classes = len(set(labels))
    first_id = len(items) + 1
    with RecordIOWriter(rec_path) as w:
        w.write(0, pack((first_id, first_id + classes), b""))
        for key, (image, label) in enumerate(items, 1):
            w.write(key, pack(float(label), image, id=key))
        bounds = np.searchsorted(labels, np.arange(classes + 1)) + 1
        for c in range(classes):
            w.write(first_id + c, pack((int(bounds[c]), int(bounds[c + 1])), b""))
    return len(items)


@dataclass
class RecordIOIndex:
    """Byte offsets and class labels of the image records in a ``.rec``."""

    keys: np.ndarray  # int64 record keys
    offsets: np.ndarray  # int64 byte offsets
    labels: np.ndarray  # float64 labels as stored (mapped to 0..N-1 by the caller)


def index_recordio(rec_path: Path | str, idx_path: Path | str | None = None) -> RecordIOIndex:
    """Find the image records and their labels, using insightface's identity records when present."""
    rec = Path(rec_path)
    idx = Path(idx_path) if idx_path else rec.with_suffix(".idx")
    if not rec.is_file():
        raise InputError(f"RecordIO file {rec} does not exist")
    if not idx.is_file():
        raise InputError(f"{rec} has no index {idx}", "RecordIO training data needs train.rec and train.idx")
    entries = dict(read_idx(idx))
    fd = os.open(rec, os.O_RDONLY)
    try:
        first, _ = unpack(read_record(fd, entries[min(entries)], str(rec)), f"{rec} record {min(entries)}")
        if min(entries) == 0 and first.flag > 0 and len(first.label) >= 2:
            keys, labels = _insightface_layout(fd, rec, entries, first)
        else:
            keys = np.array(sorted(entries), np.int64)
            labels = np.array([_label_of(fd, rec, k, entries[k]) for k in keys], np.float64)
    finally:
        os.close(fd)
    offsets = np.array([entries[int(k)] for k in keys], np.int64)
    return RecordIOIndex(keys, offsets, labels)


def _label_of(fd: int, rec: Path, key: int, offset: int) -> float:
    header, _ = unpack(read_record(fd, offset, str(rec)), f"{rec} record {key}")
    return header.label[0]


def _insightface_layout(fd: int, rec: Path, entries: dict[int, int],
                        first: IRHeader) -> tuple[np.ndarray, np.ndarray]:
    id_start, id_end = int(first.label[0]), int(first.label[1])
    keys = np.arange(1, id_start, dtype=np.int64)
    missing = [int(k) for k in keys[:1].tolist() + keys[-1:].tolist() if int(k) not in entries]
    if missing:
        raise InputError(f"{rec}: the header says images are keys 1..{id_start - 1}, but key {missing[0]} "
                         "is not in the index")
    # one identity record per class gives its image range; the class is what its first image says
    labels = np.full(len(keys), np.nan)
    for key in range(id_start, id_end):
        if key not in entries:
            break
        header, _ = unpack(read_record(fd, entries[key], str(rec)), f"{rec} identity record {key}")
        lo, hi = int(header.label[0]), int(header.label[1])
        if not 1 <= lo < hi <= id_start or lo not in entries:
            break
        labels[lo - 1:hi - 1] = _label_of(fd, rec, lo, entries[lo])
    if np.isnan(labels).any():  # no (or incomplete) identity records: read each image's own label
        labels = np.array([_label_of(fd, rec, int(k), entries[int(k)]) for k in keys], np.float64)
    return keys, labels
