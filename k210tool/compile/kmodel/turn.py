"""Turn a kmodel v5's image input by 180 degrees inside the kmodel (for nncase's output).

A network lowered by turning it 180 degrees (:mod:`k210tool.model.rotate`) must be fed the turned image.
k210tool's backend writes that turn into the kmodel itself. nncase compiles the turned network as it is;
:func:`turn_input` then puts one strided slice (negative strides) at the start of the entry function, from
the input into a new data buffer, and points every reference to the input at that buffer - the same slice
k210tool's backend writes, which the v4 transcoder and nncase's Simulator both run. The rest of the code is
lifted and assembled back unchanged (the assembler round-trips nncase's code; tests).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from k210tool.compile.kmodel.errors import KmodelError
from k210tool.compile.kmodel.model import V5_DATA, V5_DT_BYTES, V5_INPUT, MemoryRange, Section
from k210tool.compile.kmodel.stackvm_asm import Assembler, dense_strides
from k210tool.compile.kmodel.v5 import read_v5
from k210tool.compile.kmodel.v5write import write_v5_model

_ALIGN = 8


def turn_input(v5: bytes) -> bytes:
    """``v5`` with its one NCHW image input turned by 180 degrees (H and W reversed) before anything reads it."""
    km = read_v5(v5)
    model = km.v5
    assert model is not None
    module = model.modules[model.entry_module]
    fn = model.entry()
    if module.type != "stackvm" or len(module.functions) != 1 or fn.error or len(fn.inputs) != 1:
        raise KmodelError("kmodel v5: cannot turn the input of this kmodel (its entry is not one stackvm function "
                          "with one input)")
    image, shape = fn.inputs[0]
    if len(shape) != 4:
        raise KmodelError(f"kmodel v5: input shape {list(shape)} is not NCHW")
    n, c, h, w = shape
    base = (module.mempool(V5_DATA) + _ALIGN - 1) // _ALIGN * _ALIGN
    size = n * c * h * w * V5_DT_BYTES[image.datatype]
    turned = MemoryRange(V5_DATA, image.datatype, base, size)
    asm = Assembler()
    asm.op("slice", {"input": image, "output": turned, "shape": tuple(shape),
                     "in_strides": dense_strides(tuple(shape)), "out_strides": dense_strides(tuple(shape)),
                     "begins": (0, 0, h - 1, w - 1), "ends": (n, c, 2**32 - 1, 2**32 - 1),
                     "strides": (1, 1, 2**32 - 1, 2**32 - 1), "datatype": image.datatype})
    for op in fn.ops:
        asm.op(op.name, _moved(op.args, base))
    text = bytes(asm.code)
    module.mempools = [(loc, base + size if loc == V5_DATA else s) for loc, s in module.mempools]
    if not any(loc == V5_DATA for loc, _s in module.mempools):
        module.mempools.append((V5_DATA, base + size))
    module.sections = [Section(s.name, s.flags, s.body_start, len(text), text) if s.name == ".text" else s
                       for s in module.sections]
    module.functions = [replace(fn, text=text, entrypoint=0, ops=[], instructions=[])]
    return write_v5_model(model)


def _moved(value: Any, base: int) -> Any:
    """``value`` with every input-pool range moved to the data pool at ``base`` (the turned copy)."""
    if isinstance(value, MemoryRange):
        return MemoryRange(V5_DATA, value.datatype, base + value.start, value.size) \
            if value.location == V5_INPUT else value
    if isinstance(value, dict):
        return {k: _moved(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [_moved(v, base) for v in value]
    return value

