"""Which output channels share a KPU layer (and its one activation table), in which order.

A per-channel PReLU needs a zone per channel (``act``); a table holds seven when they chain: each zone's
left arm must start from the value the previous zone's right arm ends at, or a guard segment is spent.
Channels whose orientation is free (their zero point is their own, or flipping costs little) are turned so
they chain. When the layer's output order is free (a dense convolution: the next layer's weights follow any
order) channels are picked greedily to chain; when it is fixed (a depthwise convolution keeps its input's
order) groups are consecutive runs. Groups start on the KPU row layout's channel blocks (4 channels share a
64-byte row when the map is at most 16 wide, 2 up to 32), padded with unused channels - unless the padding
would take the map past the 1024 channels a KPU layer reads, where consecutive runs (unpadded) are used.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from k210tool.compile.kmodel.gen.act import Zone, segments_needed

MAX_SEGMENTS = 16


@dataclass(frozen=True)
class Option:
    """One way to store a channel: its zone and orientation, with its scale and zero point."""

    zone: Zone
    orient: float
    scale: float
    zero: int


@dataclass
class Group:
    channels: list[int]  # original channels, in storage order (-1: padding)
    options: list[Option | None]  # the chosen option per stored channel (None for padding)

    @property
    def zones(self) -> list[Zone]:
        seen: list[Zone] = []
        for o in self.options:
            if o is not None and o.zone not in seen:
                seen.append(o.zone)
        return seen


def pack(options: list[list[Option]], align: int, free_order: bool, limit: int | None = None) -> list[Group]:
    """Groups of channels for KPU layers; ``options[c]`` lists channel c's acceptable options, best first.
    With ``limit``, the stored channels (padding included) stay within it: when the padded greedy groups
    would not, consecutive runs are used (no padding, fewer channels per table)."""
    if free_order:
        groups = _pad_groups(_greedy(options), align)
        if limit is None or sum(len(g.channels) for g in groups) <= limit:
            return groups
    return _runs(options, align)


def _cost(zones: list[Zone], option: Option) -> int:
    """Segments that appending ``option``'s zone after ``zones`` costs (0 when the zone is already there)."""
    z = option.zone
    if z in zones:
        return 0
    guard = z.left_end is not None and (not zones or zones[-1].right_end != z.left_end)
    return 2 + int(guard)


def _greedy(options: list[list[Option]]) -> list[Group]:
    """Fill one table after the other, each time with the cheapest remaining option: key (segments it costs
    (:func:`_cost`), whether its channel could also turn, its rank), ties to the lowest channel."""
    left = set(range(len(options)))
    groups: list[Group] = []
    while left:
        picker = _Picker(options, left)
        chans: list[int] = []
        chosen: list[Option | None] = []
        while left:
            c, rank = picker.best()
            opt = options[c][rank]
            if opt.zone not in picker.zones and segments_needed(picker.zones + [opt.zone]) > MAX_SEGMENTS:
                break
            chans.append(c)
            chosen.append(opt)
            left.discard(c)
            picker.take(opt.zone)
        groups.append(Group(chans, chosen))
    return groups


class _Picker:
    """The least (cost, turnable, rank, channel) among the remaining options of one table, without rescanning.

    An option's cost is 0 once its zone is in the table; otherwise 2, plus a guard segment when its left arm
    does not start where the last zone's right arm ends. So the options sit in heaps of (turnable, rank,
    channel) by what their cost depends on - in the table; not in it with a flat left arm; not in it with a
    left arm ending at 0 or at 255 - and the best is the least of the heaps' tops under their current costs.
    Entries whose channel was taken or whose zone joined the table are dropped when they surface."""

    def __init__(self, options: list[list[Option]], left: set[int]) -> None:
        self.options, self.left = options, left
        self.zones: list[Zone] = []
        self.by_zone: dict[Zone, list[tuple[bool, int, int]]] = {}
        self.member: list[tuple[bool, int, int]] = []
        self.outside: dict[int | None, list[tuple[bool, int, int]]] = {None: [], 0: [], 255: []}
        for c in sorted(left):
            for rank, opt in enumerate(options[c]):
                entry = (len(options[c]) > 1, rank, c)
                self.by_zone.setdefault(opt.zone, []).append(entry)
                self.outside[opt.zone.left_end].append(entry)
        for heap in self.outside.values():
            heapq.heapify(heap)

    def take(self, zone: Zone) -> None:
        if zone in self.zones:
            return
        self.zones.append(zone)
        for entry in self.by_zone.get(zone, []):
            if entry[2] in self.left:
                heapq.heappush(self.member, entry)

    def _top(self, heap: list[tuple[bool, int, int]], member: bool) -> tuple[bool, int, int] | None:
        while heap:
            _turn, rank, c = heap[0]
            if c in self.left and member == (self.options[c][rank].zone in self.zones):
                return heap[0]
            heapq.heappop(heap)
        return None

    def best(self) -> tuple[int, int]:
        last = self.zones[-1].right_end if self.zones else None
        candidates = []
        top = self._top(self.member, True)
        if top is not None:
            candidates.append((0, *top))
        for left_end, heap in self.outside.items():
            top = self._top(heap, False)
            if top is not None:
                candidates.append((2 if left_end is None or left_end == last else 3, *top))
        _cost_, _turn, rank, c = min(candidates)
        return c, rank


def _pad_groups(groups: list[Group], align: int) -> list[Group]:
    for g in groups:
        while len(g.channels) % align:
            g.channels.append(-1)
            g.options.append(None)
    return groups


def _runs(options: list[list[Option]], align: int) -> list[Group]:
    """Consecutive channels, each group a multiple of ``align`` long (the storage order is fixed)."""
    groups: list[Group] = []
    c = 0
    n = len(options)
    while c < n:
        best: tuple[int, list[Option]] | None = None
        zones: list[Zone] = []
        chosen: list[Option] = []
        end = c
        while end < n:
            opt = min(options[end], key=lambda o, z=zones: _cost(z, o))
            new = zones + ([opt.zone] if opt.zone not in zones else [])
            if segments_needed(new) > MAX_SEGMENTS:
                break
            zones, end = new, end + 1
            chosen.append(opt)
            if (end - c) % align == 0 or end == n:
                best = (end, list(chosen))
        if best is None:
            raise ValueError(f"{align} channels of this layer do not fit one activation table")
        end, chosen = best
        groups.append(Group(list(range(c, end)), list(chosen)))
        c = end
    return groups
