"""One typed structure for kmodel v3, v4 and v5.

Every version fills the common part of :class:`Kmodel` (version, inputs, outputs, memory figures and
a flat list of :class:`Layer` in execution order, KPU layers with their decoded hardware words), plus
the version's own container (:class:`V3Model`, :class:`V4Model` or :class:`V5Model`) with everything
needed to run or re-write the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from k210tool.compile.kmodel.kpu import Activation, BatchNorm, KpuLayer

# v5 datatypes (nncase v1.9.0 include/nncase/runtime/datatypes.def) and v4 datatypes (SDK v0 datatypes.h).
V5_DATATYPES = {0: "int8", 1: "int16", 2: "int32", 3: "int64", 4: "uint8", 5: "uint16", 6: "uint32",
                7: "uint64", 8: "float16", 9: "float32", 10: "float64", 11: "bfloat16"}
V5_DT_BYTES = {0: 1, 1: 2, 2: 4, 3: 8, 4: 1, 5: 2, 6: 4, 7: 8, 8: 2, 9: 4, 10: 8, 11: 2}
V4_DATATYPES = {0: "float32", 1: "uint8"}
# Memory locations: v5 datatypes.h mem_* (+ mem_kpu = mem_private_base in the k210 module); v4 memory_type_t.
V5_LOCATIONS = {0: "input", 1: "output", 2: "rdata", 3: "data", 4: "shared_data", 64: "kpu"}
V4_LOCATIONS = {0: "const", 1: "main", 2: "kpu"}
V4_CONST, V4_MAIN, V4_KPU = 0, 1, 2
V5_INPUT, V5_OUTPUT, V5_RDATA, V5_DATA, V5_SHARED, V5_KPU = 0, 1, 2, 3, 4, 64


@dataclass(frozen=True)
class MemoryRange:
    """A buffer: where (memory location/type), element type, start and size in bytes."""

    location: int
    datatype: int
    start: int
    size: int
    shared_module: int = 0  # v5 only

    @property
    def end(self) -> int:
        return self.start + self.size

    def describe(self, version: int) -> dict[str, Any]:
        locs, dts = (V5_LOCATIONS, V5_DATATYPES) if version >= 5 else (V4_LOCATIONS, V4_DATATYPES)
        return {"memory": locs.get(self.location, str(self.location)),
                "dtype": dts.get(self.datatype, str(self.datatype)), "start": self.start, "size": self.size}


@dataclass
class TensorDesc:
    """A model input or output."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    memory: MemoryRange | None = None


@dataclass
class KpuConv:
    """A KPU convolution as all versions store it: layer words, BN table, activation table, weights."""

    layer: KpuLayer
    batch_norm: BatchNorm
    activation: Activation
    weights: np.ndarray  # uint8, OIHW (O, 1, H, W for depthwise), flattened
    batches: int = 1
    main_mem_output: MemoryRange | None = None
    reserved0: int = 0  # v4 only: kept so a read file is written back byte for byte


@dataclass
class Op:
    """Any op that is not a KPU convolution: a name and typed arguments."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class Layer:
    """One row of the flat, execution-ordered view every version provides (what ``inspect`` lists)."""

    index: int
    op: str
    placement: str  # "KPU" (runs on the KPU or moves data to/from it) or "CPU"
    where: str  # position in the file: "layer 3", "node 7", "k210 function 2 op 1", "stackvm .text+0x40"
    args: dict[str, Any] = field(default_factory=dict)
    kpu: KpuLayer | None = None


# ----------------------------------------------------------------------------------------------- v3
@dataclass
class V3Layer:
    type: int
    name: str
    body_size: int
    body: bytes
    args: dict[str, Any] = field(default_factory=dict)
    conv: KpuConv | None = None


@dataclass
class V3Model:
    flags: int
    arch: int
    max_start_address: int
    main_mem_usage: int
    outputs: list[tuple[int, int]]
    layers: list[V3Layer]


# ----------------------------------------------------------------------------------------------- v4
@dataclass
class V4Node:
    opcode: int
    name: str
    op: Op | KpuConv
    body_size: int = 0


@dataclass
class V4Model:
    flags: int
    target: int
    main_mem: int
    inputs: list[MemoryRange]
    input_shapes: list[tuple[int, int, int, int]]
    outputs: list[MemoryRange]
    constants: bytes
    nodes: list[V4Node]
    reserved0: int = 0
    # where KPU batch-norm tables and weights start in a convolution's body: ncc 0.2 aligns them to 256 bytes,
    # nncase 1.9 (v5) to 8 for the same KPU; the activation table is always 256-aligned
    table_alignment: int = 256


# ----------------------------------------------------------------------------------------------- v5
@dataclass
class Section:
    name: str
    flags: int
    body_start: int
    body_size: int
    body: bytes


@dataclass
class Function:
    """A v5 function: its I/O descriptors, its code and (once decoded) its ops."""

    index: int
    input_pool_size: int
    output_pool_size: int
    inputs: list[tuple[MemoryRange, tuple[int, ...]]]
    outputs: list[tuple[MemoryRange, tuple[int, ...]]]
    entrypoint: int
    text: bytes
    ops: list[Any] = field(default_factory=list)  # k210: KpuConv / Op; stackvm: lifted CPU ops (Op)
    instructions: list[Any] = field(default_factory=list)  # stackvm only: decoded bytecode
    error: str | None = None  # why the code could not be decoded (ops/instructions then empty)


@dataclass
class Module:
    type: str
    version: int
    mempools: list[tuple[int, int]]
    shared_mempools: list[tuple[int, int]]
    sections: list[Section]
    functions: list[Function]

    def section(self, name: str) -> bytes:
        for s in self.sections:
            if s.name == name:
                return s.body
        return b""

    def mempool(self, location: int) -> int:
        return sum(size for loc, size in self.mempools if loc == location)


@dataclass
class V5Model:
    flags: int
    alignment: int
    entry_module: int
    entry_function: int
    modules: list[Module]

    def entry(self) -> Function:
        return self.modules[self.entry_module].functions[self.entry_function]


# ------------------------------------------------------------------------------------------ common
@dataclass
class Kmodel:
    """A kmodel of any version: the common view plus the version's own container."""

    version: int
    inputs: list[TensorDesc]
    outputs: list[TensorDesc]
    memory: dict[str, int]
    layers: list[Layer]
    size: int
    v3: V3Model | None = None
    v4: V4Model | None = None
    v5: V5Model | None = None
    report: Any = None  # for a v4 made by the transcoder: what it did (TranscodeReport)

    @property
    def kpu_layers(self) -> int:
        return sum(1 for layer in self.layers if layer.kpu is not None)

    def errors(self) -> list[str]:
        """Decoding problems kept on the model (v5 code that does not decode with nncase 1.9 tables)."""
        if self.v5 is None:
            return []
        return [f"module {m.type} function {f.index}: {f.error}" for m in self.v5.modules
                for f in m.functions if f.error]
