"""KPU RAM: split the layers whose maps do not fit the KPU's 2 MiB, computing the same function.

The KPU reads a layer's input from its own 2 MiB of RAM and writes the output there, so both maps must be
there at once, next to every map still needed later (a residual's shortcut, the operand an add reserves
beside its partner, see :mod:`k210tool.compile.kmodel.gen.alloc`). A wide bottleneck - a dense convolution
that expands the channels, depthwise convolutions, a dense convolution that projects them back - computes the
same function as G narrower bottlenecks on channel groups whose projections are summed: each group's expand
produces its channels only, its depthwise convolutions stay in the group, its projection reads them and
produces every output channel (a partial sum: the projection's bias in the first group only), and KPU adds
(exact integer weights, :class:`~k210tool.compile.kmodel.gen.kpu.KpuBuilder`) add them up, the last one with
the projection's activation. One group's maps are alive at a time. A depthwise convolution splits with its
bottleneck, and two dense convolutions in a row are a bottleneck without depthwise ones.

Whether a plan fits is decided by running the generator's first-fit allocation on estimated maps: each map
in the KPU's row layout (:func:`~k210tool.compile.kmodel.layout.kpu_bytes`) with the largest storage the
generator may choose for it (a PReLU feeding dense layers is stored as two channels per channel). A layer that
does not fit and cannot be split is refused with :class:`~k210tool.compile.netplan.KpuRamError` when even its
most compact input and output exceed the KPU's RAM (nncase fails on it too), else left to the generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from k210tool.compile.kmodel.gen.alloc import KPU_RAM, Block, OutOfKpuRam, allocate
from k210tool.compile.kmodel.layout import kpu_bytes, row_layout
from k210tool.compile.netplan import KPU_MAX_CHANNELS, Act, Add, Conv, KpuRamError, NetPlan, Op, _kpu_clip

MAX_GROUPS = 64
MIN_ZONE_GROUP = 5  # the fewest PReLU channels an activation table holds (16 segments, at most 3 per zone)


@dataclass(frozen=True)
class Region:
    """A bottleneck: ``head`` (dense) -> ``mids`` (depthwise, in a chain) -> ``tail`` (dense)."""

    head: Conv
    mids: tuple[Conv, ...]
    tail: Conv

    @property
    def ops(self) -> tuple[Conv, ...]:
        return (self.head, *self.mids, self.tail)

    def describe(self) -> str:
        return " -> ".join(op.name for op in self.ops)


def split_for_kpu_ram(plan: NetPlan, capacity: int = KPU_RAM) -> NetPlan:
    """``plan`` with the bottlenecks whose maps do not fit KPU RAM split in channel groups (a new plan; the
    given one is not changed). Records each split in ``splits``. Raises :class:`KpuRamError` for a layer that
    cannot fit."""
    split: set[str] = set()  # ops made by a split: never split again
    for _ in range(len(plan.ops)):
        failed = _first_failure(plan, capacity)
        if failed is None:
            return plan
        region = _region_for(plan, failed, split)
        better = _split_to_fit(plan, region, capacity) if region is not None else None
        if better is None:
            _refuse_if_hopeless(plan, failed, capacity)
            return plan  # only the estimate fails: the generator's allocation decides
        plan, made = better
        split |= made
    return plan


# ------------------------------------------------------------------------------------- estimate
def stored_channels(plan: NetPlan, tensor: str) -> int:
    """The most channels the generator may store ``tensor`` as (see :class:`KpuBuilder`'s output plans)."""
    op = plan.producer(tensor)
    if op is None:
        return plan.input_shape[0]
    base = stored_channels(plan, op.src) if isinstance(op, Conv) and op.depthwise else plan.shapes[tensor][0]
    slopes = op.act.slopes
    if op.act.kind == "linear" or np.all(slopes == 1.0) or np.all(slopes == 0.0):
        return base
    align = row_layout(plan.shapes[tensor][2]).groups
    zones = base + math.ceil(base / MIN_ZONE_GROUP) * (align - 1)  # groups padded to the row blocks
    users = plan.consumers(tensor)
    split = 2 * base + (-base % align)
    if users and all(isinstance(u, Conv) and not u.depthwise for u in users) and split <= KPU_MAX_CHANNELS:
        return max(split, zones)
    return zones


def map_bytes(plan: NetPlan, tensor: str, compact: bool = False) -> int:
    """Bytes ``tensor`` takes in KPU RAM: stored as the generator may (or with one channel per channel)."""
    c, h, w = plan.input_shape if tensor == plan.input else plan.shapes[tensor]
    return kpu_bytes(c if compact else stored_channels(plan, tensor), h, w)


def _blocks(plan: NetPlan) -> list[Block]:
    """The maps of the KPU program with their lifetimes, as :class:`KpuBuilder` and the allocator see them."""
    born, dies = {plan.input: 0}, {plan.input: 0}
    order = [op.dst for op in plan.ops]
    adjacent: list[tuple[str, str]] = []
    for step, op in enumerate((op for op in plan.ops if op.kpu), start=1):
        if isinstance(op, Add):
            late, early = (op.a, op.b) if _index(order, op.a) > _index(order, op.b) else (op.b, op.a)
            adjacent.append((late, early))
            read = late
        else:
            read = op.src
        dies[read] = max(dies[read], step)
        born[op.dst] = dies[op.dst] = step
    last = max(born.values()) + 1
    for t in born:
        if t == plan.output or any(not u.kpu for u in plan.consumers(t)):
            dies[t] = last  # downloaded at the end
    later = dict(adjacent)
    early_of = {e: late for late, e in adjacent}
    blocks = []
    for t in born:
        if t in later:
            continue  # reserved right before its earlier operand
        size, b, d = map_bytes(plan, t), born[t], dies[t]
        if t in early_of:
            late = early_of[t]
            size, b, d = size + map_bytes(plan, late), min(b, born[late]), max(d, dies[late])
        blocks.append(Block(t, size, b, d))
    return blocks


def _index(order: list[str], tensor: str) -> int:
    return order.index(tensor) if tensor in order else -1


def _first_failure(plan: NetPlan, capacity: int) -> str | None:
    """The first map that finds no room in KPU RAM (None: everything fits)."""
    try:
        allocate(_blocks(plan), capacity)
    except OutOfKpuRam as exc:
        return exc.block
    return None


def _peak(plan: NetPlan, capacity: int) -> int:
    return allocate(_blocks(plan), capacity)


# --------------------------------------------------------------------------------------- regions
def _region_for(plan: NetPlan, tensor: str, split: set[str]) -> Region | None:
    """The bottleneck to split so that ``tensor`` fits: the one its producer belongs to."""
    op = plan.producer(tensor)
    if not isinstance(op, Conv) or not op.kpu or op.name in split:
        return None
    if op.depthwise:
        return _around(plan, op)
    as_head, as_tail = _from_head(plan, op), _from_tail(plan, op)
    if map_bytes(plan, op.src) > map_bytes(plan, op.dst):
        as_head, as_tail = as_tail, as_head
    return as_head or as_tail


def _single_user(plan: NetPlan, tensor: str) -> Op | None:
    users = plan.consumers(tensor)
    return users[0] if len(users) == 1 and tensor != plan.output and users[0].kpu else None


def _dense(op: Op | None) -> bool:
    return isinstance(op, Conv) and op.kpu and not op.depthwise


def _from_head(plan: NetPlan, head: Conv) -> Region | None:
    mids: list[Conv] = []
    user = _single_user(plan, head.dst)
    while isinstance(user, Conv) and user.depthwise:
        mids.append(user)
        user = _single_user(plan, user.dst)
    return _region(plan, head, mids, user)


def _from_tail(plan: NetPlan, tail: Conv) -> Region | None:
    mids: list[Conv] = []
    prev = plan.producer(tail.src)
    while isinstance(prev, Conv) and prev.kpu and prev.depthwise and _single_user(plan, prev.dst) is not None:
        mids.insert(0, prev)
        prev = plan.producer(prev.src)
    if not _dense(prev) or _single_user(plan, prev.dst) is None:  # type: ignore[union-attr]
        return None
    return _region(plan, prev, mids, tail)  # type: ignore[arg-type]


def _around(plan: NetPlan, op: Conv) -> Region | None:
    prev = plan.producer(op.src)
    while isinstance(prev, Conv) and prev.kpu and prev.depthwise and _single_user(plan, prev.dst) is not None:
        prev = plan.producer(prev.src)
    if not _dense(prev) or _single_user(plan, prev.dst) is None:  # type: ignore[union-attr]
        return None
    return _from_head(plan, prev)  # type: ignore[arg-type]


def _region(plan: NetPlan, head: Conv, mids: list[Conv], tail: Op | None) -> Region | None:
    if not _dense(tail) or head.out_channels < 2:
        return None
    assert isinstance(tail, Conv)
    width = plan.shapes[tail.dst][2]
    if tail.out_channels % row_layout(width).groups or 2 * tail.out_channels > KPU_MAX_CHANNELS \
            or not _kpu_clip(tail.act):
        return None  # the KPU adds read both operands whole, in row blocks, and apply ReLU6's clip only
    return Region(head, tuple(mids), tail)


# ------------------------------------------------------------------------------------------ split
def _split_to_fit(plan: NetPlan, region: Region, capacity: int) -> tuple[NetPlan, set[str]] | None:
    """The fewest channel groups with which the region's maps fit (or the first map that fails is one made
    after the region: its problem lies elsewhere)."""
    channels = region.head.out_channels
    for groups in range(2, min(channels, MAX_GROUPS) + 1):
        trial, made = _split(plan, region, groups)
        failed = _first_failure(trial, capacity)
        last = max(i for i, op in enumerate(trial.ops) if op.name in made)
        if failed is None or _index([op.dst for op in trial.ops], failed) > last:
            before = max(layer_need(plan, op) for op in region.ops)
            trial.splits.append(f"{region.describe()}: {len(_bounds(channels, groups))} channel groups of at most "
                                f"{_bounds(channels, groups)[0][1]} (one layer's maps needed {before / 2**20:.2f} "
                                f"MiB of the KPU's 2 MiB; after the split {_peak_or_none(trial, capacity)})")
            return trial, made
    return None


def layer_need(plan: NetPlan, op: Op, compact: bool = False) -> int:
    """KPU RAM a layer needs at once: its input and output maps (see :func:`map_bytes`)."""
    inputs = (op.a, op.b) if isinstance(op, Add) else (op.src,)
    return sum(map_bytes(plan, t, compact) for t in (*inputs, op.dst))


def _peak_or_none(plan: NetPlan, capacity: int) -> str:
    try:
        return f"{_peak(plan, capacity) / 2**20:.2f} MiB of KPU RAM in use at most"
    except OutOfKpuRam:
        return "the rest of the model still to fit"


def _bounds(channels: int, groups: int) -> list[tuple[int, int]]:
    """Consecutive channel groups, as even as possible, in multiples of 4 channels when there are enough."""
    step = 4 if channels >= 4 * groups else 1
    size = -(-channels // (groups * step)) * step
    return [(a, min(a + size, channels)) for a in range(0, channels, size)]


def _split(plan: NetPlan, region: Region, groups: int) -> tuple[NetPlan, set[str]]:
    head, mids, tail = region.head, region.mids, region.tail
    new = replace(plan, ops=[], shapes=dict(plan.shapes), slices=dict(plan.slices), splits=list(plan.splits))
    made: list[Op] = []
    total: str | None = None
    parts = _bounds(head.out_channels, groups)
    for g, (a, b) in enumerate(parts):
        tag = f"[{a}:{b}]"
        src = head.src
        for op in (head, *mids):
            part = Conv(op.name + tag, src, op.dst + tag, op.weights[a:b], op.bias[a:b], op.depthwise, op.stride,
                        op.pad, Act(op.act.kind, op.act.slopes[a:b], op.act.clip), op.pre + tag, kpu=True)
            for t, whole in ((part.pre, op.pre), (part.dst, op.dst)):
                new.slices[t] = (whole, a, b)
                new.shapes[t] = (b - a, *plan.shapes[whole][1:])
            made.append(part)
            src = part.dst
        name = f"{tail.name}{tag}"
        bias = tail.bias if g == 0 else np.zeros_like(tail.bias)
        partial = Conv(name, src, name, tail.weights[:, a:b], bias, False, tail.stride, tail.pad,
                       Act.linear(tail.out_channels), name, kpu=True)
        new.shapes[name] = plan.shapes[tail.dst]
        made.append(partial)
        if total is None:
            total = name
            continue
        last = g == len(parts) - 1
        dst = tail.dst if last else f"{tail.name}+sum{g}"
        add = Add(f"{tail.name}+sum{g}", total, name, dst, tail.act if last else Act.linear(tail.out_channels),
                  tail.pre if last else dst, kpu=True)
        new.shapes.setdefault(dst, plan.shapes[tail.dst])
        made.append(add)
        total = dst
    at = next(i for i, op in enumerate(plan.ops) if op is tail)
    gone = {id(op) for op in region.ops}
    new.ops = [op for op in plan.ops[:at] if id(op) not in gone] + made + plan.ops[at + 1:]
    return new, {op.name for op in made}


# ----------------------------------------------------------------------------------------- refuse
def _refuse_if_hopeless(plan: NetPlan, tensor: str, capacity: int) -> None:
    """Raise :class:`KpuRamError` when the layer writing ``tensor`` needs more than the KPU's RAM for its input
    and output even stored one channel per channel (no storage the generator picks can help)."""
    op = plan.producer(tensor)
    if op is None:
        need = map_bytes(plan, tensor, compact=True)
        if need > capacity:
            c, h, w = plan.input_shape
            raise KpuRamError(f"the {h}x{w}x{c} input needs {need / 2**20:.2f} MiB of the KPU's 2 MiB of RAM",
                              "use a smaller input")
        return
    inputs = (op.a, op.b) if isinstance(op, Add) else (op.src,)
    sizes = [map_bytes(plan, t, compact=True) for t in inputs] + [map_bytes(plan, op.dst, compact=True)]
    if sum(sizes) <= capacity:
        return
    c, h, w = plan.shapes[op.dst]
    detail = " + ".join(f"{s:,}" for s in sizes)
    if op.dst == plan.output or any(not u.kpu for u in plan.consumers(op.dst)):
        why = "its output leaves the KPU in one piece"
    else:
        why = "only an expand -> depthwise -> project chain whose projection runs on the KPU can"
    raise KpuRamError(
        f"layer {op.name!r} does not fit the KPU's 2 MiB of RAM: its input and output maps need "
        f"{sum(sizes) / 2**20:.2f} MiB at once ({detail} bytes, {c}x{h}x{w} out), and it cannot run in channel "
        f"groups ({why})",
        _fix(plan, op, sizes, capacity))


def _fix(plan: NetPlan, op: Op, sizes: list[int], capacity: int) -> str:
    c, h, w = plan.shapes[op.dst]
    fixed = sum(sizes[:-1]) if isinstance(op, Conv) and not op.depthwise else 0
    per = 2 if isinstance(op, Conv) and op.depthwise else (3 if isinstance(op, Add) else 1)
    most = 0
    while most < c and fixed + per * kpu_bytes(most + 1, h, w) <= capacity:
        most += 1
    if most == 0:
        return f"give the model a smaller input (at {h}x{w} one channel of {op.name!r} alone does not fit)"
    return f"give {op.name!r} at most {most} channels, or the model a smaller input"
