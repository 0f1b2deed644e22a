"""TFRecord shards of ``tf.train.Example`` face images: written, and indexed for random access.

A TFRecord file is a sequence of ``uint64 length, uint32 masked CRC of the length, data, uint32 masked CRC
of the data`` (little-endian). Indexing the byte offset of every record once lets the input pipeline read
records in any order - a true shuffle across all shards instead of a shuffle buffer over file order.
Examples hold the encoded image under ``image`` (or ``image/encoded``) and the class under ``label``
(or ``image/class/label``), the two common conventions.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from k210tool.errors import InputError

_HEAD = struct.Struct("<QI")
IMAGE_KEYS = ("image", "image/encoded")
LABEL_KEYS = ("label", "image/class/label")


def scan(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """``(offsets, labels)`` of every record in an uncompressed TFRecord file."""
    p = Path(path)
    offsets: list[int] = []
    labels: list[int] = []
    size = p.stat().st_size
    with open(p, "rb") as fh:
        if fh.read(2) == b"\x1f\x8b":
            raise InputError(f"{p} is gzip-compressed", "write uncompressed TFRecords for random access")
        pos = 0
        while pos < size:
            fh.seek(pos)
            head = fh.read(_HEAD.size)
            if len(head) < _HEAD.size:
                raise InputError(f"{p}: truncated TFRecord header at byte {pos}")
            (length, _crc) = _HEAD.unpack(head)
            if pos + _HEAD.size + length + 4 > size:
                raise InputError(f"{p}: record at byte {pos} says {length} bytes but the file ends first")
            offsets.append(pos)
            labels.append(example_label(fh.read(length), f"{p} record {len(offsets) - 1}"))
            pos += _HEAD.size + length + 4
    return np.array(offsets, np.int64), np.array(labels, np.int64)


def read_at(fd: int, offset: int, where: str = "TFRecord file") -> bytes:
    """The serialized record starting at ``offset``."""
    head = os.pread(fd, _HEAD.size, offset)
    if len(head) < _HEAD.size:
        raise InputError(f"{where}: no record at byte {offset}")
    (length, _crc) = _HEAD.unpack(head)
    data = os.pread(fd, length, offset + _HEAD.size)
    if len(data) < length:
        raise InputError(f"{where}: record at byte {offset} is cut off")
    return data


def _parse(serialized: bytes, where: str) -> object:
    from k210tool.tfutil import import_tf

    tf = import_tf()
    try:
        return tf.train.Example.FromString(serialized)
    except Exception as exc:  # protobuf's DecodeError; not importable without protobuf internals
        raise InputError(f"{where} is not a tf.train.Example ({exc})") from None


def _feature(serialized: bytes, keys: tuple[str, ...], kind: str, where: str) -> object:
    """The first value of the first of ``keys`` present as a ``kind`` ("int64_list"/"bytes_list") feature."""
    feats = _parse(serialized, where).features.feature  # type: ignore[attr-defined]
    for key in keys:
        if key in feats and getattr(feats[key], kind).value:
            return getattr(feats[key], kind).value[0]
    wanted = "int64" if kind == "int64_list" else "bytes"
    raise InputError(f"{where} has no {wanted} feature {keys[0]!r}", f"features are {', '.join(sorted(feats))}")


def example_label(serialized: bytes, where: str = "record") -> int:
    return int(_feature(serialized, LABEL_KEYS, "int64_list", where))  # type: ignore[call-overload]


def example_image(serialized: bytes, where: str = "record") -> bytes:
    return bytes(_feature(serialized, IMAGE_KEYS, "bytes_list", where))  # type: ignore[call-overload]


def make_example(image: bytes, label: int) -> bytes:
    from k210tool.tfutil import import_tf

    tf = import_tf()
    feature = {
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_shards(prefix: Path | str, samples: Iterable[tuple[bytes, int]], shards: int = 1) -> list[Path]:
    """Write samples round-robin into ``prefix-0000N-of-0000M.tfrecord`` files (each renamed into place)."""
    from k210tool.fileio import check_output_path
    from k210tool.tfutil import import_tf

    tf = import_tf()
    if shards < 1:
        raise InputError("--shards must be at least 1")
    base = Path(prefix)
    paths = [check_output_path(base.with_name(f"{base.name}-{i:05d}-of-{shards:05d}.tfrecord"))
             for i in range(shards)]
    tmps = [p.with_name(f".{p.name}.{os.getpid()}.tmp") for p in paths]
    writers = [tf.io.TFRecordWriter(str(t)) for t in tmps]
    try:
        for n, (image, label) in enumerate(samples):
            writers[n % shards].write(make_example(image, label))
    except BaseException:
        for w, t in zip(writers, tmps, strict=True):
            w.close()
            t.unlink(missing_ok=True)
        raise
    for w, t, p in zip(writers, tmps, paths, strict=True):
        w.close()
        os.replace(t, p)
    return paths
