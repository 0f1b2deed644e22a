"""Run a kmodel v5 (nncase 1.9): the stackvm main function, with each call into the k210 module inlined.

Memory is modelled as nncase lays it out: the entry function's input and output pools, each module's
``.data`` pool, constant ``.rdata`` sections and the 2 MiB KPU RAM, every one a ``(N, size)`` byte array.
A call binds the k210 function's input/output descriptors to the caller's buffers (the k210 runtime finds
a buffer by the exact start of its descriptor, ``k210_runtime_function::memory_at``), resolved once when
the program is built, so running is a flat list of NumPy steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from k210tool.compile.kmodel.model import (
    V5_DATA,
    V5_INPUT,
    V5_KPU,
    V5_OUTPUT,
    V5_RDATA,
    Function,
    Kmodel,
    KpuConv,
    MemoryRange,
    Op,
)
from k210tool.sim.interp import kpu, kpuram
from k210tool.sim.interp.cpu5 import BUILDERS, Step, UnsupportedOp
from k210tool.sim.interp.memory import view

PoolKey = tuple[Any, ...]
Resolver = Callable[[MemoryRange], tuple[PoolKey, int]]


class Memory:
    """The pools of one run and typed views of buffers addressed by (pool, start)."""

    def __init__(self, pools: dict[PoolKey, np.ndarray], resolve: Resolver) -> None:
        self.pools = pools
        self.resolve = resolve

    def tensor(self, rng: MemoryRange, shape: Any, strides: Any, dtype: np.dtype) -> np.ndarray:
        key, start = self.resolve(rng)
        return view(self.pools[key], start, shape, strides, dtype)

    def raw(self, key: PoolKey) -> np.ndarray:
        return self.pools[key]


class V5Program:
    """A kmodel v5 compiled into NumPy steps; :meth:`run` takes the input pool bytes of N images."""

    def __init__(self, model: Kmodel) -> None:
        from k210tool.compile.kmodel.errors import KmodelError

        if model.v5 is None:
            raise KmodelError(f"V5Program needs a kmodel v5, got v{model.version}")
        if model.errors():
            raise KmodelError(model.errors()[0])
        self.model = model
        v5 = model.v5
        self.entry = v5.entry()
        self.const: dict[PoolKey, np.ndarray] = {}
        self.sizes: dict[PoolKey, int] = {("in",): self.entry.input_pool_size, ("out",): self.entry.output_pool_size}
        for m, mod in enumerate(v5.modules):
            rdata = np.frombuffer(mod.section(".rdata"), np.uint8).reshape(1, -1)
            self.const[(m, V5_RDATA)] = rdata
            self.sizes[(m, V5_DATA)] = mod.mempool(V5_DATA)
            if mod.type == "k210":
                self.sizes[(m, V5_KPU)] = mod.mempool(V5_KPU) or 2 * 1024 * 1024
        self.steps: list[tuple[str, Step, Resolver]] = []
        entry_binding = {V5_INPUT: ("in",), V5_OUTPUT: ("out",)}
        self._emit_function(v5.entry_module, self.entry, _pool_resolver(v5.entry_module, entry_binding), depth=0)

    # -------------------------------------------------------------------------------- building
    def _emit_function(self, m: int, fn: Function, resolve: Resolver, depth: int) -> None:
        from k210tool.sim.interp.fuse import runs

        module = self.model.v5.modules[m]
        j = 0
        for run in runs(list(fn.ops)):
            op = run[0]
            where = f"{module.type} function {fn.index} op {j}" + (f"..{j + len(run) - 1}" if len(run) > 1 else "")
            j += len(run)
            if isinstance(op, Op) and op.name == "call":
                self._emit_call(op, resolve, depth)
            elif module.type == "k210":
                self.steps.append((where, _k210_step(run, m), resolve))
            else:
                if op.name not in BUILDERS:
                    raise UnsupportedOp(f"{where}: the interpreter has no {op.name} (nncase tensor function)")
                self.steps.append((where, BUILDERS[op.name](op), resolve))

    def _emit_call(self, op: Op, caller: Resolver, depth: int) -> None:
        v5 = self.model.v5
        m, f = op.args["module"], op.args["function"]
        if depth > 4 or m >= len(v5.modules) or f >= len(v5.modules[m].functions):
            raise UnsupportedOp(f"call to module {m} function {f} cannot be resolved")
        callee = v5.modules[m].functions[f]
        bindings: dict[tuple[int, int], tuple[PoolKey, int]] = {}
        for kind, descs, actual in ((V5_INPUT, callee.inputs, op.args["inputs"]),
                                    (V5_OUTPUT, callee.outputs, op.args["outputs"])):
            if len(descs) != len(actual):
                raise UnsupportedOp(f"call to {v5.modules[m].type} function {f} passes {len(actual)} tensors "
                                    f"for {len(descs)} parameters")
            for (desc, _shape), arg in zip(descs, actual, strict=True):
                bindings[(kind, desc.start)] = caller(arg["memory"])
        local = _pool_resolver(m, {})

        def resolve(rng: MemoryRange) -> tuple[PoolKey, int]:
            if rng.location in (V5_INPUT, V5_OUTPUT):
                if (rng.location, rng.start) not in bindings:
                    raise UnsupportedOp(f"buffer at {rng.start} is not one of the called function's parameters")
                return bindings[(rng.location, rng.start)]
            return local(rng)

        self._emit_function(m, callee, resolve, depth + 1)

    # --------------------------------------------------------------------------------- running
    def new_pools(self, n: int) -> dict[PoolKey, np.ndarray]:
        pools = {key: np.zeros((n, size), np.uint8) for key, size in self.sizes.items()}
        pools.update(self.const)
        return pools

    def run_images(self, inputs: np.ndarray, pools: dict[PoolKey, np.ndarray] | None = None) -> list[np.ndarray]:
        """(N, input bytes) uint8 -> the entry function's outputs, each (N, elements) of its datatype."""
        from k210tool.sim.interp.memory import v5_dtype

        pools = self.run(inputs, pools)
        out = pools[("out",)]
        result = []
        for rng, shape in self.entry.outputs:
            count = int(np.prod(shape)) if shape else 1
            result.append(view(out, rng.start, (count,), None, v5_dtype(rng.datatype)).copy())
        return result

    def run(self, inputs: np.ndarray, pools: dict[PoolKey, np.ndarray] | None = None) -> dict[PoolKey, np.ndarray]:
        """``inputs`` is (N, input_pool_size) uint8; returns the pools (``("out",)`` holds the outputs)."""
        pools = pools if pools is not None else self.new_pools(len(inputs))
        pools[("in",)][...] = inputs
        for key in [k for k in pools if len(k) == 2 and k[1] == V5_KPU]:
            pools[("kpuram", key[0])] = kpuram.KpuRam(pools[key])  # a fresh lazy view per run
        for where, step, resolve in self.steps:
            try:
                step(Memory(pools, resolve))
            except (kpuram.KpuModelError, UnsupportedOp, ValueError, IndexError) as exc:
                raise UnsupportedOp(f"{where}: {exc}") from exc
        return pools


