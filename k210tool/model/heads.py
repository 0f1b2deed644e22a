"""Cut training heads off a face model, leaving image -> embedding.

Face models are trained with a head on top of the embedding: a margin layer (ArcFace, CosFace...) that also
takes the class label as a second input, or a softmax classifier. The K210 needs the embedding only. The
embedding is found from the graph's structure, not from layer names:

1. ``--output-layer NAME`` wins;
2. otherwise everything that depends on a non-image input (the label) or on a layer class k210tool cannot
   build is head; the embedding is the one tensor crossing from the rest into the head;
3. otherwise a trailing softmax classifier is head: the softmax and the linear Dense giving its logits.

A trailing linear Dense with no softmax after it is the embedding (GAP(16) -> Dense(128, name="embedding")
widens its input and is what the model was trained to output): it is kept, whatever its width.
``--output-layer`` cuts a softmax-less logits layer by hand.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from k210tool.errors import ModelError
from k210tool.model.graph import Graph, Node, Ref


@dataclass
class HeadCut:
    output: str  # layer whose output is now the model output
    removed_layers: list[str]
    removed_inputs: list[str]
    reason: str
    removed_classes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        parts = [f"kept {self.output!r} as the output ({self.reason})"]
        if self.removed_layers:
            parts.append(f"removed {', '.join(self.removed_layers)}")
        if self.removed_inputs:
            parts.append(f"dropped input(s) {', '.join(self.removed_inputs)}")
        return "; ".join(parts)


def image_inputs(g: Graph) -> list[str]:
    return [n for n in g.inputs if len(g.input_shape(n)) == 4]


def cut_head(g: Graph, unknown: set[str], output_layer: str | None = None,
             keep_head: bool = False) -> tuple[Graph, HeadCut | None]:
    """Return the graph reduced to one embedding output, and what was cut (None when nothing)."""
    images = image_inputs(g)
    if not images:
        shapes = ", ".join(f"{n} {g.input_shape(n)}" for n in g.inputs)
        raise ModelError(f"the model has no image input (inputs: {shapes})",
                         "k210tool converts models whose input is an image (batch, height, width, channels)")
    if len(images) > 1:
        raise ModelError(f"the model has {len(images)} image inputs ({', '.join(images)})",
                         "k210tool converts models with one image input")
    if output_layer is not None:
        return _cut_at(g, _named_ref(g, output_layer), "chosen with --output-layer")
    tainted = _tainted(g, images[0], unknown)
    if tainted:
        ref = _boundary(g, tainted)
        return _cut_at(g, ref, _taint_reason(g, tainted, unknown))
    if len(g.outputs) > 1:
        names = ", ".join(r.layer for r in g.outputs)
        raise ModelError(f"the model has {len(g.outputs)} outputs ({names}) and no way to choose",
                         "pick the embedding with --output-layer NAME")
    if keep_head:
        return g, None
    ref = _strip_classifier(g, g.outputs[0])
    if ref == g.outputs[0]:
        return g, None
    return _cut_at(g, ref, "softmax classifier at the end")


def _named_ref(g: Graph, name: str) -> Ref:
    if name in g.nodes:
        return Ref(name, 0)
    close = difflib.get_close_matches(name, list(g.nodes), n=3)
    hint = f"did you mean {', '.join(close)}?" if close else "k210tool check MODEL lists the layers"
    raise ModelError(f"no layer named {name!r} in the model", hint)


HEAD_CLASSES = {"Softmax", "Activation", "Dense", "Dropout", "Lambda"}


def _tainted(g: Graph, image: str, unknown: set[str]) -> set[str]:
    """Head layers: those depending on a non-image input (the label), plus unknown-class layers at the end
    of the graph (nothing but classifier-like layers after them). An unknown class with feature layers after
    it is part of the backbone, and is left for the builder to report."""
    tainted: set[str] = set()
    for node in g:  # topological order
        if node.is_input:
            if node.name != image:
                tainted.add(node.name)
            continue
        if any(r.layer in tainted for r in node.inputs):
            tainted.add(node.name)
    for node in g:
        if node.class_name in unknown and node.name not in tainted:
            after = _descendants(g, node.name)
            if all(g.nodes[d].class_name in HEAD_CLASSES | unknown for d in after):
                tainted |= {node.name} | after
    return tainted


def _descendants(g: Graph, name: str) -> set[str]:
    found: set[str] = set()
    frontier = [name]
    while frontier:
        current = frontier.pop()
        for c in g.consumers(current):
            if c.name not in found:
                found.add(c.name)
                frontier.append(c.name)
    return found


def _boundary(g: Graph, tainted: set[str]) -> Ref:
    """The single clean tensor that feeds the head."""
    crossing: list[Ref] = []
    for node in g:
        if node.name not in tainted:
            continue
        for r in node.inputs:
            if r.layer not in tainted and r not in crossing:
                crossing.append(r)
    clean_outputs = [r for r in g.outputs if r.layer not in tainted]
    candidates = crossing + [r for r in clean_outputs if r not in crossing]
    candidates = [r for r in candidates if not g.nodes[r.layer].is_input]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ModelError("the whole model depends on its non-image inputs: no embedding to keep",
                         "pick the embedding with --output-layer NAME")
    # several tensors feed the head: keep the one the others depend on only if it is unique and last
    last = [r for r in candidates if not any(r.layer in g.ancestors([o]) and o != r for o in candidates)]
    if len(last) == 1:
        return last[0]
    names = ", ".join(r.layer for r in candidates)
    raise ModelError(f"several layers feed the training head ({names}); cannot tell which is the embedding",
                     "pick it with --output-layer NAME")


def _taint_reason(g: Graph, tainted: set[str], unknown: set[str]) -> str:
    labels = [n for n in tainted if g.nodes[n].is_input]
    classes = sorted({g.nodes[n].class_name for n in tainted if g.nodes[n].class_name in unknown})
    bits = []
    if labels:
        bits.append(f"head takes the label input {', '.join(labels)}")
    if classes:
        bits.append(f"unknown head class {', '.join(classes)}")
    return "; ".join(bits)


def _is_softmax(node: Node) -> bool:
    if node.class_name == "Softmax":
        return True
    act = node.get("activation")
    return node.class_name in ("Activation", "Dense") and act == "softmax"


def _strip_classifier(g: Graph, ref: Ref) -> Ref:
    """The embedding under a trailing softmax classifier (``ref`` itself when the model does not end in one)."""
    node = g.nodes[ref.layer]
    if not _is_softmax(node) or not node.inputs:
        return ref
    if node.class_name == "Dense":
        return node.inputs[0]
    logits = g.nodes[node.inputs[0].layer]
    if logits.class_name == "Dense" and logits.get("activation") in (None, "linear") and logits.inputs \
            and len(g.consumers(logits.name)) == 1:
        return logits.inputs[0]
    return node.inputs[0]


def _cut_at(g: Graph, ref: Ref, reason: str) -> tuple[Graph, HeadCut]:
    pruned = g.pruned([ref])
    removed = [n for n in g.nodes if n not in pruned.nodes and not g.nodes[n].is_input]
    removed_inputs = [n for n in g.inputs if n not in pruned.nodes]
    classes = sorted({g.nodes[n].class_name for n in removed})
    return pruned, HeadCut(ref.layer, removed, removed_inputs, reason, classes)
