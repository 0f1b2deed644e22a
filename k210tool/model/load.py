"""Load a model file into one image -> embedding model, whatever the user brings.

- legacy tf.keras 2.x ``.h5`` (the common case; Keras 3 cannot read most of them) -> ``tf_keras``;
- Keras 3 ``.keras`` (and Keras-3-written ``.h5``) -> ``keras``;
- float ``.tflite`` / ``.onnx`` -> imported into an equivalent tf_keras model of standard layers
  (:mod:`k210tool.model.importers`), so head cutting, the KPU rewrite, the checks and the export are the same
  as for a Keras file.

Custom layer classes the tool has never seen (an ArcFace head, a softmax-with-margin layer) do not stop
loading: the graph is read from the file's config, the layers needed for the embedding are rebuilt with
their weights, and the training head is cut off (:mod:`k210tool.model.heads`). Only when an unknown class
sits *inside* the backbone does the user have to pass ``--custom-objects FILE.py``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from k210tool.errors import InputError, ModelError
from k210tool.fileio import scratch_dir
from k210tool.model.graph import (
    KERAS3,
    TF_KERAS,
    Graph,
    annotate_shapes,
    build_model,
    graph_from_config,
    graph_from_model,
)
from k210tool.model.heads import HeadCut, cut_head

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"
_STRUCTURAL = {"Functional", "Model", "Sequential", "InputLayer"}


@dataclass(frozen=True)
class LoadOptions:
    output_layer: str | None = None  # cut the graph at this layer's output
    keep_head: bool = False  # do not cut classifier/margin heads
    input_size: tuple[int, int] | None = None  # (height, width) when the file leaves it open
    custom_objects: Path | None = None  # a .py file defining custom layer classes
    trust_lambda: bool = False  # allow Lambda layers (they run Python code from the file)


@dataclass
class LoadedModel:
    path: Path
    format: str  # h5 | keras | tflite | onnx (tflite / onnx are imported into tf_keras)
    flavour: str | None  # tf_keras | keras3
    model: Any | None  # a Keras model image -> embedding
    graph: Graph | None
    input_shape: tuple[int, int, int]  # (H, W, C)
    output_shape: tuple[int, ...]
    input_layout: str = "NHWC"  # layout of ``model``'s input (imported ONNX models are NHWC too)
    head_cut: HeadCut | None = None
    unknown_classes: list[str] = field(default_factory=list)
    raw: bytes | None = None  # model bytes to compile as they are (load_model no longer sets it)
    original_model: Any | None = None  # the model before the KPU rewrite, when one ran
    reference_model: Any | None = None  # after the approximate rewrite rules only (None: none ran)

    @property
    def input_rotation(self) -> int:
        """180 when the (lowered) model takes its input turned by 180 degrees."""
        return self.graph.input_rotation if self.graph is not None else 0

    @property
    def is_keras(self) -> bool:
        return self.model is not None


def sniff_format(path: Path) -> str:
    """Format from the file's first bytes (the suffix only breaks ties); InputError if unknown."""
    if not path.exists():
        raise InputError(f"model file {path} does not exist")
    if path.is_dir():
        raise InputError(f"{path} is a directory", "give a .h5, .keras, .tflite or .onnx file "
                         "(TensorFlow SavedModel folders: convert them to .tflite first)")
    if not path.is_file():  # a FIFO or a device would block the read below, or never end
        raise InputError(f"model file {path} is not a regular file", "give a .h5, .keras, .tflite or .onnx file")
    with path.open("rb") as fh:
        head = fh.read(16)
    if not head:
        raise InputError(f"model file {path} is empty")
    if head.startswith(HDF5_MAGIC):
        return "h5"
    if head.startswith(ZIP_MAGIC):
        return "keras"
    if head[4:8] == b"TFL3":
        return "tflite"
    if path.suffix.lower() == ".onnx":
        return "onnx"
    raise InputError(f"{path} is not a model file k210tool can read (unrecognised content)",
                     "expected a Keras .h5/.keras, a .tflite or an .onnx file")


