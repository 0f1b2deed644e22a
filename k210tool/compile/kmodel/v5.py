"""kmodel v5 (nncase 1.x): the module container, the k210 module's ops and the stackvm bytecode.

Layout (nncase v1.9.0 ``include/nncase/runtime/model.h``, ``src/codegen/model_builder.cpp`` and
``src/codegen/module_builder.cpp``): a model header {'KMDL', 5, header_size, flags, alignment, modules,
entry_module, entry_function}, then each module: a header {type[16], version, header_size, size, mempools,
shared_mempools, sections, functions, reserved0}, its mempool descriptors, its functions (header, 12-byte
memory ranges and shapes of inputs/outputs) and its sections (32-byte header, body after ``body_start``
padding bytes, or merged into ``.rdata``). k210 ops are the structs of
``modules/k210/include/nncase/runtime/k210/runtime_types.h``.
"""

from __future__ import annotations

from k210tool.compile.kmodel.binary import Reader
from k210tool.compile.kmodel.errors import KmodelError
from k210tool.compile.kmodel.kpu import ACT_TABLE_BYTES, LAYER_WORDS, Activation, BatchNorm, read_layer
from k210tool.compile.kmodel.model import (
    V5_DATATYPES,
    V5_RDATA,
    Function,
    Kmodel,
    KpuConv,
    Layer,
    MemoryRange,
    Module,
    Op,
    Section,
    TensorDesc,
    V5Model,
)
from k210tool.compile.kmodel.stackvm import decode, lift

MAGIC = b"LDMK"
K210_OPS = {0: "kpu_upload", 1: "kpu_download", 2: "kpu_conv2d", 3: "copy"}
SECTION_MERGED_INTO_RDATA = 1
_MAX_RANK = 16


def read_v5(data: bytes) -> Kmodel:
    r = Reader(data, what="kmodel v5")
    magic, version, header_size, flags, alignment, n_modules, entry_module, entry_function = r.unpack(
        "4s7I", "model header")
    if magic != MAGIC or version != 5:
        raise KmodelError(f"not a kmodel v5 file (magic {magic!r}, version {version})")
    r.seek(header_size, "first module")
    modules = []
    for i in range(n_modules):
        if r.remaining() < 48:
            raise KmodelError(f"kmodel v5: module {i} of {n_modules} is missing (file truncated)")
        modules.append(_read_module(r, i))
    if not (entry_module < len(modules) and entry_function < len(modules[entry_module].functions)):
        raise KmodelError(f"kmodel v5: entry point module {entry_module} function {entry_function} does not exist")
    model = V5Model(flags, alignment, entry_module, entry_function, modules)
    for mod in modules:
        for fn in mod.functions:
            _decode_function(mod, fn)
    return _common(model, len(data))


def _read_module(r: Reader, index: int) -> Module:
    start = r.pos
    raw_type, version, header_size, size, n_pools, n_shared, n_sections, n_functions, _res = r.unpack(
        "16s8I", f"module {index} header")
    mtype = raw_type.split(b"\0", 1)[0].decode("ascii", "replace")
    if size < header_size or start + size > r.end:
        raise KmodelError(f"kmodel v5: module {index} ({mtype}) size {size} overruns the file")
    m = Reader(r.data, start, start + size, f"kmodel v5 module {index} ({mtype})")
    m.seek(start + header_size, "module body")
    pools = [(m.unpack("B3xI", "mempool")) for _ in range(_bounded(m, n_pools, 8, "mempools"))]
    shared = [m.unpack("2I", "shared mempool") for _ in range(_bounded(m, n_shared, 8, "shared mempools"))]
    raw_functions = []
    for f in range(_bounded(m, n_functions, 32, "functions")):
        fsize = int.from_bytes(bytes(m.data[m.pos + 4 : m.pos + 8]), "little") if m.remaining() >= 8 else 0
        raw_functions.append(m.sub(fsize, f"function {f}"))
    sections = _read_sections(m, n_sections)
    text = next((s.body for s in sections if s.name == ".text"), b"")
    functions = [_read_function(fr, f, text) for f, fr in enumerate(raw_functions)]
    r.pos = start + size
    return Module(mtype, version, [(int(a), int(b)) for a, b in pools], [(int(a), int(b)) for a, b in shared],
                  sections, functions)


