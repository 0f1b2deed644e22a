"""The images ``compare`` runs: identity folders, a verification ``.bin``, LFW ``pairs.txt``, or random pixels.

Every source ends as :class:`EvalData`: unique images prepared by the one preprocessing path
(:meth:`Preprocess.prepare`), a label per image, identity numbers when the source has them, and pairs when
it has (or can generate) them. Undecodable images are skipped and counted; nothing left is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from k210tool.errors import InputError
from k210tool.eval.pairs import PairList, PairOptions, generate_pairs, lfw_image_path, parse_lfw_pairs
from k210tool.preprocess import Preprocess, load_folder, load_image


@dataclass
class EvalData:
    kind: str  # folders | images | bin | lfw | random
    source: str
    images: np.ndarray  # prepared uint8 (N, H, W, C)
    labels: list[str]  # where each image came from
    identities: np.ndarray | None = None  # int per image (-1: none), for identification
    identity_names: list[str] = field(default_factory=list)
    pairs: PairList | None = None
    skipped_images: int = 0
    skipped_pairs: int = 0

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source": self.source,
            "images": len(self.images),
            "identities": len(self.identity_names),
            "pairs": len(self.pairs) if self.pairs is not None else 0,
            "pair_source": self.pairs.source if self.pairs is not None else None,
            "skipped_images": self.skipped_images,
            "skipped_pairs": self.skipped_pairs,
        }


def from_folders(root: Path | str, pre: Preprocess, pair_opts: PairOptions | None = None, limit: int | None = None,
                 seed: int = 0, reporter: Any = None) -> EvalData:
    """Images under ``root``; each top-level sub-folder is one identity (images in ``root`` itself have none)."""
    root = Path(root)
    loaded = load_folder(root, pre, limit, seed=seed, reporter=reporter)
    names = sorted({p.relative_to(root).parts[0] for p in loaded.paths if len(p.relative_to(root).parts) > 1})
    index = {n: i for i, n in enumerate(names)}
    ids = np.array([index[p.relative_to(root).parts[0]] if len(p.relative_to(root).parts) > 1 else -1
                    for p in loaded.paths], np.int64)
    data = EvalData("folders" if names else "images", str(root), loaded.images, [str(p) for p in loaded.paths],
                    ids if names else None, names, skipped_images=len(loaded.skipped))
    if len(names) >= 2:
        try:
            data.pairs = generate_pairs(ids, pair_opts or PairOptions(seed=seed))
        except InputError as exc:
            if reporter is not None:
                reporter.warn(f"no verification: {exc.message}")
    elif reporter is not None:
        reporter.warn(f"{root} has {len(names)} identity sub-folder(s): fidelity only, no verification "
                      "(put each person's images in their own sub-folder)")
    return data


def from_bin(path: Path | str, pre: Preprocess, reporter: Any = None) -> EvalData:
    """An insightface verification ``.bin``, read by the restricted unpickler (a malicious file runs nothing)."""
    from k210tool.eval.binfile import decode, load_bin

    vs = load_bin(path)
    prepared: list[np.ndarray | None] = []
    with _progress(reporter, f"decoding {Path(path).name}", len(vs.images)) as bar:
        for encoded in vs.images:
            try:
                prepared.append(pre.prepare(decode(encoded)))
            except InputError:
                prepared.append(None)
            bar.advance()
    return _pairs_data("bin", str(path), prepared, [f"{vs.name}.bin#{i}" for i in range(len(prepared))],
                       vs.issame, f"{Path(path).name} ({vs.pairs} pairs)", reporter)


def from_lfw(pairs_file: Path | str, root: Path | str | None, pre: Preprocess, reporter: Any = None) -> EvalData:
    """LFW ``pairs.txt`` with images at ``root/person/person_0001.jpg`` (root: the pairs file's folder)."""
    pairs = parse_lfw_pairs(pairs_file)
    base = Path(root) if root is not None else Path(pairs_file).parent
    if not base.is_dir():
        raise InputError(f"image folder {base} does not exist", "pass the LFW image folder with --data")
    wanted = sorted({p.first for p in pairs} | {p.second for p in pairs})
    prepared: dict[tuple[str, int], np.ndarray | None] = {}
    paths: dict[tuple[str, int], Path | None] = {}
    with _progress(reporter, f"reading LFW images from {base}", len(wanted)) as bar:
        for key in wanted:
            path = paths[key] = lfw_image_path(base, *key)
            try:
                prepared[key] = pre.prepare(load_image(path)) if path is not None else None
            except InputError:
                prepared[key] = None
            bar.advance()
    missing = sum(1 for k in wanted if paths[k] is None)
    if missing == len(wanted):
        raise InputError(f"none of the {len(wanted)} images {Path(pairs_file).name} names exist under {base}",
                         "pass the LFW image folder (holding one folder per person) with --data")
    if missing and reporter is not None:
        reporter.warn(f"{missing} image(s) named in {Path(pairs_file).name} do not exist under {base}")
    keys = [key for p in pairs for key in (p.first, p.second)]  # 2 per pair, the .bin order
    data = _pairs_data("lfw", str(pairs_file), [prepared[k] for k in keys], [str(paths[k] or k) for k in keys],
                       np.array([p.same for p in pairs]), f"{Path(pairs_file).name} ({len(pairs)} pairs)", reporter,
                       dedupe=True)
    # LFW names every image by its person: identification runs on the images the pairs name
    person = {str(paths[k] or k): k[0] for k in wanted}
    data.identity_names = sorted({person[label] for label in data.labels})
    data.identities = np.array([data.identity_names.index(person[label]) for label in data.labels], np.int64)
    return data


def random_images(count: int, pre: Preprocess, seed: int = 0) -> EvalData:
    """``count`` images of uniform random pixels: fidelity only (no faces, no pairs)."""
    if count < 1:
        raise InputError("--random needs at least 1 image")
    rng = np.random.default_rng([49979687, seed])
    images = rng.integers(0, 256, (count, pre.height, pre.width, pre.channels), dtype=np.uint8)
    return EvalData("random", f"{count} random images", images, [f"random#{i}" for i in range(count)])


def _pairs_data(kind: str, source: str, prepared: list[np.ndarray | None], labels: list[str], issame: np.ndarray,
                pair_source: str, reporter: Any, dedupe: bool = False) -> EvalData:
    """Images listed pair by pair (2 per pair) -> unique images + index pairs; a pair with a bad image is dropped."""
    n_pairs = len(issame)
    keep = [k for k in range(n_pairs) if prepared[2 * k] is not None and prepared[2 * k + 1] is not None]
    bad_images = sum(1 for x in prepared if x is None)
    if not keep:
        raise InputError(f"none of the {n_pairs} pairs of {source} has two decodable images")
    unique: dict[str, int] = {}
    images: list[np.ndarray] = []
    used_labels: list[str] = []
    index = np.empty(2 * n_pairs, np.int64)
    for pos in (i for k in keep for i in (2 * k, 2 * k + 1)):
        key = labels[pos] if dedupe else str(pos)
        if key not in unique:
            unique[key] = len(images)
            images.append(prepared[pos])  # type: ignore[arg-type]
            used_labels.append(labels[pos])
        index[pos] = unique[key]
    kept = np.array(keep, np.int64)
    pairs = PairList(index[2 * kept], index[2 * kept + 1], np.asarray(issame, bool)[kept], pair_source)
    skipped_pairs = n_pairs - len(keep)
    if skipped_pairs and reporter is not None:
        reporter.warn(f"skipped {skipped_pairs} of {n_pairs} pairs of {source}: {bad_images} image(s) missing "
                      "or not decodable")
    return EvalData(kind, source, np.stack(images), used_labels, pairs=pairs, skipped_images=bad_images,
                    skipped_pairs=skipped_pairs)


class _NoProgress:
    def advance(self, n: int = 1) -> None:
        pass


def _progress(reporter: Any, what: str, total: int) -> Any:
    import contextlib

    if reporter is None:
        return contextlib.nullcontext(_NoProgress())
    return reporter.progress(what, total)
