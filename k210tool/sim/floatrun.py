"""Run the float model on prepared images, batched, with a cache of its results.

Keras files run in TensorFlow. A ``.tflite`` / ``.onnx`` file runs in its own runtime (TFLite interpreter,
onnxruntime; :mod:`k210tool.sim.nativerun`): the user's file as its authors run it is the reference, and
a mistake of k210tool's importer would show in the figures rather than hide in both columns. Only when
loading cut the model (a training head, ``--output-layer``) - an output the file's runtime cannot give -
does the imported Keras model run instead.

The cache is keyed by the model file's SHA-256, the load options, the preprocessing and the TensorFlow
version; inside a key, each image is identified by the SHA-1 of its prepared uint8 pixels. A second
``compare`` on the same data loads nothing (not even TensorFlow) when every image is cached.
One ``.npz`` per key under ``<cache>/float/``, rewritten atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from k210tool.errors import InputError
from k210tool.fileio import atomic_open
from k210tool.model.load import LoadedModel, LoadOptions, load_model
from k210tool.preprocess import Preprocess
from k210tool.report import Reporter

CACHE_FORMAT = 1
DEFAULT_BATCH = 32


def default_cache_dir() -> Path:
    """``$K210TOOL_CACHE_DIR``, else ``$XDG_CACHE_HOME/k210tool``, else ``~/.cache/k210tool``."""
    if os.environ.get("K210TOOL_CACHE_DIR"):
        return Path(os.environ["K210TOOL_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "k210tool"


def image_digests(images: np.ndarray) -> np.ndarray:
    """One 20-byte SHA-1 per prepared image (its shape and pixels): the image's identity in the cache."""
    out = np.empty(len(images), "S20")
    for i, img in enumerate(images):
        a = np.ascontiguousarray(img, np.uint8)
        out[i] = hashlib.sha1(repr(a.shape).encode() + a.tobytes()).digest()
    return out


@dataclass
class FloatRun:
    outputs: list[np.ndarray]  # one array per model output, batch first
    cached: int  # images served from the cache
    computed: int
    input_shape: tuple[int, ...]