def load_model(path: Path | str, options: LoadOptions | None = None, reporter: Any = None) -> LoadedModel:
    """Read ``path`` and reduce it to one image input and one embedding output."""
    opts = options or LoadOptions()
    p = Path(path)
    fmt = sniff_format(p)
    custom: dict[str, Any] = {}
    if fmt in ("tflite", "onnx"):
        graph, unknown = _import(p, fmt, opts), set()
    else:
        custom = _custom_objects(opts.custom_objects)
        graph, unknown = _read_h5(p, custom, opts) if fmt == "h5" else _read_keras_zip(p, custom, opts)
    with _malformed_config(p):  # a graph from a hand-made config can be empty or inconsistent anywhere
        graph, cut = cut_head(graph, unknown, opts.output_layer, opts.keep_head)
        if reporter is not None and cut is not None:
            reporter.info(f"cut the training head: {cut.describe()}")
        _fix_input_size(graph, opts.input_size)
        model = _build(graph, custom, unknown)
        annotate_shapes(graph, model)
    in_shape = tuple(int(d) for d in model.input_shape[1:])
    out_shape = tuple(int(d) if d is not None else -1 for d in model.output_shape[1:])
    return LoadedModel(p, fmt, graph.flavour, model, graph, in_shape, out_shape,  # type: ignore[arg-type]
                       head_cut=cut, unknown_classes=sorted(unknown))


# ---------------------------------------------------------------------------------------------------
# h5
# ---------------------------------------------------------------------------------------------------
def _read_h5(p: Path, custom: dict[str, Any], opts: LoadOptions) -> tuple[Graph, set[str]]:
    import h5py

    try:
        with h5py.File(p, "r") as f:
            raw_cfg = f.attrs.get("model_config")
            keras_version = f.attrs.get("keras_version", b"")
    except OSError as exc:
        raise ModelError(f"{p} is a truncated or corrupt HDF5 file ({_first_line(exc)})",
                         "re-export or re-download the model") from None
    if raw_cfg is None:
        raise ModelError(f"{p} is an HDF5 file without a model in it (weights only?)",
                         "save the whole model (model.save), not only its weights")
    config = _model_config(p, raw_cfg)
    kv = keras_version.decode() if isinstance(keras_version, bytes) else str(keras_version)
    flavour = KERAS3 if kv.startswith("3") else TF_KERAS
    with _malformed_config(p):
        unknown = _unknown_classes(config, flavour, custom) | _code_layers(config, opts)
    if not unknown:
        model = _load_live_h5(p, flavour, custom, opts)
        with _malformed_config(p):
            return graph_from_model(model), set()
    weights = _H5Weights(p)
    with _malformed_config(p):
        graph = graph_from_config(config.get("config", config), flavour, weights.get,
                                  name=config.get("config", {}).get("name"))
    return graph, unknown


@contextlib.contextmanager
def _malformed_config(p: Path) -> Iterator[None]:
    """A config whose entries have the wrong types or miss keys is the file's fault: one ModelError."""
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise ModelError(f"{p}: the model config is malformed ({type(exc).__name__}: {_first_line(exc)})",
                         "re-export or re-download the model") from None
    except (OSError, RuntimeError) as exc:  # h5py on a damaged weight group or attribute
        raise ModelError(f"{p} is a corrupt HDF5 file ({_first_line(exc)})",
                         "re-export or re-download the model") from None


def _load_live_h5(p: Path, flavour: str, custom: dict[str, Any], opts: LoadOptions) -> Any:
    from k210tool.tfutil import import_keras3, import_tf_keras, quiet_stderr

    k = import_tf_keras() if flavour == TF_KERAS else import_keras3()
    try:
        with quiet_stderr():
            if flavour == TF_KERAS:
                return k.models.load_model(p, compile=False, custom_objects=custom, safe_mode=not opts.trust_lambda)
            return k.models.load_model(p, compile=False, custom_objects=custom, safe_mode=not opts.trust_lambda)
    except (ValueError, TypeError, KeyError, OSError, AttributeError, AssertionError, IndexError) as exc:
        raise _explain_load_error(p, exc) from None  # Keras trips over a malformed config in many ways
    except RuntimeError as exc:  # h5py on a damaged attribute or dataset header
        raise ModelError(f"{p} is a corrupt HDF5 file ({_first_line(exc)})",
                         "re-export or re-download the model") from None


