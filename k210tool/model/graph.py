"""A small, framework-neutral graph of Keras layers that rules can rewrite.

Both Keras flavours k210tool reads - ``tf_keras`` (legacy tf.keras 2.x ``.h5`` files) and Keras 3
(``.keras``) - serialise a functional model as a list of layer configs with inbound references. This
module turns either form (plus the layers' weights) into a :class:`Graph`, lets head cutting and the
KPU rewrite rules edit it as plain data, and builds a model of the same flavour back from it. Nested
models (a keras.applications backbone used as a layer) are inlined; Sequential models become chains.

The input model is never mutated: everything here works on copies of configs and weight arrays.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from k210tool.errors import ModelError

TF_KERAS = "tf_keras"
KERAS3 = "keras3"
_MODEL_CLASSES = {"Functional", "Model", "Sequential"}


@dataclass(frozen=True)
class Ref:
    """One tensor: output ``tensor`` of layer ``layer``."""

    layer: str
    tensor: int = 0


@dataclass
class Node:
    """One layer called once. ``args`` holds the call's positional structure with :class:`Ref` leaves."""

    name: str
    class_name: str
    config: dict[str, Any]
    args: Any = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    weights: list[np.ndarray] = field(default_factory=list)
    module: str | None = None
    registered_name: str | None = None

    @property
    def inputs(self) -> list[Ref]:
        return list(_refs_in(self.args)) + list(_refs_in(self.kwargs))

    @property
    def is_input(self) -> bool:
        return self.class_name == "InputLayer"

    def get(self, key: str, default: Any = None) -> Any:
        return self.config.get(key, default)


