"""Assemble nncase 1.9 stackvm bytecode for the CPU ops k210tool's own kmodels need.

The mirror of :func:`~k210tool.compile.kmodel.stackvm.lift`: each tensor op is written the way nncase 1.9's
code generator writes it (``src/codegen/stackvm/ops/*.cpp``): shape registers set with ``stshape`` and
``stpaddings``, then the buffer addresses and scalars pushed in the reverse of the order the runtime pops
them, then the tensor instruction with its operands (``stackvm_isa`` tables). So an op written here and
lifted back gives the same :class:`~k210tool.compile.kmodel.model.Op` arguments (tested), and nncase's
Simulator runs it.
"""

from __future__ import annotations

import struct
from typing import Any

from k210tool.compile.kmodel.errors import KmodelError
from k210tool.compile.kmodel.model import MemoryRange
from k210tool.compile.kmodel.stackvm import _LIFT
from k210tool.compile.kmodel.stackvm_isa import OPCODE_NAMES, OPERANDS, TENSOR, TENSOR_FUNCTIONS

_OPCODES = {name: i for i, name in enumerate(OPCODE_NAMES)}
_FUNCTIONS = {name: (fid, fmt, names.split()) for fid, (name, fmt, names) in TENSOR_FUNCTIONS.items()}


class Assembler:
    """Appends stackvm instructions; :attr:`code` is the function's ``.text``."""

    def __init__(self) -> None:
        self.code = bytearray()

    # ---------------------------------------------------------------------------- instructions
    def _ins(self, name: str, *values: Any) -> None:
        fmt, _names = OPERANDS.get(name, ("", ""))
        self.code.append(_OPCODES[name])
        if fmt:
            self.code += struct.pack("<" + fmt, *values)

    def ldc_i4(self, value: int) -> None:
        self._ins("ldc_i4", int(value) if value < 2**31 else int(value) - 2**32)

    def ldc_r4(self, value: float) -> None:
        self._ins("ldc_r4", float(value))

    def lea_buffer(self, rng: MemoryRange) -> None:
        self._ins("lea_buffer", rng.location, rng.shared_module, rng.start)

    def stshape(self, reg: int, dims: tuple[int, ...]) -> None:
        for d in dims:
            self.ldc_i4(d)
        self._ins("stshape", reg, len(dims))

    def stpaddings(self, reg: int, pads: tuple[tuple[int, int, int], ...]) -> None:
        for before, after, interior in pads:
            self.ldc_i4(before)
            self.ldc_i4(after)
            self.ldc_i4(interior)
        self._ins("stpaddings", reg, len(pads))

    def ret(self) -> None:
        self._ins("ret")

    def tensor(self, fn: str, **operands: Any) -> None:
        fid, fmt, names = _FUNCTIONS[fn]
        missing = [n for n in names if n not in operands]
        if missing:
            raise KmodelError(f"stackvm {fn}: operands {', '.join(missing)} are missing")
        self.code.append(TENSOR)
        self.code += struct.pack("<H", fid)
        self.code += struct.pack("<" + fmt, *(operands[n] for n in names))

    # ------------------------------------------------------------------------------------ ops
    def op(self, fn: str, args: dict[str, Any]) -> None:
        """Write one tensor op from lifted-style ``args`` (the keys :func:`stackvm.lift` produces)."""
        if fn == "call":
            self.call(args)
            return
        pops, regs, _tensors = _LIFT[fn]
        operands: dict[str, Any] = {}
        reg = 0
        for arg, operand in regs.items():
            if arg == "paddings":
                self.stpaddings(reg, tuple(tuple(p) for p in args[arg]))
            else:
                self.stshape(reg, tuple(int(d) for d in args[arg]))
            operands[operand] = reg
            reg += 1
        for spec in reversed(pops):
            kind, name = spec.split(":")
            value = args[name]
            if kind == "a":
                self.lea_buffer(value)
            elif kind == "f":
                self.ldc_r4(value)
            elif kind == "p":
                before, after, interior = value
                self.ldc_i4(before)
                self.ldc_i4(after)
                self.ldc_i4(interior)
            else:
                self.ldc_i4(int(value))
        _fid, _fmt, names = _FUNCTIONS[fn]
        for name in names:
            if name not in operands:
                if name not in args:
                    raise KmodelError(f"stackvm {fn}: operand {name} is missing")
                operands[name] = args[name]
        self.tensor(fn, **operands)

    def call(self, args: dict[str, Any]) -> None:
        """``tensor.call`` of ``args['module']``/``args['function']`` with ``inputs``/``outputs`` tensors
        ({memory, shape, strides}), pushed as nncase does: address, datatype, shape register, stride register."""
        reg = 0
        for t in list(args["inputs"]) + list(args["outputs"]):
            self.lea_buffer(t["memory"])
            self.ldc_i4(t["memory"].datatype)
            self.stshape(reg, tuple(t["shape"]))
            self.ldc_i4(reg)
            self.stshape(reg + 1, tuple(t["strides"]))
            self.ldc_i4(reg + 1)
            reg += 2
        self.tensor("call", function_id=args["function"], module_id=args["module"], num_src=len(args["inputs"]),
                    num_dst=len(args["outputs"]))


def dense_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Element strides of a dense row-major tensor (what nncase writes for contiguous buffers)."""
    strides = []
    acc = 1
    for d in reversed(shape):
        strides.append(acc)
        acc *= d
    return tuple(reversed(strides))