class _H5Weights:
    """Layer weights read straight from an h5 file's ``model_weights`` group (no model needed)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def get(self, layer_path: tuple[str, ...]) -> list[np.ndarray]:
        import h5py

        with h5py.File(self.path, "r") as f:
            root = f["model_weights"] if "model_weights" in f else f
            top = layer_path[0]
            if top not in root:
                return []
            group = root[top]
            names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs.get("weight_names", [])]
            if len(layer_path) > 1:  # a layer inside a nested model: its weights are named "<layer>/<var>"
                inner = layer_path[-1]
                names = [n for n in names if n.split("/")[-2:-1] == [inner] or n.startswith(inner + "/")]
            return [np.array(group[n]) for n in names]


# ---------------------------------------------------------------------------------------------------
# .keras (Keras 3 zip)
# ---------------------------------------------------------------------------------------------------
def _read_keras_zip(p: Path, custom: dict[str, Any], opts: LoadOptions) -> tuple[Graph, set[str]]:
    from k210tool.tfutil import import_keras3, quiet_stderr

    try:
        with zipfile.ZipFile(p) as z:
            _check_members(p, z)
            raw_cfg = z.read("config.json")
    except (zipfile.BadZipFile, KeyError, OSError, RuntimeError, NotImplementedError, EOFError, zlib.error) as exc:
        raise ModelError(f"{p} is not a valid .keras file ({_first_line(exc)})",
                         "is the file complete? re-save it with model.save('x.keras')") from None
    config = _model_config(p, raw_cfg)
    keras = import_keras3()
    with _malformed_config(p):
        unknown = _unknown_classes(config, KERAS3, custom) | _code_layers(config, opts)
    objects = dict(custom)
    for name in unknown:
        objects[name] = _stub_layer(keras, name)
    for reg in _registered_names(config, unknown) | ({"k210tool>Lambda"} if "Lambda" in unknown else set()):
        objects[reg] = objects[reg.split(">")[-1]]
    with scratch_dir("keras") as tmp:
        source = _without_builtin_lambda(p, config, tmp) if "Lambda" in unknown else p
        try:
            with quiet_stderr():
                model = keras.saving.load_model(source, compile=False, custom_objects=objects,
                                                safe_mode=not opts.trust_lambda)
        except (ValueError, TypeError, KeyError, OSError) as exc:
            raise _explain_load_error(p, exc) from None
    return graph_from_model(model), unknown


MAX_CONFIG = 64 << 20  # a model config (JSON) larger than this is not a face model


def _check_members(p: Path, z: zipfile.ZipFile) -> None:
    """A .keras zip names its members plainly: no absolute paths, no '..', no giant config."""
    for name in z.namelist():
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
            raise ModelError(f"{p} holds a member named {name!r} that points outside the archive",
                             "a .keras file from model.save never does: do not trust this file")
    if z.getinfo("config.json").file_size > MAX_CONFIG:
        raise ModelError(f"{p}: config.json unpacks to more than {MAX_CONFIG >> 20} MiB", "is this a Keras model?")


def _model_config(p: Path, raw: Any) -> dict[str, Any]:
    """The model's config as a dict: malformed JSON or another type is a ModelError, not a crash later."""
    try:
        config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except (ValueError, TypeError, RecursionError) as exc:
        raise ModelError(f"{p}: the model config is not valid JSON ({_first_line(exc)})",
                         "re-export or re-download the model") from None
    inner = config.get("config", config) if isinstance(config, dict) else None
    if not isinstance(inner, dict) or not isinstance(inner.get("layers", []), list):
        raise ModelError(f"{p}: the model config is not a Keras model description "
                         f"(found a JSON {type(config).__name__})", "re-export or re-download the model")
    return config


