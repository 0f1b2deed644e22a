"""RecordIO files are built here from the format's description (dmlc-core recordio.h/.cc, mxnet
recordio.py), independently of k210tool's writer, and read back with k210tool's reader."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from k210tool.errors import InputError
from k210tool.train.data import recordio
from k210tool.train.data.index import open_dataset

MAGIC = 0xCED7230A


def spec_record(payload: bytes) -> bytes:
    """One record as dmlc's RecordIOWriter writes it: split at aligned magic words, 29-bit lengths."""
    magic = struct.pack("<I", MAGIC)
    out, start, parts = b"", 0, []
    for i in range(0, len(payload) // 4 * 4, 4):
        if payload[i:i + 4] == magic:
            parts.append((1 if not parts else 2, payload[start:i]))
            start = i + 4
    parts.append((3 if parts else 0, payload[start:]))
    for cflag, data in parts:
        out += magic + struct.pack("<I", (cflag << 29) | len(data)) + data + b"\0" * ((4 - len(data) % 4) % 4)
    return out


def spec_image_record(label: float | list[float], image: bytes, rid: int) -> bytes:
    if isinstance(label, list):
        return struct.pack("<IfQQ", len(label), 0.0, rid, 0) + np.asarray(label, "<f4").tobytes() + image
    return struct.pack("<IfQQ", 0, label, rid, 0) + image


def write_spec_rec(folder: Path, records: list[tuple[int, bytes]]) -> Path:
    rec, idx = folder / "train.rec", folder / "train.idx"
    body, lines = b"", []
    for key, payload in records:
        lines.append(f"{key}\t{len(body)}\n")
        body += spec_record(payload)
    rec.write_bytes(body)
    idx.write_text("".join(lines))
    return rec


def _png(value: int) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", np.full((8, 8, 3), value, np.uint8))
    assert ok
    return buf.tobytes()


def insightface_set(folder: Path, per_class: list[int]) -> list[tuple[bytes, int]]:
    """insightface layout: header record 0, images 1..n, then one (start, end) record per identity."""
    samples = [(_png(10 * c + j), c) for c, n in enumerate(per_class) for j in range(n)]
    first = len(samples) + 1
    records = [(0, spec_image_record([float(first), float(first + len(per_class))], b"", 0))]
    records += [(k, spec_image_record(float(c), img, k)) for k, (img, c) in enumerate(samples, 1)]
    bounds = np.cumsum([0] + per_class) + 1
    records += [(first + c, spec_image_record([float(bounds[c]), float(bounds[c + 1])], b"", 0))
                for c in range(len(per_class))]
    write_spec_rec(folder, records)
    return samples


def test_insightface_layout_reads_images_and_labels(tmp_path: Path) -> None:
    samples = insightface_set(tmp_path, [3, 1, 4])
    index = open_dataset(tmp_path)
    assert index.kind == "recordio" and len(index) == 8 and index.num_classes == 3
    assert index.labels.tolist() == [c for _, c in samples]
    assert [index.read(i) for i in range(len(index))] == [img for img, _ in samples]
    index.close()


def test_plain_layout_takes_each_images_own_label(tmp_path: Path) -> None:
    # no header record: keys from 0, labels scalar or arrays (flag > 0, class first)
    records = [(0, spec_image_record(7.0, _png(1), 0)), (1, spec_image_record([3.0, 0.5], _png(2), 1)),
               (2, spec_image_record(7.0, _png(3), 2))]
    write_spec_rec(tmp_path, records)
    index = open_dataset(tmp_path / "train.rec")
    assert index.class_names == ("3", "7")
    assert index.labels.tolist() == [1, 0, 1]
    assert index.read(1) == _png(2)


def test_records_containing_the_magic_number_are_joined_back(tmp_path: Path) -> None:
    magic = struct.pack("<I", MAGIC)
    payload = b"abcd" + magic + b"efgh" + magic + magic + b"xyz"  # aligned magics, one at the end region
    unaligned = b"ab" + magic + b"cd"
    write_spec_rec(tmp_path, [(0, payload), (1, unaligned)])
    raw = (tmp_path / "train.rec").read_bytes()
    assert raw.count(magic) > 2  # the writer really split it into chunks
    entries = dict(recordio.read_idx(tmp_path / "train.idx"))
    import os

    fd = os.open(tmp_path / "train.rec", os.O_RDONLY)
    try:
        assert recordio.read_record(fd, entries[0]) == payload
        assert recordio.read_record(fd, entries[1]) == unaligned
    finally:
        os.close(fd)
    assert recordio.encode_chunks(payload) == spec_record(payload)  # k210tool's writer agrees with the spec


def test_k210tool_writer_round_trips_through_the_index(tmp_path: Path) -> None:
    samples = [(_png(i), i // 2) for i in range(6)]
    recordio.write_face_recordio(tmp_path / "train.rec", samples)
    index = open_dataset(tmp_path)
    assert index.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert index.read(5) == samples[5][0]
    with pytest.raises(InputError, match="grouped by class"):
        recordio.write_face_recordio(tmp_path / "bad.rec", [(b"x", 1), (b"y", 0)])


def test_header_round_trip_with_array_labels() -> None:
    header, body = recordio.unpack(recordio.pack((1.0, 2.5, -3.0), b"IMG", id=9))
    assert header.flag == 3 and header.label == (1.0, 2.5, -3.0) and header.id == 9 and body == b"IMG"


def test_corrupt_files_are_clear_input_errors(tmp_path: Path) -> None:
    insightface_set(tmp_path, [2, 2])
    idx = tmp_path / "train.idx"
    lines = idx.read_text().splitlines()
    lines[2] = lines[2].split("\t")[0] + "\t3"  # image key 2 now points into the middle of a record
    idx.write_text("\n".join(lines) + "\n")
    index = open_dataset(tmp_path)
    with pytest.raises(InputError, match="bad magic"):
        index.read(1)
    idx.write_text("0\tabc\n")
    with pytest.raises(InputError, match="expected 'key<TAB>offset'"):
        open_dataset(tmp_path)
    (tmp_path / "train.idx").unlink()
    with pytest.raises(InputError, match="has no index"):
        open_dataset(tmp_path / "train.rec")


def test_truncated_rec_is_an_input_error(tmp_path: Path) -> None:
    insightface_set(tmp_path, [2, 2])
    rec = tmp_path / "train.rec"
    rec.write_bytes(rec.read_bytes()[:60])
    with pytest.raises(InputError, match="cut off|truncated|no RecordIO"):
        open_dataset(tmp_path)
