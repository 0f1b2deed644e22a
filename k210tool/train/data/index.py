"""One index over every training image, whatever holds it: identity folders, TFRecords or RecordIO.

:func:`open_dataset` picks the format by what exists (like insightface's data source selection) and
returns a :class:`SampleIndex`: for each sample its container, byte offset and class. The input pipeline
shuffles this index globally and reads samples by position, so every format gets the same parallel,
order-independent reading.
"""

from __future__ import annotations

import glob
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from k210tool.errors import InputError
from k210tool.preprocess import IMAGE_SUFFIXES

TFRECORD_SUFFIXES = (".tfrecord", ".tfrecords", ".tfrec")


@dataclass
class SampleIndex:
    kind: str  # folders | tfrecord | recordio
    root: str
    sources: tuple[str, ...]  # image files (folders) or container files
    source_ids: np.ndarray  # int32: which source holds sample i
    offsets: np.ndarray  # int64: byte offset in the source (0 for image files)
    labels: np.ndarray  # int32: class 0..num_classes-1
    class_names: tuple[str, ...]
    _fds: dict[int, int] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def describe(self, i: int) -> str:
        src = self.sources[int(self.source_ids[i])]
        return src if self.kind == "folders" else f"{src} @ byte {int(self.offsets[i])}"

    def read(self, i: int) -> bytes:
        """Encoded image bytes of sample ``i`` (thread-safe: positional reads on shared descriptors)."""
        sid = int(self.source_ids[i])
        if self.kind == "folders":
            try:
                return Path(self.sources[sid]).read_bytes()
            except OSError as exc:
                raise InputError(f"cannot read {self.sources[sid]}: {exc.strerror or exc}") from None
        fd = self._fd(sid)
        where = self.describe(i)
        if self.kind == "recordio":
            from k210tool.train.data import recordio

            _, image = recordio.unpack(recordio.read_record(fd, int(self.offsets[i]), where), where)
            return image
        from k210tool.train.data import tfrecord

        return tfrecord.example_image(tfrecord.read_at(fd, int(self.offsets[i]), where), where)

    def _fd(self, sid: int) -> int:
        fd = self._fds.get(sid)
        if fd is None:
            with self._lock:
                fd = self._fds.get(sid)
                if fd is None:
                    fd = self._fds[sid] = os.open(self.sources[sid], os.O_RDONLY)
        return fd

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.num_classes)


def open_dataset(path: Path | str) -> SampleIndex:
    """Index training data at ``path``.

    * a folder with ``train.rec`` + ``train.idx`` (or a ``.rec`` file with its ``.idx``): RecordIO;
    * ``.tfrecord`` file(s) - a file, a glob, or a folder holding them: TFRecords;
    * otherwise a folder of identity folders (``root/<identity>/<image>``).
    """
    text = str(path)
    if not text:
        raise InputError("no training data given", "set data.train in the config (or --data)")
    if any(c in text for c in "*?["):
        files = sorted(glob.glob(text))
        if not files:
            raise InputError(f"no files match {text}")
        return _tfrecords(text, [Path(f) for f in files])
    p = Path(path)
    if p.is_file():
        if p.suffix == ".rec":
            return _recordio(p, p.with_suffix(".idx"))
        if p.suffix in TFRECORD_SUFFIXES:
            return _tfrecords(text, [p])
        raise InputError(f"{p} is not a .rec or .tfrecord file", "or give a folder of identity folders")
    if not p.is_dir():
        raise InputError(f"training data {p} does not exist")
    if (p / "train.rec").is_file():
        return _recordio(p / "train.rec", p / "train.idx")
    shards = sorted(f for f in p.iterdir() if f.suffix in TFRECORD_SUFFIXES and f.is_file())
    if shards:
        return _tfrecords(text, shards)
    return _folders(p)


def _folders(root: Path) -> SampleIndex:
    classes: list[str] = []
    paths: list[str] = []
    labels: list[int] = []
    loose = [f for f in root.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
    for folder in sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")):
        images = sorted(str(f) for f in folder.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        if not images:
            continue
        labels.extend([len(classes)] * len(images))
        classes.append(folder.name)
        paths.extend(images)
    if not classes:
        hint = "put each identity's images in its own sub-folder" if loose else "no images found"
        raise InputError(f"{root} holds no identity folders with images", hint)
    n = len(paths)
    return SampleIndex("folders", str(root), tuple(paths), np.arange(n, dtype=np.int32),
                       np.zeros(n, np.int64), np.asarray(labels, np.int32), tuple(classes))


def _recordio(rec: Path, idx: Path) -> SampleIndex:
    from k210tool.train.data.recordio import index_recordio

    found = index_recordio(rec, idx)
    if len(found.keys) == 0:
        raise InputError(f"{rec} holds no image records")
    values, labels = np.unique(found.labels, return_inverse=True)
    names = tuple(str(int(v)) if float(v).is_integer() else str(v) for v in values)
    return SampleIndex("recordio", str(rec), (str(rec),), np.zeros(len(labels), np.int32),
                       found.offsets, labels.astype(np.int32), names)


def _tfrecords(root: str, files: list[Path]) -> SampleIndex:
    from k210tool.train.data.tfrecord import scan

    ids, offsets, raw = [], [], []
    for n, f in enumerate(files):
        off, lab = scan(f)
        ids.append(np.full(len(off), n, np.int32))
        offsets.append(off)
        raw.append(lab)
    raw_labels = np.concatenate(raw) if raw else np.zeros(0, np.int64)
    if len(raw_labels) == 0:
        raise InputError(f"{root} holds no records")
    values, labels = np.unique(raw_labels, return_inverse=True)
    return SampleIndex("tfrecord", root, tuple(str(f) for f in files), np.concatenate(ids),
                       np.concatenate(offsets), labels.astype(np.int32), tuple(str(int(v)) for v in values))
