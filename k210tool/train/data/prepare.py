"""``k210tool data prepare``: balance identities of a face data set, optionally aligning every face first.

Per identity, by its number of usable images n (after alignment, when aligning):

| n | what is written |
|---|---|
| more than 350 | a seeded random sample of 350 |
| 201 - 350 | all n |
| 91 - 200 | all n + each after a morphological opening (2n) |
| 31 - 90 | all n + opening + Gaussian noise + salt-and-pepper of each (4n) |
| 30 or fewer | nothing: the identity is dropped |

Identities are processed in parallel worker processes. Each is written into a temporary folder and
renamed into place when complete, then a marker ``.prepare/<identity>.json`` records it; a re-run skips
identities with a marker and redoes any other (an interrupted identity is never left half-written).
"""

from __future__ import annotations

import os
import shutil
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from k210tool.errors import InputError
from k210tool.preprocess import find_images
from k210tool.report import Reporter

MAX_IMAGES = 350
STATE_DIR = ".prepare"


@dataclass(frozen=True)
class IdentityPlan:
    action: str  # sample | keep | open | open_noise | drop
    keep: int  # source images used
    written: int  # images written


def plan_identity(n: int) -> IdentityPlan:
    """What the balancing table does with an identity of ``n`` usable images."""
    if n > MAX_IMAGES:
        return IdentityPlan("sample", MAX_IMAGES, MAX_IMAGES)
    if n > 200:
        return IdentityPlan("keep", n, n)
    if n > 90:
        return IdentityPlan("open", n, 2 * n)
    if n > 30:
        return IdentityPlan("open_noise", n, 4 * n)
    return IdentityPlan("drop", 0, 0)


@dataclass(frozen=True)
class PrepareOptions:
    workers: int = 0  # 0 = one per CPU core
    seed: int = 0
    align: bool = False  # detect faces (MTCNN) and align them to size x size
    size: int = 112
    min_face_size: int = 20


@dataclass
class IdentityResult:
    name: str
    action: str
    source_images: int
    usable: int
    written: int
    no_face: int = 0
    unreadable: int = 0


@dataclass
class PrepareSummary:
    src: Path
    dst: Path
    identities: int
    kept: int
    dropped: int
    already_done: int
    images_in: int
    images_out: int
    no_face: int
    unreadable: int
    actions: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def prepare_dataset(src: Path | str, dst: Path | str, options: PrepareOptions | None = None,
                    reporter: Reporter | None = None) -> PrepareSummary:
    """Balance (and optionally align) ``src/<identity>/*`` into ``dst/<identity>/*``; resumable."""
    from k210tool.fileio import write_json

    opts = options or PrepareOptions()
    rep = reporter or Reporter()
    started = time.perf_counter()
    src_p, dst_p = Path(src), Path(dst)
    names = list_identities(src_p)
    if dst_p.resolve() == src_p.resolve() or src_p.resolve() in dst_p.resolve().parents:
        raise InputError(f"output {dst_p} must not be inside the source {src_p}")
    state = dst_p / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    for stale in state.glob("tmp-*"):  # left by an interrupted run
        shutil.rmtree(stale, ignore_errors=True)
    done = {n: _read_marker(state / f"{n}.json") for n in names}
    todo = [n for n in names if done[n] is None]
    results = [r for r in done.values() if r is not None]
    if len(todo) < len(names):
        rep.info(f"{len(names) - len(todo)} identities already prepared in {dst_p}; doing the other {len(todo)}")
    with rep.progress("preparing identities", total=len(names)) as bar:
        bar.advance(len(names) - len(todo))
        for result in _run(src_p, dst_p, todo, opts):
            results.append(result)
            bar.advance()
    summary = _summarise(src_p, dst_p, results, len(names) - len(todo), time.perf_counter() - started)
    write_json(dst_p / "prepare.json", summary)
    if summary.no_face:
        rep.warn(f"no face found in {summary.no_face} image(s); they were skipped")
    if summary.unreadable:
        rep.warn(f"{summary.unreadable} image(s) could not be decoded; they were skipped")
    return summary


def require_images_written(summary: PrepareSummary) -> None:
    """Raise an :class:`InputError` saying why, when a run wrote no image at all (an empty data set is never
    what the user asked for)."""
    if summary.images_out:
        return
    src, n_in = summary.src, summary.images_in
    if n_in == 0:
        raise InputError(f"no images in the identity folders of {src}: 0 images written",
                         "put the images in SRC/<identity>/ (.png, .jpg, .bmp ...)")
    if summary.unreadable >= n_in:
        raise InputError(f"none of the {n_in} images in {src} could be decoded: 0 images written",
                         "check that the files are images (png, jpg)")
    if summary.no_face and summary.no_face + summary.unreadable >= n_in:
        raise InputError(f"no faces found in the {n_in} images of {src} (--align): 0 images written",
                         "use photos with faces of 20 px or more, or drop --align for crops already aligned")
    raise InputError(f"every identity of {src} has 30 usable images or fewer and was dropped: 0 images written "
                     f"({n_in} in, {summary.no_face} without a face, {summary.unreadable} unreadable)",
                     "give each identity at least 31 images (see `k210tool data prepare --help`)")


