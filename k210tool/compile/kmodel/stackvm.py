"""Decode nncase 1.9 stackvm bytecode and lift it into CPU ops with resolved operands.

:func:`decode` turns ``.text`` bytes into :class:`Instruction` records using the pinned tables of
:mod:`~k210tool.compile.kmodel.stackvm_isa`; an opcode or tensor function the tables do not know is a
:class:`KmodelError` naming it. :func:`lift` then runs the evaluation stack symbolically (nncase 1.9's
code generator emits straight-line code: constants, buffer addresses and shape registers pushed before
each tensor instruction, see ``src/codegen/stackvm/ops/*.cpp``) and returns one :class:`Op` per tensor
instruction, every operand resolved: tensors as :class:`MemoryRange` plus shape and strides, scalars as
numbers. The pop order of each instruction is that of ``src/runtime/stackvm/ops/tensor.*.cpp``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from k210tool.compile.kmodel.errors import KmodelError
from k210tool.compile.kmodel.kpu import signed
from k210tool.compile.kmodel.model import V5_DT_BYTES, MemoryRange, Op
from k210tool.compile.kmodel.stackvm_isa import OPCODE_NAMES, OPERANDS, TENSOR, TENSOR_FUNCTIONS

_HINT = ("this bytecode was not written by nncase 1.9 (stackvm opcode and tensor-function numbers changed "
         "across nncase 1.x releases); recompile the model with nncase 1.9")


@dataclass(frozen=True)
class Instruction:
    offset: int
    name: str  # "lea_buffer", or "tensor.<function>" for tensor instructions
    args: dict[str, Any] = field(default_factory=dict)


def decode(text: bytes, where: str = "stackvm") -> list[Instruction]:
    out: list[Instruction] = []
    pos, n = 0, len(text)
    while pos < n:
        start, opcode = pos, text[pos]
        pos += 1
        if opcode == TENSOR:
            if pos + 2 > n:
                raise KmodelError(f"{where}: truncated tensor instruction at .text+{start}")
            funct = int.from_bytes(text[pos : pos + 2], "little")
            pos += 2
            if funct not in TENSOR_FUNCTIONS:
                raise KmodelError(f"{where}: unknown stackvm tensor function 0x{funct:04X} at .text+{start}", _HINT)
            name, fmt, names = TENSOR_FUNCTIONS[funct]
            name = "tensor." + name
        elif opcode < len(OPCODE_NAMES):
            name = OPCODE_NAMES[opcode]
            fmt, names = OPERANDS.get(name, ("", ""))
        else:
            raise KmodelError(f"{where}: unknown stackvm opcode 0x{opcode:02X} at .text+{start}", _HINT)
        size = struct.calcsize("<" + fmt)
        if pos + size > n:
            raise KmodelError(f"{where}: truncated {name} instruction at .text+{start}")
        values = struct.unpack_from("<" + fmt, text, pos) if fmt else ()
        pos += size
        out.append(Instruction(start, name, dict(zip(names.split(), values, strict=True))))
    return out


# ------------------------------------------------------------------------------------------- lifting
@dataclass(frozen=True)
class _Addr:
    location: int
    offset: int


# tensor function -> (pops from the top of the stack, registers, tensors).
# pops: "a:name" address, "f:name" float, "v:name" scalar value, "p:name" padding {before, after, interior}.
# registers: argument -> operand naming the shape register. tensors: argument -> (shape arg, strides arg,
# datatype: an operand name or a fixed nncase datatype id).
_F32 = 9
_LIFT: dict[str, tuple[tuple[str, ...], dict[str, str], dict[str, tuple[str, str, str | int]]]] = {
    "dequantize": (("f:bias", "f:scale", "a:output", "a:input"), {"shape": "rshape_src", "in_strides": "rstride_src",
                   "out_strides": "rstride_dest"}, {"input": ("shape", "in_strides", "in_datatype"),
                                                    "output": ("shape", "out_strides", "dst_datatype")}),
    "quantize": (("f:bias", "f:scale", "a:output", "a:input"), {"shape": "rshape_src", "in_strides": "rstride_src",
                 "out_strides": "rstride_dest"}, {"input": ("shape", "in_strides", "in_datatype"),
                                                  "output": ("shape", "out_strides", "dst_datatype")}),
    "binary": (("a:output", "a:input_b", "a:input_a"), {
        "in_a_shape": "rshape_src1", "in_a_strides": "rstride_src1", "in_b_shape": "rshape_src2",
        "in_b_strides": "rstride_src2", "out_shape": "rshape_dest", "out_strides": "rstride_dest"},
        {"input_a": ("in_a_shape", "in_a_strides", "datatype"), "input_b": ("in_b_shape", "in_b_strides", "datatype"),
         "output": ("out_shape", "out_strides", "datatype")}),
    "conv2d": (("p:padding_w", "p:padding_h", "a:output", "a:bias", "a:weights", "a:input"), {
        "in_shape": "rshape_src", "in_strides": "rstride_src", "w_shape": "rshape_kernel",
        "w_strides": "rstride_kernel", "bias_strides": "rstride_bias", "out_strides": "rstride_dest"},
        {"input": ("in_shape", "in_strides", _F32), "weights": ("w_shape", "w_strides", _F32)}),
    "pad": (("v:pad_value", "a:output", "a:input"), {"shape": "rshape_src", "in_strides": "rstride_src",
            "out_strides": "rstride_dest", "paddings": "rpaddings"},
            {"input": ("shape", "in_strides", "datatype")}),
    "slice": (("a:output", "a:input"), {"shape": "rshape_src", "in_strides": "rstride_src",
              "out_strides": "rstride_dest", "begins": "rbegins", "ends": "rends", "strides": "rstrides"},
              {"input": ("shape", "in_strides", "datatype")}),
    "transpose": (("a:output", "a:input"), {"shape": "rshape_src", "in_strides": "rstride_src",
                  "out_strides": "rstride_dest", "perm": "rshape_perm"}, {"input": ("shape", "in_strides", "datatype")}),
    "lut1d": (("v:max", "v:min", "a:output", "a:table", "a:input"), {"shape": "rshape_src",
              "in_strides": "rstride_src", "out_strides": "rstride_dest"},
              {"input": ("shape", "in_strides", "datatype"), "output": ("shape", "out_strides", "datatype")}),
    "copy": (("a:output", "a:input"), {"shape": "rshape", "in_strides": "rstride_src", "out_strides": "rstride_dest"},
             {"input": ("shape", "in_strides", "datatype"), "output": ("shape", "out_strides", "datatype")}),
    "convert": (("a:output", "a:input"), {"shape": "rshape_src", "in_strides": "rstride_src",
                "out_strides": "rstride_dest"}, {"input": ("shape", "in_strides", "in_datatype"),
                                                 "output": ("shape", "out_strides", "dst_datatype")}),
    "unary": (("a:output", "a:input"), {"shape": "rshape_src", "in_strides": "rstride_src",
              "out_strides": "rstride_dest"}, {"input": ("shape", "in_strides", _F32),
                                               "output": ("shape", "out_strides", _F32)}),
    "sigmoid": (("a:output", "a:input"), {"shape": "rshape_src", "in_strides": "rstride_src",
                "out_strides": "rstride_dest"}, {"input": ("shape", "in_strides", "datatype"),
                                                 "output": ("shape", "out_strides", "datatype")}),
    "matmul": (("a:output", "a:bias", "a:input_b", "a:input_a"), {
        "in_a_shape": "rshape_src1", "in_a_strides": "rstride_src1", "in_b_shape": "rshape_src2",
        "in_b_strides": "rstride_src2", "out_shape": "rshape_dest", "out_strides": "rstride_dest"},
        {"input_a": ("in_a_shape", "in_a_strides", _F32), "input_b": ("in_b_shape", "in_b_strides", _F32),
         "output": ("out_shape", "out_strides", _F32)}),
    "reduce": (("v:init_value", "a:output", "a:input"), {"in_shape": "rshape_src", "axis": "rshape_axis",
               "in_strides": "rstride_src", "out_strides": "rstride_dest"},
               {"input": ("in_shape", "in_strides", "datatype")}),
    "reduce_window2d": (("p:padding_w", "p:padding_h", "a:output", "v:init_value", "a:input"), {
        "in_shape": "rshape_src", "in_strides": "rstride_src", "out_strides": "rstride_dest"},
        {"input": ("in_shape", "in_strides", "datatype")}),
}


def lift(instructions: list[Instruction], where: str = "stackvm") -> list[Op]:
    """Run the evaluation stack symbolically and return one op per tensor instruction."""
    stack: list[Any] = []
    shapes: dict[int, tuple[int, ...]] = {}
    paddings: dict[int, tuple[tuple[int, int, int], ...]] = {}
    ops: list[Op] = []

    def pop(what: str, ins: Instruction) -> Any:
        if not stack:
            raise KmodelError(f"{where}: stack underflow at .text+{ins.offset} ({ins.name}, {what})", _HINT)
        return stack.pop()

    for ins in instructions:
        name, a = ins.name, ins.args
        if name == "ldc_i4":
            stack.append(int(a["imm"]))
        elif name in ("ldc_i4_0", "ldc_i4_1", "ldnull"):
            stack.append(1 if name == "ldc_i4_1" else 0)
        elif name == "ldc_r4":
            stack.append(float(a["imm"]))
        elif name == "lea_buffer":
            stack.append(_Addr(a["location"], a["offset"]))
        elif name == "dup":
            stack.append(pop("dup", ins))
            stack.append(stack[-1])
        elif name == "pop":
            pop("pop", ins)
        elif name == "stshape":
            dims = [_int(pop("shape", ins), ins, where) for _ in range(a["rank"])]
            shapes[a["rshape"]] = tuple(reversed(dims))
        elif name == "stpaddings":
            pads = []
            for _ in range(a["rank"]):
                interior, after, before = (_int(pop("padding", ins), ins, where) for _ in range(3))
                pads.append((before, after, interior))
            paddings[a["rpaddings"]] = tuple(reversed(pads))
        elif name == "ret":
            break
        elif name == "nop":
            continue
        elif name == "tensor.call":
            ops.append(_lift_call(ins, stack, shapes, pop, where))
        elif name.startswith("tensor.") and name[7:] not in _LIFT:
            # nncase pushes exactly the operands of the next tensor instruction: keep them raw.
            regs = {k.replace("rshape", "shape"): shapes.get(v) for k, v in ins.args.items() if k.startswith("rshape")}
            ops.append(Op(name[7:], {**ins.args, **regs, "operands": [_plain(v) for v in stack]}))
            stack.clear()
        elif name.startswith("tensor."):
            ops.append(_lift_tensor(ins, name[7:], shapes, paddings, pop, where))
        else:
            raise KmodelError(f"{where}: instruction {name} at .text+{ins.offset} is not used by nncase 1.9's "
                              "code generator for K210 models and cannot be lifted")
    return ops


def _plain(v: Any) -> Any:
    return MemoryRange(v.location, 0, v.offset, 0) if isinstance(v, _Addr) else v


def _int(v: Any, ins: Instruction, where: str) -> int:
    if isinstance(v, int):
        return v
    raise KmodelError(f"{where}: expected an integer on the stack at .text+{ins.offset} ({ins.name})", _HINT)


def _lift_tensor(ins: Instruction, fn: str, shapes: dict, paddings: dict, pop: Any, where: str) -> Op:
    pops, regs, tensors = _LIFT[fn]
    args: dict[str, Any] = {k: v for k, v in ins.args.items() if not k.startswith(("rshape", "rstride", "rbegins",
                                                                                    "rends", "rstrides", "rpaddings"))}
    addrs: dict[str, _Addr] = {}
    for spec in pops:
        kind, arg = spec.split(":")
        v = pop(arg, ins)
        if kind == "a":
            if not isinstance(v, _Addr):
                raise KmodelError(f"{where}: {fn} at .text+{ins.offset}: {arg} is not a buffer address", _HINT)
            addrs[arg] = v
        elif kind == "p":
            interior, after = _int(v, ins, where), _int(pop(arg, ins), ins, where)
            args[arg] = (_int(pop(arg, ins), ins, where), after, interior)
        else:
            args[arg] = v
    for arg, operand in regs.items():
        reg = ins.args[operand]
        table = paddings if arg == "paddings" else shapes
        if reg not in table:
            raise KmodelError(f"{where}: {fn} at .text+{ins.offset} reads register {reg} before it is set", _HINT)
        args[arg] = table[reg]
    derived = _derived_tensors(fn, args, ins.args)
    for arg, addr in addrs.items():
        if arg in tensors:
            shape_arg, strides_arg, dt = tensors[arg]
            dtype = ins.args[dt] if isinstance(dt, str) else dt
            size = _extent(args.get(shape_arg), args.get(strides_arg), dtype)
        else:
            shape, strides, dtype = derived.get(arg, ((), None, 0))
            size = _extent(shape, strides, dtype) if strides is not None else 0
        args[arg] = MemoryRange(addr.location, dtype, addr.offset, size)
    return Op(fn, args)


def _derived_tensors(fn: str, args: dict[str, Any], ops: dict[str, Any]) -> dict[str, tuple]:
    """Shapes the runtime computes instead of reading from a register (outputs, bias, table)."""
    dt = ops.get("datatype", _F32)
    out: dict[str, tuple] = {}
    if fn == "pad":
        shape = tuple(d + b + a + i * max(d - 1, 0) for d, (b, a, i) in zip(args["shape"], args["paddings"], strict=False))
        out["output"] = (shape, args["out_strides"], dt)
    elif fn == "slice":
        shape = tuple(_slice_len(b, i32(e), i32(s), d) for b, e, s, d in
                      zip(args["begins"], args["ends"], args["strides"], args["shape"], strict=False))
        out["output"] = (shape, args["out_strides"], dt)
    elif fn == "transpose":
        shape = tuple(args["shape"][p] if 0 <= p < len(args["shape"]) else 0 for p in args["perm"])
        out["output"] = (shape, args["out_strides"], dt)
    elif fn == "conv2d":
        n, _c, h, w = (tuple(args["in_shape"]) + (0, 0, 0, 0))[:4]
        oc, _ic, kh, kw = (tuple(args["w_shape"]) + (0, 0, 0, 0))[:4]
        oh = _windowed(h, kh, ops["stride_h"], ops["dilation_h"], args["padding_h"])
        ow = _windowed(w, kw, ops["stride_w"], ops["dilation_w"], args["padding_w"])
        out["output"] = ((n, oc, oh, ow), args["out_strides"], _F32)
        out["bias"] = ((oc,), args["bias_strides"][-1:] or (1,), _F32)
    elif fn == "lut1d":
        out["table"] = ((ops["table_len"],), (1,), dt)
    elif fn == "reduce":
        out["output"] = (reduced_shape(args["in_shape"], args["axis"], bool(ops.get("keep_dims"))),
                         args["out_strides"], dt)
    elif fn == "reduce_window2d":
        n, c, h, w = (tuple(args["in_shape"]) + (0, 0, 0, 0))[:4]
        oh = _windowed(h, ops["filter_h"], ops["stride_h"], ops["dilation_h"], args["padding_h"])
        ow = _windowed(w, ops["filter_w"], ops["stride_w"], ops["dilation_w"], args["padding_w"])
        out["output"] = ((n, c, oh, ow), args["out_strides"], dt)
    elif fn == "matmul":
        out["bias"] = ((args["out_shape"][-1] if args["out_shape"] else 0,), (1,), _F32)
    return out


def reduced_shape(shape: tuple[int, ...], axis: tuple[int, ...], keep_dims: bool) -> tuple[int, ...]:
    """The output shape of a reduce over ``axis`` (nncase 1.9 ``get_reduced_shape``: never empty)."""
    axes = set(axis)
    if keep_dims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape)) or (1,)
    return tuple(d for i, d in enumerate(shape) if i not in axes) or (1,)


def i32(v: int) -> int:
    """A stack value read as int32 (how the runtime reads ends and strides: ``as_runtime_axis``)."""
    return signed(v, 32)


def _slice_len(begin: int, end: int, stride: int, dim: int) -> int:
    if stride == 0:
        return 0
    end = max(min(end, dim), -1)
    if stride > 0:
        return max(0, (end - begin + stride - 1) // stride)
    return max(0, (begin - end - stride - 1) // -stride)


def _windowed(size: int, kernel: int, stride: int, dilation: int, padding: tuple[int, int, int]) -> int:
    if stride <= 0:
        return 0
    effective = (kernel - 1) * dilation + 1
    return max(0, (size + padding[0] + padding[1] - effective + stride) // stride)


def _lift_call(ins: Instruction, stack: list, shapes: dict, pop: Any, where: str) -> Op:
    def tensor() -> dict[str, Any]:
        rstrides, rshape = _int(pop("strides", ins), ins, where), _int(pop("shape", ins), ins, where)
        dtype, addr = _int(pop("datatype", ins), ins, where), pop("address", ins)
        if not isinstance(addr, _Addr) or rshape not in shapes or rstrides not in shapes:
            raise KmodelError(f"{where}: malformed call arguments at .text+{ins.offset}", _HINT)
        shape, strides = shapes[rshape], shapes[rstrides]
        return {"memory": MemoryRange(addr.location, dtype & 0xFF, addr.offset, _extent(shape, strides, dtype & 0xFF)),
                "shape": shape, "strides": strides}

    outputs = [tensor() for _ in range(ins.args["num_dst"])][::-1]
    inputs = [tensor() for _ in range(ins.args["num_src"])][::-1]
    return Op("call", {"module": ins.args["module_id"], "function": ins.args["function_id"],
                       "inputs": inputs, "outputs": outputs})


def _extent(shape: tuple[int, ...] | None, strides: tuple[int, ...] | None, dtype: int) -> int:
    """Bytes spanned by a strided tensor (runtime_op_utility.h get_bytes)."""
    if not shape:
        return V5_DT_BYTES.get(dtype, 1)
    if strides is None or len(strides) != len(shape) or any(d <= 0 for d in shape):
        return 0
    last = sum((d - 1) * s for d, s in zip(shape, strides, strict=True))
    return (last + 1) * V5_DT_BYTES.get(dtype, 1)
