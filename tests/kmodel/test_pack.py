"""The channel packer's greedy (heap of keys rebuilt when a zone is added) picks exactly what the plain scan
over every remaining option picks: same groups, same order, same options."""

from __future__ import annotations

import numpy as np
import pytest

from k210tool.compile.kmodel.gen.act import Zone, segments_needed
from k210tool.compile.kmodel.gen.pack import MAX_SEGMENTS, Option, _cost, _greedy


def plain_greedy(options: list[list[Option]]) -> list[tuple[list[int], list[Option | None]]]:
    """The definition: each pick scans every remaining channel's options for the least
    (segments it costs, channel can turn, rank); ties to the lowest channel."""
    left = list(range(len(options)))
    groups = []
    while left:
        chans, chosen, zones = [], [], []
        while left:
            best = None
            for c in left:
                for rank, opt in enumerate(options[c]):
                    key = (_cost(zones, opt), len(options[c]) > 1, rank)
                    if best is None or key < best[0]:
                        best = (key, c, opt)
            _key, c, opt = best
            new = zones + ([opt.zone] if opt.zone not in zones else [])
            if segments_needed(new) > MAX_SEGMENTS:
                break
            zones = new
            chans.append(c)
            chosen.append(opt)
            left.remove(c)
        groups.append((chans, chosen))
    return groups


@pytest.mark.parametrize("seed", range(12))
def test_the_heap_greedy_is_the_plain_greedy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    zones = [Zone(float(rng.choice([0.0, 0.5, -0.25, 2.0])), float(rng.choice([1.0, -1.0, 0.0])), int(z))
             for z in rng.integers(0, 256, int(rng.integers(3, 40)))]
    options = []
    for _ in range(int(rng.integers(1, 300))):
        picks = rng.choice(len(zones), int(rng.integers(1, 3)), replace=False)
        options.append([Option(zones[i], float(rng.choice([1.0, -1.0])), 1.0, 0) for i in picks])
    got = [(g.channels, g.options) for g in _greedy(options)]
    assert got == plain_greedy(options)
    assert sorted(c for chans, _ in got for c in chans) == list(range(len(options)))
