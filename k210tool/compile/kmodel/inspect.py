"""What ``k210tool inspect`` shows of a .kmodel (v3, v4 or v5): version, tensors, memory, every layer with its
placement and a one-line summary of its settings, and which firmware families load it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class LayerRow:
    index: int
    op: str
    placement: str
    where: str
    summary: str
    args: dict[str, Any]
    kpu: dict[str, dict[str, int]] | None = None


@dataclass
class InspectResult:
    path: str
    version: int
    size: int
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    memory: dict[str, int]
    kpu_layers: int
    cpu_layers: int
    layers: list[LayerRow]
    loads_on: list[str]
    loads_on_names: list[str]
    notes: list[str] = field(default_factory=list)


def inspect_kmodel(path: Path | str, with_words: bool = False) -> InspectResult:
    from k210tool.boards import all_firmware
    from k210tool.compile.kmodel import read_kmodel
    from k210tool.compile.kmodel.footprint import board_fit
    from k210tool.errors import InputError

    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {p}: {exc.strerror or exc}", "check the path") from None
    model = read_kmodel(data)
    rows = [LayerRow(layer.index, layer.op, layer.placement, layer.where, _summary(layer.op, layer.args),
                     layer.args, layer.kpu.to_dict() if (with_words and layer.kpu is not None) else None)
            for layer in model.layers]
    firmware = [f for f in all_firmware().values() if board_fit(model, f).fits]  # its version and its memory
    notes = list(model.errors())
    if model.version == 5:
        notes.append("kmodel v5 loads only on firmware with the nncase 1.x runtime; released MaixPy and CanMV "
                     "builds load v3/v4 (convert --kmodel-version 4 writes one)")
    return InspectResult(
        path=str(p), version=model.version, size=model.size,
        inputs=[{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in model.inputs],
        outputs=[{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in model.outputs],
        memory=dict(model.memory), kpu_layers=sum(1 for r in rows if r.op in ("kpu_conv2d", "K210_CONV")),
        cpu_layers=sum(1 for r in rows if r.placement == "CPU"), layers=rows,
        loads_on=[f.id for f in firmware], loads_on_names=[f.name for f in firmware], notes=notes,
    )


def _summary(op: str, args: dict[str, Any]) -> str:
    if "filter" in args and "input" in args and isinstance(args["input"], list):
        kind = f"{args['filter']}x{args['filter']}{' depthwise' if args['depthwise'] else ''}"
        shapes = f"{'x'.join(map(str, args['input']))} -> {'x'.join(map(str, args['output']))}"
        out = " + main memory" if args.get("main_mem_output") or args.get("main_mem_out") else ""
        return f"{kind} {shapes}, pool {args['pool']}, pad {args['pad_value']}{out}"
    parts = []
    for key in ("shape", "in_shape", "in_a_shape", "perm", "paddings", "begins", "ends", "strides", "binary_op",
                "scale", "bias", "quant_param", "count", "channels"):
        if key in args and not isinstance(args[key], dict):
            parts.append(f"{key}={_short(args[key])}")
    for key in ("input", "input_a", "output"):
        value = args.get(key)
        if isinstance(value, dict) and "memory" in value:
            parts.append(f"{key}={value['memory']}:{value['dtype']}@{value['start']}+{value['size']}")
    return ", ".join(parts)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_short(v) for v in value) + "]"
    return str(value)
