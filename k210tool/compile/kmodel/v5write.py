"""Write kmodel v5 (nncase 1.x) files: the container :mod:`~k210tool.compile.kmodel.v5` reads.

The layout follows nncase v1.9.0 ``src/codegen/model_builder.cpp`` and ``module_builder.cpp``: a model
header, then each module: header, mempool descriptors, functions (header, 12-byte memory ranges, shapes,
padded to 8), sections (32-byte header, the body aligned to the module's alignment in the file: 8 for
stackvm, 256 for k210, so the KPU's activation tables stay 256-aligned), the module padded to 8.
Reading an nncase-written file and writing it back gives the same bytes (tested), which is what makes the
files k210tool generates itself trustworthy to the runtimes.

:func:`k210_text` serialises k210 ops (``kpu_upload``/``kpu_download``/``copy`` and :class:`KpuConv`) as
``modules/k210/include/nncase/runtime/k210/runtime_types.h`` declares them.
"""

from __future__ import annotations

from k210tool.compile.kmodel.binary import Writer
from k210tool.compile.kmodel.errors import KmodelError
from k210tool.compile.kmodel.model import KpuConv, MemoryRange, Module, Op, V5Model

MAGIC = b"LDMK"
MODULE_ALIGNMENT = {"stackvm": 8, "k210": 256}
_K210_OPCODES = {"kpu_upload": 0, "kpu_download": 1, "copy": 3}
SECTION_MERGED_INTO_RDATA = 1


def write_v5_model(model: V5Model) -> bytes:
    w = Writer()
    header_at = w.pos
    w.raw(bytes(32))
    alignment = 8
    for mod in model.modules:
        align = MODULE_ALIGNMENT.get(mod.type, 8)
        alignment = max(alignment, align)
        _write_module(w, mod, align)
    w.patch(header_at, "4s7I", MAGIC, 5, 32, model.flags, alignment, len(model.modules), model.entry_module,
            model.entry_function)
    return bytes(w.buf)


def _write_module(w: Writer, mod: Module, alignment: int) -> None:
    start = w.pos
    w.raw(bytes(48))
    for location, size in mod.mempools:
        w.pack("B3xI", location, size)
    for module, size in mod.shared_mempools:
        w.pack("2I", module, size)
    for fn in mod.functions:
        fstart = w.pos
        w.raw(bytes(32))
        for io in (fn.inputs, fn.outputs):
            for rng, _shape in io:
                _range(w, rng)
            for _rng, shape in io:
                w.pack(f"I{len(shape)}I", len(shape), *shape)
        w.align(8)
        w.patch(fstart, "8I", 32, w.pos - fstart, fn.input_pool_size, fn.output_pool_size, len(fn.inputs),
                len(fn.outputs), fn.entrypoint, len(fn.text))
    for sec in mod.sections:
        sec_at = w.pos
        w.raw(bytes(32))
        body_start = sec.body_start
        if not sec.flags & SECTION_MERGED_INTO_RDATA:
            body_start = w.align(alignment)
            w.raw(sec.body)
        name = sec.name.encode("ascii")
        if len(name) > 15:
            raise KmodelError(f"section name {sec.name!r} is longer than 15 bytes")
        w.patch(sec_at, "16s4I", name, sec.flags, body_start, len(sec.body), 0)
    w.align(8)
    mtype = mod.type.encode("ascii")
    w.patch(start, "16s8I", mtype, mod.version, 48, w.pos - start, len(mod.mempools), len(mod.shared_mempools),
            len(mod.sections), len(mod.functions), 0)


def _range(w: Writer, rng: MemoryRange) -> None:
    w.pack("BBHII", rng.location, rng.datatype, rng.shared_module, rng.start, rng.size)


def k210_text(ops: list[KpuConv | Op], conv_ranges: dict[int, tuple[MemoryRange, MemoryRange, MemoryRange]]) -> bytes:
    """The k210 module ``.text`` of ``ops``; ``conv_ranges[id(conv)]`` gives each convolution's weights,
    batch-norm and activation ranges in ``.rdata`` (the caller lays ``.rdata`` out)."""
    w = Writer()
    for op in ops:
        if isinstance(op, KpuConv):
            weights, bn, act = conv_ranges[id(op)]
            w.pack("B3x", 2)
            for rng in (weights, bn, act, op.main_mem_output or MemoryRange(0, 0, 0, 0)):
                _range(w, rng)
            w.pack("I", op.batches)
            w.pack(f"{len(op.layer.words)}Q", *op.layer.words)
            continue
        code = _K210_OPCODES.get(op.name)
        if code is None:
            raise KmodelError(f"k210 op {op.name} cannot be written")
        a = op.args
        w.pack("B3x", code)
        _range(w, a["input"])
        _range(w, a["output"])
        w.pack("4I", *a["in_shape"])
        if op.name == "copy":
            w.pack("4I", *a["in_strides"])
            w.pack("4I", *a["out_strides"])
    return bytes(w.buf)
