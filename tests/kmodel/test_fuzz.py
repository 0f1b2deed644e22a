"""Fuzzing the kmodel reader: corrupt, truncated and random files end in our one-line error, never anything else."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from k210tool.compile.kmodel import KmodelError, read_kmodel

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])


def _read_or_our_error(data: bytes) -> None:
    start = time.perf_counter()
    try:
        read_kmodel(data)
    except KmodelError as exc:
        assert str(exc) and "\n" not in str(exc)
    assert time.perf_counter() - start < 20, "reader took too long (a loop not bounded by the file size?)"


# Interesting places: the headers, where counts, sizes and offsets live.
_u32_edges = st.sampled_from([0, 1, 2, 3, 4, 5, 7, 8, 255, 256, 0x7FFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000,
                              0xFFFFFFFE, 0xFFFFFFFF])


@st.composite
def mutations(draw, size: int):
    edits = []
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.one_of(st.integers(0, min(size - 1, 4096)), st.integers(0, size - 1)))
        if draw(st.booleans()):
            edits.append((pos, draw(_u32_edges).to_bytes(4, "little")))
        else:
            edits.append((pos, draw(st.binary(min_size=1, max_size=8))))
    cut = draw(st.one_of(st.none(), st.integers(0, size)))
    return edits, cut


def _apply(data: bytes, edits, cut) -> bytes:
    buf = bytearray(data)
    for pos, blob in edits:
        buf[pos : pos + len(blob)] = blob[: max(0, len(buf) - pos)]
    return bytes(buf[:cut] if cut is not None else buf)


@pytest.mark.parametrize("version", [3, 4, 5])
def test_mutated_samples(samples, version):
    data = samples[version]

    @FUZZ
    @given(mutations(len(data)))
    def run(m):
        _read_or_our_error(_apply(data, *m))

    run()


def test_mutated_nncase19_output(compiled):
    data = compiled.kmodel("tiny_softmax")  # small; stackvm bytecode, k210 ops and a softmax

    @FUZZ
    @given(mutations(len(data)))
    def run(m):
        _read_or_our_error(_apply(data, *m))

    run()


@FUZZ
@given(st.binary(max_size=512), st.sampled_from([b"", b"LDMK\x04\x00\x00\x00", b"LDMK\x05\x00\x00\x00",
                                                 b"\x03\x00\x00\x00"]))
def test_random_bytes_behind_a_valid_magic(tail, head):
    _read_or_our_error(head + tail)