class FloatRunner:
    """The float model of one file, loaded only when an image is not in the cache."""

    def __init__(self, path: Path | str, load: LoadOptions, pre: Preprocess, *, cache_dir: Path | None = None,
                 use_cache: bool = True, batch_size: int = DEFAULT_BATCH, reporter: Reporter | None = None) -> None:
        self.path = Path(path)
        self.load_options = load
        self.pre = pre
        self.batch_size = max(1, int(batch_size))
        self.reporter = reporter or Reporter()
        self.cache_file = (cache_dir or default_cache_dir()) / "float" / f"{self._key()}.npz" if use_cache else None
        self._loaded: LoadedModel | None = None
        self._run_batch: Any = None  # float NHWC batch -> outputs

    # -- model --------------------------------------------------------------------------------------
    def loaded(self) -> LoadedModel:
        if self._loaded is None:
            with self.reporter.stage(f"load {self.path.name}"):
                loaded = load_model(self.path, self.load_options, self.reporter)
            self._loaded = loaded
            self._run_batch = self._runner(loaded)
        return self._loaded

    def _runner(self, loaded: LoadedModel) -> Any:
        if loaded.format not in ("tflite", "onnx"):
            return lambda batch: loaded.model.predict_on_batch(batch)  # type: ignore[union-attr]
        if loaded.head_cut is not None:
            self.reporter.info(f"{self.path.name}: running the imported Keras model, cut at {loaded.head_cut.output!r} "
                               f"(the file's own runtime only gives the output of the whole file)")
            return lambda batch: loaded.model.predict_on_batch(batch)  # type: ignore[union-attr]
        from k210tool.sim.nativerun import native_runner

        run, what = native_runner(loaded.format, self.path.read_bytes())
        self.reporter.info(f"{self.path.name}: float reference computed by {what}")
        return run

    def input_shape(self) -> tuple[int, ...]:
        """(H, W, C) of the model, from the cache when it knows it (no model load)."""
        meta = self._read_cache()[2] if self.cache_file is not None else None
        if meta is not None:
            return tuple(meta["input_shape"])
        return self.loaded().input_shape

    # -- running ------------------------------------------------------------------------------------
    def run(self, images: np.ndarray, what: str = "float model") -> FloatRun:
        images = np.asarray(images, np.uint8)
        digests = image_digests(images)
        known, stored, meta = self._read_cache() if self.cache_file is not None else ({}, [], None)
        missing = [i for i, d in enumerate(digests) if d not in known]
        fresh: list[np.ndarray] = []
        if missing:
            fresh = self._predict(images[missing], what)
            meta = {"input_shape": list(self.loaded().input_shape), "model": str(self.path)}
        n_out = len(fresh) if fresh else len(stored)
        outputs = []
        pos = {int(i): k for k, i in enumerate(missing)}
        for j in range(n_out):
            rows = [fresh[j][pos[i]] if i in pos else stored[j][known[digests[i]]] for i in range(len(images))]
            outputs.append(np.stack(rows).astype(np.float32) if rows else np.zeros((0,), np.float32))
        if missing and self.cache_file is not None:
            self._write_cache(known, stored, digests[missing], fresh, meta)
        shape = tuple(meta["input_shape"]) if meta else self.loaded().input_shape
        return FloatRun(outputs, len(images) - len(missing), len(missing), shape)

    def _predict(self, images: np.ndarray, what: str) -> list[np.ndarray]:
        model = self.loaded()
        if tuple(images.shape[1:]) != tuple(model.input_shape):
            raise InputError(f"prepared images are {tuple(images.shape[1:])}, {self.path.name} takes "
                             f"{tuple(model.input_shape)}")
        parts: list[list[np.ndarray]] = []
        with self.reporter.progress(f"{what} ({self.path.name})", total=len(images)) as bar:
            for start in range(0, len(images), self.batch_size):
                batch = self.pre.normalize(images[start:start + self.batch_size])
                out = self._run_batch(batch)
                parts.append([np.asarray(o, np.float32) for o in (out if isinstance(out, (list, tuple)) else [out])])
                bar.advance(len(batch))
        return [np.concatenate([p[j] for p in parts]) for j in range(len(parts[0]))]

    # -- cache --------------------------------------------------------------------------------------
    def _key(self) -> str:
        from importlib import metadata

        try:
            content = hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError as exc:
            raise InputError(f"cannot read model {self.path}: {exc.strerror or exc}") from None
        versions = {}
        for dist in ("tensorflow-cpu", "tensorflow", "tf_keras", "keras", "onnx", "onnxruntime"):
            try:
                versions[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                continue
        opts = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self.load_options).items()}
        if opts.get("custom_objects"):  # the code of custom layers is part of the model
            opts["custom_objects_sha256"] = hashlib.sha256(Path(opts["custom_objects"]).read_bytes()).hexdigest()
        blob = json.dumps({"format": CACHE_FORMAT, "model": content, "load": opts, "pre": self.pre.to_dict(),
                           "versions": versions}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def _read_cache(self) -> tuple[dict[bytes, int], list[np.ndarray], dict[str, Any] | None]:
        assert self.cache_file is not None
        if not self.cache_file.is_file():
            return {}, [], None
        try:
            with np.load(self.cache_file, allow_pickle=False) as z:
                digests = z["digests"]
                outputs = [z[f"out{j}"] for j in range(int(z["n_outputs"]))]
                meta = json.loads(str(z["meta"]))
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            self.reporter.warn(f"ignoring an unreadable float cache {self.cache_file}")
            return {}, [], None
        if any(len(o) != len(digests) for o in outputs):
            return {}, [], None
        return {bytes(d): i for i, d in enumerate(digests)}, outputs, meta

    def _write_cache(self, known: dict[bytes, int], stored: list[np.ndarray], new_digests: np.ndarray,
                     fresh: list[np.ndarray], meta: dict[str, Any] | None) -> None:
        assert self.cache_file is not None
        old = np.array(sorted(known, key=known.__getitem__), "S20") if known else np.empty(0, "S20")
        arrays: dict[str, Any] = {"digests": np.concatenate([old, new_digests]), "n_outputs": np.array(len(fresh)),
                                  "meta": np.array(json.dumps(meta))}
        for j, f in enumerate(fresh):
            arrays[f"out{j}"] = np.concatenate([stored[j], f]) if stored and len(stored) == len(fresh) else f
        if stored and len(stored) != len(fresh):
            arrays["digests"] = new_digests
        try:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            with atomic_open(self.cache_file, "wb") as fh:
                np.savez(fh, **arrays)
        except (OSError, InputError) as exc:  # a cache that cannot be written only costs time
            self.reporter.warn(f"cannot write the float cache {self.cache_file}: {exc}")