def _without_builtin_lambda(p: Path, config: dict[str, Any], tmp: Path) -> Path:
    """A copy of the .keras zip whose Lambda layers resolve to the stub (Keras 3 would build its own Lambda,
    whose code it refuses in safe mode - so a harmless trailing Lambda could not even be cut)."""
    for spec in _iter_layer_specs(config):
        if spec.get("class_name") == "Lambda":
            spec["module"] = None
            spec["registered_name"] = "k210tool>Lambda"
    out = tmp / p.name
    with zipfile.ZipFile(p) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            data = json.dumps(config).encode() if item.filename == "config.json" else src.read(item)
            dst.writestr(item, data)
    return out


def _stub_layer(keras: Any, name: str) -> type:
    """A stand-in for an unknown Keras 3 layer class: keeps its weights, passes its first input through.

    It only exists so the file loads; the head cutter removes every stub before the model is used.
    """

    class Stub(keras.layers.Layer):  # type: ignore[misc, name-defined]
        def __init__(self, **kwargs: Any) -> None:
            base = {k: kwargs.pop(k) for k in ("name", "trainable", "dtype") if k in kwargs}
            super().__init__(**base)
            self._stub_config = kwargs

        def call(self, *args: Any, **kwargs: Any) -> Any:
            first = args[0]
            while isinstance(first, (list, tuple)):
                first = first[0]
            return first

        def compute_output_spec(self, *args: Any, **kwargs: Any) -> Any:
            first = args[0]
            while isinstance(first, (list, tuple)):
                first = first[0]
            return keras.KerasTensor(first.shape, dtype=first.dtype)

        def load_own_variables(self, store: Any) -> None:
            self._stub_weights = [np.array(store[k]) for k in sorted(store.keys(), key=str)]

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), **self._stub_config}

    Stub.__name__ = Stub.__qualname__ = name
    return Stub


def _registered_names(config: Any, names: set[str]) -> set[str]:
    found: set[str] = set()
    for spec in _iter_layer_specs(config):
        reg = spec.get("registered_name")
        if reg and spec.get("class_name") in names:
            found.add(reg)
    return found


# ---------------------------------------------------------------------------------------------------
# tflite / onnx
# ---------------------------------------------------------------------------------------------------
def _import(p: Path, fmt: str, opts: LoadOptions) -> Graph:
    """A float .tflite/.onnx file as the graph of its equivalent tf_keras model."""
    from k210tool.model.importers import import_onnx, import_tflite
    from k210tool.tfutil import quiet_stderr

    data = p.read_bytes()
    try:
        with quiet_stderr():
            if fmt == "tflite":
                model = import_tflite(data, p.stem)
            else:
                model = import_onnx(data, p.stem, opts.input_size)
    except ModelError as exc:
        raise ModelError(f"{p}: {exc.message}", exc.hint) from None
    return graph_from_model(model)


# ---------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------
def _iter_layer_specs(config: Any) -> Any:
    if isinstance(config, dict):
        if "class_name" in config and "config" in config:
            yield config
        for value in config.values():
            yield from _iter_layer_specs(value)
    elif isinstance(config, list):
        for item in config:
            yield from _iter_layer_specs(item)


def _unknown_classes(config: dict[str, Any], flavour: str, custom: dict[str, Any]) -> set[str]:
    """Layer classes in ``config`` that neither Keras flavour nor ``custom`` can build."""
    from k210tool.model.graph import keras_module

    k = keras_module(flavour)
    unknown: set[str] = set()
    top = config.get("config", config)
    for spec in _iter_layer_specs(top.get("layers", [])):
        name = spec["class_name"]
        if name in _STRUCTURAL or name in custom or name.startswith("__"):
            continue
        if not _is_layer_spec(spec):
            continue
        if hasattr(k.layers, name) or k.utils.get_registered_object(spec.get("registered_name") or name) is not None:
            continue
        unknown.add(name)
    return unknown