def list_identities(src: Path) -> list[str]:
    if not src.is_dir():
        raise InputError(f"source folder {src} does not exist")
    names = sorted(d.name for d in src.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not names:
        raise InputError(f"{src} holds no identity folders", "expected SRC/<identity>/<images>")
    return names


def _run(src: Path, dst: Path, names: list[str], opts: PrepareOptions) -> Any:
    workers = opts.workers or os.cpu_count() or 1
    if workers == 1 or len(names) <= 1:
        for name in names:
            yield prepare_identity(src, dst, name, opts)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn, not fork: the parent may hold TensorFlow threads, which do not survive a fork
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(workers, len(names)), mp_context=ctx) as pool:
        futures = [pool.submit(prepare_identity, src, dst, n, opts) for n in names]
        try:
            for fut in as_completed(futures):
                yield fut.result()
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise


_DETECTOR: Any = None


def _detector(opts: PrepareOptions) -> Any:
    global _DETECTOR
    if _DETECTOR is None:
        from k210tool.train.data.align import FaceDetector

        _DETECTOR = FaceDetector(min_face_size=opts.min_face_size)
    return _DETECTOR


def prepare_identity(src: Path, dst: Path, name: str, opts: PrepareOptions) -> IdentityResult:
    """Do one identity completely: read, (align), plan, write into a temporary folder, rename, mark."""
    from k210tool.fileio import write_json

    paths = find_images(src / name)
    images, no_face, unreadable = _usable_images(paths, opts)
    plan = plan_identity(len(images))
    state = dst / STATE_DIR
    tmp = state / f"tmp-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    final = dst / name
    if final.exists():  # renamed by an interrupted run that did not write its marker
        shutil.rmtree(final)
    if plan.action != "drop":
        tmp.mkdir(parents=True)
        _write_identity(tmp, images, plan, np.random.default_rng([opts.seed, zlib.crc32(name.encode())]))
        os.replace(tmp, final)
    result = IdentityResult(name, plan.action, len(paths), len(images), plan.written, no_face, unreadable)
    write_json(state / f"{name}.json", result)
    return result


def _usable_images(paths: list[Path], opts: PrepareOptions) -> tuple[list[tuple[Path, Any]], int, int]:
    """``(path, aligned image or None)`` for every usable image; counts of no-face and unreadable ones."""
    from k210tool.preprocess import load_image

    usable: list[tuple[Path, Any]] = []
    no_face = unreadable = 0
    for p in paths:
        try:
            image = load_image(p)  # also when only copying: an undecodable file must not count
        except InputError:
            unreadable += 1
            continue
        if not opts.align:
            usable.append((p, None))
            continue
        aligned = _detector(opts).align(image, opts.size)
        if aligned is None:
            no_face += 1
        else:
            usable.append((p, aligned))
    return usable, no_face, unreadable


def _write_identity(folder: Path, images: list[tuple[Path, Any]], plan: IdentityPlan,
                    rng: np.random.Generator) -> None:
    from k210tool.preprocess import load_image
    from k210tool.train.augment import gaussian_noise, opening, salt_and_pepper

    if plan.action == "sample":
        chosen = sorted(rng.choice(len(images), plan.keep, replace=False).tolist())
        images = [images[i] for i in chosen]
    for path, aligned in images:
        if aligned is None:
            shutil.copyfile(path, folder / path.name)  # untouched originals keep their bytes
            if plan.action not in ("open", "open_noise"):
                continue
            image = load_image(path)
        else:
            image = aligned
            _write_png(folder / f"{path.stem}.png", image)
        if plan.action in ("open", "open_noise"):
            _write_png(folder / f"{path.stem}_open.png", opening(image))
        if plan.action == "open_noise":
            _write_png(folder / f"{path.stem}_noise.png", gaussian_noise(image, rng))
            _write_png(folder / f"{path.stem}_sp.png", salt_and_pepper(image, rng))


def _write_png(path: Path, rgb: np.ndarray) -> None:
    """Plain write: the whole identity folder is renamed into place at the end, so no per-file fsync."""
    import cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise InputError(f"cannot encode {path.name}")
    path.write_bytes(buf.tobytes())


def _read_marker(path: Path) -> IdentityResult | None:
    import json

    try:
        return IdentityResult(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _summarise(src: Path, dst: Path, results: list[IdentityResult], already: int, seconds: float) -> PrepareSummary:
    actions: dict[str, int] = {}
    for r in results:
        actions[r.action] = actions.get(r.action, 0) + 1
    dropped = actions.get("drop", 0)
    return PrepareSummary(
        src=src, dst=dst, identities=len(results), kept=len(results) - dropped, dropped=dropped,
        already_done=already, images_in=sum(r.source_images for r in results),
        images_out=sum(r.written for r in results), no_face=sum(r.no_face for r in results),
        unreadable=sum(r.unreadable for r in results), actions=actions, seconds=seconds)
