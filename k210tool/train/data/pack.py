"""Pack any training data `k210tool train` reads into TFRecord shards or an insightface ``.rec``/``.idx``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from k210tool.errors import InputError
from k210tool.report import Reporter


@dataclass
class PackResult:
    files: list[Path]
    images: int
    classes: int


def pack_dataset(src: Path | str, out: Path | str, fmt: str = "tfrecord", shards: int = 1,
                 reporter: Reporter | None = None) -> PackResult:
    """Write every sample of ``src`` (grouped by class, classes renumbered 0..N-1) in format ``fmt``."""
    from k210tool.train.data.index import open_dataset

    rep = reporter or Reporter()
    index = open_dataset(src)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    order = np.argsort(index.labels, kind="stable")

    def samples() -> Iterator[tuple[bytes, int]]:
        with rep.progress(f"packing {len(order)} images", total=len(order)) as bar:
            for i in order:
                yield index.read(int(i)), int(index.labels[i])
                bar.advance()

    try:
        if fmt == "tfrecord":
            from k210tool.train.data.tfrecord import write_shards

            files = write_shards(out, samples(), shards)
        elif fmt == "recordio":
            from k210tool.train.data.recordio import write_face_recordio

            rec = Path(out) if str(out).endswith(".rec") else Path(str(out) + ".rec")
            write_face_recordio(rec, samples())
            files = [rec, rec.with_suffix(".idx")]
        else:
            raise InputError(f"unknown pack format {fmt!r}", "use tfrecord or recordio")
    finally:
        index.close()
    return PackResult(files, len(order), index.num_classes)