def _code_layers(config: Any, opts: LoadOptions) -> set[str]:
    """Layer classes that would run Python code stored in the file (Lambda), unless ``--trust-lambda``.

    They are treated like unknown classes: read from the config as plain data and never deserialized, so a
    trailing one is cut with the head and one inside the backbone is refused. tf_keras ignores ``safe_mode``
    for legacy ``.h5`` files, so this check, not Keras's, is what keeps a downloaded model from running code.
    """
    if opts.trust_lambda:
        return set()
    return {"Lambda"} if any(spec["class_name"] == "Lambda" for spec in _iter_layer_specs(config)) else set()


def _is_layer_spec(spec: dict[str, Any]) -> bool:
    """Layer entries carry inbound_nodes or a name; initializers/regularizers do not."""
    cfg = spec.get("config")
    return isinstance(cfg, dict) and ("inbound_nodes" in spec or "name" in spec or "trainable" in cfg)


def _custom_objects(path: Path | None) -> dict[str, Any]:
    """Classes defined in a user's Python file (``--custom-objects``), by name."""
    if path is None:
        return {}
    p = Path(path)
    if not p.is_file():
        raise InputError(f"custom objects file {p} does not exist")
    spec = importlib.util.spec_from_file_location(f"k210tool_user_{p.stem}", p)
    if spec is None or spec.loader is None:
        raise InputError(f"cannot import {p}")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise InputError(f"importing {p} failed: {type(exc).__name__}: {_first_line(exc)}") from None
    return {name: obj for name, obj in vars(module).items() if isinstance(obj, type) and not name.startswith("_")}


def _fix_input_size(graph: Graph, size: tuple[int, int] | None) -> None:
    images = [n for n in graph.inputs if len(graph.input_shape(n)) == 4]
    if not images:
        shapes = ", ".join(str(graph.input_shape(n)) for n in graph.inputs)
        raise ModelError(f"the model's input {shapes} is not an image (expected batch, height, width, channels)")
    shape = graph.input_shape(images[0])
    if size is not None:
        if min(size) < 1:
            raise InputError(f"--input-size {size[0]} {size[1]} is not an image size", "give HEIGHT WIDTH >= 1")
        graph.set_input_shape(*size)
    elif shape[1] is None or shape[2] is None:
        raise ModelError(f"the model's input size is not fixed ({shape[1]} x {shape[2]})",
                         "pass --input-size HEIGHT WIDTH, e.g. --input-size 112 112")


def _build(graph: Graph, custom: dict[str, Any], unknown: set[str]) -> Any:
    left = sorted({n.class_name for n in graph if n.class_name in unknown})
    code = [n.name for n in graph if n.class_name == "Lambda" and "Lambda" in unknown]
    if code:
        raise ModelError(f"layer {code[0]!r} is a Lambda layer, which runs Python code stored in the file, and the "
                         "embedding depends on it", "pass --trust-lambda if you trust where the file comes from")
    if left:
        names = [n.name for n in graph if n.class_name in left]
        raise ModelError(
            f"layer {names[0]!r} uses class {left[0]} that k210tool does not know, and the embedding depends on it",
            f"pass --custom-objects FILE.py defining {', '.join(left)}",
        )
    from k210tool.tfutil import import_keras3, import_tf_keras, quiet_stderr

    if graph.flavour == TF_KERAS:
        import_tf_keras()
    else:
        import_keras3()
    with quiet_stderr():
        return build_model(graph, custom)


def _explain_load_error(p: Path, exc: Exception) -> ModelError:
    text = _first_line(exc)
    if "Lambda" in text and ("safe_mode" in text or "unsafe" in text):
        return ModelError(f"{p} contains a Lambda layer, which runs Python code stored in the file",
                          "pass --trust-lambda if you trust where the file comes from")
    if "Unknown" in text:
        return ModelError(f"{p}: {text}", "pass --custom-objects FILE.py defining the missing class")
    return ModelError(f"cannot load {p}: {text}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