def _bounded(r: Reader, n: int, item: int, what: str) -> int:
    if n * item > r.remaining():
        raise KmodelError(f"{r.what}: {n} {what} do not fit in the {r.remaining()} bytes left")
    return n


def _read_sections(m: Reader, n: int) -> list[Section]:
    headers = []
    for i in range(_bounded(m, n, 32, "sections")):
        raw_name, flags, body_start, body_size, _res = m.unpack("16s4I", f"section {i} header")
        name = raw_name.split(b"\0", 1)[0].decode("ascii", "replace")
        body = b""
        if not flags & SECTION_MERGED_INTO_RDATA:
            m.skip(body_start, f"section {name} padding")
            body = m.bytes(body_size, f"section {name}")
        headers.append(Section(name, flags, body_start, body_size, body))
    rdata = next((s.body for s in headers if s.name == ".rdata" and not s.flags & SECTION_MERGED_INTO_RDATA), b"")
    for s in headers:
        if s.flags & SECTION_MERGED_INTO_RDATA:
            if s.body_start + s.body_size > len(rdata):
                raise KmodelError(f"{m.what}: section {s.name} merged into .rdata lies outside it")
            s.body = rdata[s.body_start : s.body_start + s.body_size]
    return headers


def _read_function(r: Reader, index: int, text: bytes) -> Function:
    header_size, size, in_pool, out_pool, n_in, n_out, entry, text_size = r.unpack("8I", "function header")
    r.seek(r.start + header_size, "function body")
    inputs = _read_io(r, n_in, "input")
    outputs = _read_io(r, n_out, "output")
    if entry + text_size > len(text):
        raise KmodelError(f"{r.what}: code {entry}..{entry + text_size} lies outside .text ({len(text)} bytes)")
    return Function(index, in_pool, out_pool, inputs, outputs, entry, text[entry : entry + text_size])


def _read_io(r: Reader, n: int, what: str) -> list[tuple[MemoryRange, tuple[int, ...]]]:
    ranges = [_range(r, f"{what} {i}") for i in range(_bounded(r, n, 12, what + "s"))]
    shapes = []
    for i in range(n):
        rank = r.u32(f"{what} {i} rank")
        if rank > _MAX_RANK:
            raise KmodelError(f"{r.what}: {what} {i} has rank {rank}")
        shapes.append(tuple(int(x) for x in r.unpack(f"{rank}I", f"{what} {i} shape")))
    return list(zip(ranges, shapes, strict=True))


def _range(r: Reader, what: str) -> MemoryRange:
    loc, dt, shared, start, size = r.unpack("BBHII", what)
    return MemoryRange(loc, dt, start, size, shared)


# ------------------------------------------------------------------------------------------ code
def _decode_function(mod: Module, fn: Function) -> None:
    where = f"{mod.type} function {fn.index}"
    try:
        if mod.type == "k210":
            fn.ops = read_k210_ops(fn.text, mod.section(".rdata"), where)
        elif mod.type == "stackvm":
            fn.instructions = decode(fn.text, where)
            fn.ops = lift(fn.instructions, where)
        else:
            fn.error = f"module type {mod.type!r} is not known"
    except KmodelError as exc:
        fn.ops, fn.error = [], str(exc)


def read_k210_ops(text: bytes, rdata: bytes, where: str) -> list[KpuConv | Op]:
    r = Reader(text, what=where)
    ops: list[KpuConv | Op] = []
    while r.remaining():
        opcode = r.data[r.pos]
        if opcode == 2:
            ops.append(_read_conv(r, rdata))
        elif opcode in (0, 1):
            r.skip(4, "opcode")
            a, b = _range(r, "input"), _range(r, "output")
            ops.append(Op(K210_OPS[opcode], {"input": a, "output": b, "in_shape": r.unpack("4I", "in_shape")}))
        elif opcode == 3:
            r.skip(4, "opcode")
            a, b = _range(r, "input"), _range(r, "output")
            ops.append(Op("copy", {"input": a, "output": b, "in_shape": r.unpack("4I", "in_shape"),
                                   "in_strides": r.unpack("4I", "in_strides"),
                                   "out_strides": r.unpack("4I", "out_strides")}))
        else:
            raise KmodelError(f"{where}: unknown k210 opcode {opcode} at .text+{r.pos}",
                              "the k210 module was not written by nncase 1.x")
    return ops