def _pool_resolver(m: int, fixed: dict[int, PoolKey]) -> Resolver:
    def resolve(rng: MemoryRange) -> tuple[PoolKey, int]:
        if rng.location in fixed:
            return fixed[rng.location], rng.start
        if rng.location in (V5_RDATA, V5_DATA, V5_KPU):
            return (m, rng.location), rng.start
        raise UnsupportedOp(f"memory location {rng.location} is not modelled")
    return resolve


def _k210_step(run: list[KpuConv | Op], m: int) -> Step:
    from k210tool.sim.interp.fuse import merge

    ram_key = ("kpuram", m)
    op = run[0]
    if isinstance(op, KpuConv):
        op, tables = merge(run)  # type: ignore[arg-type]
        runner = kpu.KpuLayerRunner(op, row_tables=tables)
        b = op.batches
        ic, ih, iw = op.layer.in_shape
        oc, oh, ow = op.layer.out_shape
        src, dst = op.layer.src_address, op.layer.dst_address
        main = op.main_mem_output if op.main_mem_output is not None and op.main_mem_output.size else None

        def conv(mem: Memory) -> None:
            ram = mem.raw(ram_key)
            y = runner(ram.load(src, (b, ic, ih, iw)))
            ram.store(dst, (b, oc, oh, ow), y)
            if main is not None:
                mem.tensor(main, (b, oc, oh, ow), None, np.dtype(np.uint8))[...] = kpuram.from_cm(y, ram.n)
        return conv
    a = op.args
    shape = tuple(int(d) for d in a["in_shape"])
    if op.name == "kpu_upload":
        def up(mem: Memory) -> None:
            _key, start = mem.resolve(a["output"])
            mem.raw(ram_key).store(start, shape, kpuram.to_cm(mem.tensor(a["input"], shape, None, np.dtype(np.uint8))))
        return up
    if op.name == "kpu_download":
        def down(mem: Memory) -> None:
            ram = mem.raw(ram_key)
            _key, start = mem.resolve(a["input"])
            mem.tensor(a["output"], shape, None, np.dtype(np.uint8))[...] = kpuram.from_cm(ram.load(start, shape), ram.n)
        return down
    if op.name == "copy":
        def copy(mem: Memory) -> None:
            from k210tool.sim.interp.memory import v5_dtype

            dt = v5_dtype(a["input"].datatype)
            for rng in (a["input"], a["output"]):
                key, start = mem.resolve(rng)
                if key[0] == m and rng.location == V5_KPU:
                    mem.raw(ram_key).flush_range(start, start + rng.size)
            mem.tensor(a["output"], shape, a["out_strides"], dt)[...] = mem.tensor(a["input"], shape, a["in_strides"], dt)
        return copy
    raise UnsupportedOp(f"k210 op {op.name}")