def _refs_in(obj: Any) -> Iterator[Ref]:
    if isinstance(obj, Ref):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _refs_in(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _refs_in(item)


def _map_refs(obj: Any, fn: Any) -> Any:
    if isinstance(obj, Ref):
        return fn(obj)
    if isinstance(obj, list):
        return [_map_refs(i, fn) for i in obj]
    if isinstance(obj, tuple):
        return tuple(_map_refs(i, fn) for i in obj)
    if isinstance(obj, dict):
        return {k: _map_refs(v, fn) for k, v in obj.items()}
    return obj


@dataclass
class Graph:
    """Layers in topological order, the input layers and the output tensors."""

    flavour: str
    name: str
    nodes: dict[str, Node]
    inputs: list[str]
    outputs: list[Ref]
    shapes: dict[str, list[tuple[int | None, ...]]] = field(default_factory=dict)  # filled by annotate_shapes
    # 180: the graph computes the original model's function on the input turned by 180 degrees (the exact
    # stride-2 lowering, see k210tool.model.rotate); whoever feeds it must turn the image first
    input_rotation: int = 0

    # -- queries -----------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes.values())

    def __getitem__(self, name: str) -> Node:
        return self.nodes[name]

    def consumers(self, name: str) -> list[Node]:
        return [n for n in self.nodes.values() if any(r.layer == name for r in n.inputs)]

    def is_output(self, name: str) -> bool:
        return any(r.layer == name for r in self.outputs)

    def producer(self, node: Node, index: int = 0) -> Node:
        return self.nodes[node.inputs[index].layer]

    def ancestors(self, refs: Iterable[Ref]) -> set[str]:
        seen: set[str] = set()
        stack = [r.layer for r in refs]
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            stack.extend(r.layer for r in self.nodes[name].inputs)
        return seen

    def unique_name(self, base: str) -> str:
        if base not in self.nodes:
            return base
        i = 1
        while f"{base}_{i}" in self.nodes:
            i += 1
        return f"{base}_{i}"

    def copy(self) -> Graph:
        return Graph(
            self.flavour,
            self.name,
            {k: _copy_node(n) for k, n in self.nodes.items()},
            list(self.inputs),
            list(self.outputs),
            dict(self.shapes),
            self.input_rotation,
        )

    def input_shape(self, name: str | None = None) -> tuple[int | None, ...]:
        node = self.nodes[name or self.inputs[0]]
        cfg = node.config
        shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
        return tuple(shape) if shape else ()

    # -- edits -------------------------------------------------------------------------------------
    def pruned(self, outputs: list[Ref]) -> Graph:
        """A copy keeping only what ``outputs`` depend on (input layers no longer used are dropped)."""
        keep = self.ancestors(outputs)
        g = self.copy()
        g.nodes = {k: n for k, n in g.nodes.items() if k in keep}
        g.inputs = [i for i in self.inputs if i in keep]
        g.outputs = list(outputs)
        return g

    def rewire(self, old: Ref, new: Ref) -> None:
        """Make every consumer of ``old`` (and the outputs) read ``new`` instead."""

        def swap(r: Ref) -> Ref:
            return new if r == old else r

        for n in self.nodes.values():
            n.args = _map_refs(n.args, swap)
            n.kwargs = _map_refs(n.kwargs, swap)
        self.outputs = [swap(r) for r in self.outputs]

    def remove(self, name: str) -> None:
        """Drop a single-input pass-through node, connecting its consumers to its input."""
        node = self.nodes[name]
        if len(node.inputs) != 1:
            raise ValueError(f"cannot bypass {name}: it has {len(node.inputs)} inputs")
        self.rewire(Ref(name, 0), node.inputs[0])
        del self.nodes[name]

    def insert_before(self, node: Node, target: str) -> None:
        """Insert ``node`` just before ``target`` in topological order."""
        items = list(self.nodes.items())
        idx = next(i for i, (k, _) in enumerate(items) if k == target)
        items.insert(idx, (node.name, node))
        self.nodes = dict(items)

    def set_input_shape(self, height: int, width: int) -> None:
        for name in self.inputs:
            cfg = self.nodes[name].config
            key = "batch_shape" if "batch_shape" in cfg else "batch_input_shape"
            shape = list(cfg[key])
            if len(shape) == 4:
                shape[1], shape[2] = height, width
                cfg[key] = shape

    def shape_of(self, ref: Ref) -> tuple[int, int] | None:
        """(height, width) of a 4-D tensor when known (see :func:`annotate_shapes`)."""
        shapes = self.shapes.get(ref.layer)
        if not shapes or ref.tensor >= len(shapes):
            return None
        shape = shapes[ref.tensor]
        if len(shape) != 4 or shape[1] is None or shape[2] is None:
            return None
        return int(shape[1]), int(shape[2])

    def full_shape(self, ref: Ref) -> tuple[int | None, ...] | None:
        shapes = self.shapes.get(ref.layer)
        return shapes[ref.tensor] if shapes and ref.tensor < len(shapes) else None


def _copy_node(n: Node) -> Node:
    return Node(
        n.name,
        n.class_name,
        copy.deepcopy(n.config),
        copy.deepcopy(n.args),
        copy.deepcopy(n.kwargs),
        list(n.weights),
        n.module,
        n.registered_name,
    )


# --------------------------------------------------------------------------------------------------
# model -> Graph
# --------------------------------------------------------------------------------------------------
def flavour_of(model: Any) -> str:
    mod = type(model).__module__
    return TF_KERAS if mod.startswith("tf_keras") else KERAS3


WeightsFn = Callable[[tuple[str, ...]], list[np.ndarray]]


def graph_from_model(model: Any) -> Graph:
    """Read a live Keras model (either flavour) into a Graph, inlining nested models."""

    def weights(path: tuple[str, ...]) -> list[np.ndarray]:
        layer = model
        for name in path:
            layer = layer.get_layer(name)
        return [np.array(w) for w in layer.get_weights()]

    return graph_from_config(model.get_config(), flavour_of(model), weights,
                             sequential_input_shape=_input_shape(model))


def _input_shape(model: Any) -> list[Any] | None:
    try:
        return list(model.input_shape)
    except (AttributeError, ValueError):
        return None


def graph_from_config(config: dict[str, Any], flavour: str, weights: WeightsFn | None = None,
                      name: str | None = None, sequential_input_shape: list[Any] | None = None) -> Graph:
    """Build a Graph from a serialised model config; ``weights(path)`` gives a layer's arrays by its
    (possibly nested) name path, or the nodes get no weights when it is None."""
    g = Graph(flavour, name or config.get("name", "model"), {}, [], [])
    ctx = _Ctx(g, weights or (lambda path: []), sequential_input_shape)
    g.outputs = ctx.add_model(config, (), None)
    return g


@dataclass
class _Ctx:
    g: Graph
    weights: WeightsFn
    sequential_input_shape: list[Any] | None

    def add_model(self, config: dict[str, Any], path: tuple[str, ...], prefix_inputs: list[Ref] | None,
                  class_name: str = "Functional") -> list[Ref]:
        layers_cfg = config.get("layers") or []
        if class_name == "Sequential" or (layers_cfg and not any("inbound_nodes" in s for s in layers_cfg)):
            return self.add_sequential(config, path, prefix_inputs)
        g = self.g
        input_names = [n for n, _, _ in _ref_list(config.get("input_layers", []))]
        special: dict[tuple[str, int], Ref] = {}
        names: dict[str, str] = {}

        def resolve(r: Ref) -> Ref:
            if (r.layer, r.tensor) in special:
                return special[(r.layer, r.tensor)]
            if r.layer in names:
                return Ref(names[r.layer], r.tensor)
            raise ModelError(f"model {config.get('name')!r} refers to unknown layer output {r.layer}[{r.tensor}]")

        for spec in layers_cfg:
            lname = spec.get("name") or spec["config"]["name"]
            if spec["class_name"] == "InputLayer":
                if prefix_inputs is not None:
                    special[(lname, 0)] = prefix_inputs[input_names.index(lname)]
                    continue
                new = lname if lname not in g.nodes else g.unique_name(lname)
                g.nodes[new] = Node(new, "InputLayer", _with_name(copy.deepcopy(spec["config"]), new),
                                    module=spec.get("module"), registered_name=spec.get("registered_name"))
                g.inputs.append(new)
                names[lname] = new
                continue
            nodes = spec.get("inbound_nodes", [])
            if len(nodes) > 1:
                raise ModelError(
                    f"layer {lname!r} is called {len(nodes)} times (a shared layer)",
                    "k210tool cannot rewrite or cut models with shared layers; use --no-rewrite",
                )
            args, kwargs = _parse_inbound(nodes[0] if nodes else None)
            args, kwargs = _map_refs(args, resolve), _map_refs(kwargs, resolve)
            if spec["class_name"] in _MODEL_CLASSES:
                outs = self.add_model(spec["config"], path + (lname,), list(_refs_in(args)), spec["class_name"])
                for t, ref in enumerate(outs):
                    special[(lname, t)] = ref
                continue
            names[lname] = self.add_layer(spec, spec["config"], path + (lname,), args, kwargs)
        return [resolve(Ref(n, t)) for n, _, t in _ref_list(config.get("output_layers", []))]

    def add_layer(self, spec: dict[str, Any], cfg: dict[str, Any], path: tuple[str, ...], args: Any,
                  kwargs: dict[str, Any]) -> str:
        g = self.g
        lname = path[-1]
        new_name = lname if lname not in g.nodes else g.unique_name("_".join(path))
        g.nodes[new_name] = Node(
            new_name,
            spec["class_name"],
            _with_name(copy.deepcopy(cfg), new_name),
            args,
            kwargs,
            self.weights(path),
            spec.get("module"),
            spec.get("registered_name"),
        )
        return new_name

    def add_sequential(self, config: dict[str, Any], path: tuple[str, ...], prefix_inputs: list[Ref] | None) -> list[Ref]:
        g = self.g
        prev: Ref | None = prefix_inputs[0] if prefix_inputs else None
        for spec in config.get("layers", []):
            cfg = copy.deepcopy(spec["config"])
            lname = cfg.get("name") or spec.get("name")
            if spec["class_name"] == "InputLayer":
                if prev is None:
                    new = g.unique_name(lname)
                    g.nodes[new] = Node(new, "InputLayer", _with_name(cfg, new), module=spec.get("module"))
                    g.inputs.append(new)
                    prev = Ref(new, 0)
                continue
            if prev is None:
                shape = cfg.get("batch_input_shape") or cfg.get("batch_shape") or self.sequential_input_shape
                if shape is None:
                    raise ModelError(f"sequential model {config.get('name')!r} has no input shape")
                iname = g.unique_name(f"{lname}_input")
                key = "batch_input_shape" if g.flavour == TF_KERAS else "batch_shape"
                g.nodes[iname] = Node(iname, "InputLayer", {key: list(shape), "dtype": "float32", "name": iname})
                g.inputs.append(iname)
                prev = Ref(iname, 0)
            cfg.pop("batch_input_shape", None)
            cfg.pop("batch_shape", None)
            if spec["class_name"] in _MODEL_CLASSES:
                prev = self.add_model(spec["config"], path + (lname,), [prev], spec["class_name"])[0]
                continue
            prev = Ref(self.add_layer(spec, cfg, path + (lname,), [prev], {}), 0)
        if prev is None:
            raise ModelError(f"sequential model {config.get('name')!r} has no layers")
        return [prev]


def _with_name(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    cfg["name"] = name
    return cfg


def _ref_list(obj: Any) -> list[tuple[str, int, int]]:
    """Normalise input_layers/output_layers (Keras 3 flattens a single entry)."""
    if not obj:
        return []
    if isinstance(obj[0], str):
        return [(obj[0], int(obj[1]), int(obj[2]))]
    return [(o[0], int(o[1]), int(o[2])) for o in obj]


def _parse_inbound(node: Any) -> tuple[Any, dict[str, Any]]:
    if node is None:
        return (), {}
    if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
        return _k3_refs(node.get("args", [])), _k3_refs(node.get("kwargs", {}))
    # tf_keras: [[layer, node_index, tensor_index, kwargs], ...]
    refs = [Ref(e[0], int(e[2])) for e in node]
    kwargs = dict(node[0][3]) if node and len(node[0]) > 3 and node[0][3] else {}
    args: Any = [refs[0]] if len(refs) == 1 else [refs]
    return args, kwargs


def _k3_refs(obj: Any) -> Any:
    if isinstance(obj, dict) and obj.get("class_name") == "__keras_tensor__":
        layer, _node, tensor = obj["config"]["keras_history"]
        return Ref(layer, int(tensor))
    if isinstance(obj, (list, tuple)):
        return [_k3_refs(i) for i in obj]
    if isinstance(obj, dict):
        return {k: _k3_refs(v) for k, v in obj.items()}
    return obj


# --------------------------------------------------------------------------------------------------
# Graph -> model
# --------------------------------------------------------------------------------------------------
def keras_module(flavour: str) -> Any:
    from k210tool.tfutil import import_keras3, import_tf_keras

    return import_tf_keras() if flavour == TF_KERAS else import_keras3()


def make_layer_config(flavour: str, class_name: str, **kwargs: Any) -> dict[str, Any]:
    """The config of a standard layer as the given flavour writes it (rules use this for new layers)."""
    k = keras_module(flavour)
    return dict(getattr(k.layers, class_name)(**kwargs).get_config())


def _safe_mode_scope(flavour: str, safe: bool) -> Any:
    if flavour == TF_KERAS:
        from tf_keras.src.saving.serialization_lib import SafeModeScope
    else:
        from keras.src.saving.serialization_lib import SafeModeScope
    return SafeModeScope(safe)


def build_model(g: Graph, custom_objects: dict[str, Any] | None = None) -> Any:
    """Build a model of the graph's flavour from ``g`` and load the node weights into it.

    Lambda layers are rebuilt without the safe-mode check: the graph comes from a model that was
    already loaded, and the decision to trust its code was taken there (``--trust-lambda``).
    """
    with _safe_mode_scope(g.flavour, False):
        return _build_model(g, custom_objects)


def _build_model(g: Graph, custom_objects: dict[str, Any] | None) -> Any:
    k = keras_module(g.flavour)
    tensors: dict[str, Any] = {}
    layers: dict[str, Any] = {}
    for node in g.nodes.values():
        if node.is_input:
            cfg = node.config
            shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
            tensors[node.name] = k.Input(batch_shape=tuple(shape), dtype=cfg.get("dtype") or "float32",
                                         name=node.name)
            continue
        spec: dict[str, Any] = {"class_name": node.class_name, "config": node.config}
        if g.flavour == KERAS3:
            spec["module"] = node.module
            spec["registered_name"] = node.registered_name
        try:
            layer = k.layers.deserialize(spec, custom_objects=custom_objects)
        except (TypeError, ValueError) as exc:
            raise ModelError(
                f"cannot rebuild layer {node.name!r} of class {node.class_name}: {exc}",
                "pass its Python class with --custom-objects FILE.py",
            ) from None

        def value(r: Ref) -> Any:
            out = tensors[r.layer]
            return out[r.tensor] if isinstance(out, (list, tuple)) else out

        args = _map_refs(node.args, value)
        kwargs = _map_refs(node.kwargs, value)
        tensors[node.name] = layer(*args, **kwargs)
        layers[node.name] = layer

    def out(r: Ref) -> Any:
        t = tensors[r.layer]
        return t[r.tensor] if isinstance(t, (list, tuple)) else t

    inputs = [tensors[n] for n in g.inputs]
    outputs = [out(r) for r in g.outputs]
    model = k.Model(inputs[0] if len(inputs) == 1 else inputs,
                    outputs[0] if len(outputs) == 1 else outputs, name=g.name)
    for name, layer in layers.items():
        w = g.nodes[name].weights
        if w:
            try:
                layer.set_weights(w)
            except ValueError as exc:
                raise ModelError(f"weights of layer {name!r} do not fit its rebuilt form: {exc}") from None
    return model


def annotate_shapes(g: Graph, model: Any) -> None:
    """Record every layer's output shape(s) from a model built from ``g``."""
    g.shapes = {}
    for node in g:
        try:
            layer = model.get_layer(node.name)
        except ValueError:
            continue
        out = layer.output
        outs = out if isinstance(out, (list, tuple)) else [out]
        g.shapes[node.name] = [tuple(None if d is None else int(d) for d in o.shape) for o in outs]