def _read_conv(r: Reader, rdata: bytes) -> KpuConv:
    r.skip(4, "opcode")
    weights, bn, act, out = (_range(r, n) for n in ("weights", "batch_norm", "activation", "main_mem_output"))
    batches = r.u32("batches")
    layer = read_layer(r.unpack(f"{LAYER_WORDS}Q", "layer argument"))
    rd = Reader(rdata, what=f"{r.what}: .rdata")
    for rng, need, what in ((weights, layer.weights_count(), "weights"), (bn, 8 * layer.out_channels, "batch norm"),
                            (act, ACT_TABLE_BYTES, "activation")):
        if rng.location != V5_RDATA or rng.size < need:
            raise KmodelError(f"{r.what}: kpu_conv2d {what} range {rng.start}+{rng.size} is not {need} bytes of .rdata")
    rd.seek(weights.start, "weights")
    w = rd.array("u1", layer.weights_count(), "weights")
    rd.seek(bn.start, "batch norm")
    b = BatchNorm(rd.array("<u8", layer.out_channels, "batch norm"))
    rd.seek(act.start, "activation")
    a = Activation.from_bytes(rd.bytes(ACT_TABLE_BYTES, "activation"))
    return KpuConv(layer, b, a, w, batches, out)


# ---------------------------------------------------------------------------------------- common
def _common(model: V5Model, size: int) -> Kmodel:
    entry = model.entry()
    inputs = [TensorDesc(f"input{i}", shape, V5_DATATYPES.get(rng.datatype, "?"), rng)
              for i, (rng, shape) in enumerate(entry.inputs)]
    outputs = [TensorDesc(f"output{i}", shape, V5_DATATYPES.get(rng.datatype, "?"), rng)
               for i, (rng, shape) in enumerate(entry.outputs)]
    memory: dict[str, int] = {"input": entry.input_pool_size, "output": entry.output_pool_size}
    for mod in model.modules:
        for loc, pool in mod.mempools:
            key = {2: "rdata", 3: "data", 64: "kpu"}.get(loc, f"pool{loc}")
            memory[f"{mod.type}.{key}"] = pool
    return Kmodel(5, inputs, outputs, memory, flatten_layers(model), size, v5=model)


def flatten_layers(model: V5Model) -> list[Layer]:
    """The entry function's ops in execution order, each call replaced by the callee's ops."""
    from k210tool.compile.kmodel.describe import describe_op

    layers: list[Layer] = []

    def visit(mod_index: int, fn_index: int, depth: int) -> None:
        mod = model.modules[mod_index]
        fn = mod.functions[fn_index]
        for j, op in enumerate(fn.ops):
            if isinstance(op, Op) and op.name == "call" and depth < 4:
                m, f = op.args["module"], op.args["function"]
                if m < len(model.modules) and f < len(model.modules[m].functions):
                    visit(m, f, depth + 1)
                    continue
            kpu = op.layer if isinstance(op, KpuConv) else None
            name = "kpu_conv2d" if isinstance(op, KpuConv) else op.name
            placement = "KPU" if mod.type == "k210" and name != "copy" else "CPU"
            layers.append(Layer(len(layers), name, placement, f"{mod.type} function {fn_index} op {j}",
                                describe_op(op, 5), kpu))

    visit(model.entry_module, model.entry_function, 0)
    if model.entry().error:
        # The entry code did not decode, so the call order is unknown: list every function in file order.
        for m, mod in enumerate(model.modules):
            for f in range(len(mod.functions)):
                if (m, f) != (model.entry_module, model.entry_function):
                    visit(m, f, 4)
    return layers
