"""The parity frame format: the board side (code of the rendered parity template, run in CPython) and
the host parser agree bit for bit, and damaged output is detected."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from maixpy_factory import face_model, tiny_real_kmodel
from maixpy_fakeboard import load_script, run_main

from k210tool.boards import get_board
from k210tool.errors import DeviceError
from k210tool.maixpy import parity
from k210tool.maixpy.models import parse_location
from k210tool.maixpy.render import ScriptOptions, render_script


@pytest.fixture(scope="module")
def board_code(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("parity")
    model = face_model(folder, 4, outputs=((1, 130), (1, 3)))
    source = render_script("parity", get_board("maix_go"), model=model).source
    return load_script(source)


def _frames(ns: dict, outputs: list[list[np.ndarray]], api: str = "maixpy") -> str:
    sizes = [o.size for o in outputs[0]]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        ns["emit"](f"begin format=1 api={api} vectors={len(outputs)} outputs={len(sizes)} input=rgb565 "
                   f"chw=3x112x112 sizes={','.join(map(str, sizes))}")
        for v, outs in enumerate(outputs):
            print("some firmware chatter")
            for i, o in enumerate(outs):
                ns["emit_output"](v, i, [float(x) for x in o])
            ns["emit"](f"time vec={v} us={1000 + v}")
        ns["emit"](f"end vectors={len(outputs)}")
    return buf.getvalue()


def _vectors(n: int, seed: int = 0) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [[rng.normal(size=130).astype(np.float32), rng.normal(size=3).astype(np.float32)] for _ in range(n)]


def test_board_crc_is_zlib_crc32(board_code: dict) -> None:
    for text in ("", "a", "out vec=0 out=0 n=1 off=0 data=0000803f", "x" * 1000):
        assert f"{board_code['crc32'](text):08x}" == parity.crc_of(text)


def test_round_trip_is_exact(board_code: dict) -> None:
    vectors = _vectors(3)
    vectors[1][0][5] = np.float32(np.nan)  # any bit pattern survives
    vectors[2][0][7] = np.float32(-0.0)
    text = _frames(board_code, vectors)
    run = parity.parse_parity(text)
    assert run.complete and run.vectors == 3 and run.other_lines == 3
    assert run.latency_us == [1000, 1001, 1002]
    for got, want in zip(run.outputs, vectors, strict=True):
        for g, w in zip(got, want, strict=True):
            assert g.tobytes() == w.tobytes()


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_any_single_character_change_is_detected(board_code: dict, data) -> None:
    text = _frames(board_code, _vectors(2, seed=1))
    frame_lines = [i for i, line in enumerate(text.splitlines()) if line.startswith(parity.MAGIC)]
    lines = text.splitlines()
    i = data.draw(st.sampled_from(frame_lines))
    pos = data.draw(st.integers(len(parity.MAGIC), len(lines[i]) - 1))
    new = data.draw(st.sampled_from("0123456789abcdef xz=,"))
    if lines[i][pos] == new:
        return
    lines[i] = lines[i][:pos] + new + lines[i][pos + 1:]
    with pytest.raises(DeviceError):
        parity.parse_parity("\n".join(lines))
    run = parity.parse_parity("\n".join(lines), strict=False)
    assert run.corrupt or not run.complete or any(o is None for o in run.outputs)


@pytest.mark.parametrize("damage", ["drop_end", "drop_chunk", "drop_begin", "cut_line", "board_error"])
def test_damaged_runs_are_reported(board_code: dict, damage: str) -> None:
    text = _frames(board_code, _vectors(2))
    lines = text.splitlines()
    if damage == "drop_end":
        lines = lines[:-1]
    elif damage == "drop_chunk":
        lines = [ln for ln in lines if "off=64" not in ln or "vec=1" not in ln]
    elif damage == "drop_begin":
        lines = lines[1:]
    elif damage == "cut_line":
        lines[3] = lines[3][: len(lines[3]) // 2]
    else:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            board_code["emit_error"](1, MemoryError("out of memory"))
        lines = [ln for ln in lines if "vec=1" not in ln] + buf.getvalue().splitlines()
        lines.append(lines.pop(-2))  # keep the end frame last
    with pytest.raises(DeviceError):
        parity.parse_parity("\n".join(lines))
    run = parity.parse_parity("\n".join(lines), strict=False)
    assert run.problems()
    if damage == "board_error":
        assert run.errors[1] == "MemoryError: out of memory" and run.outputs[0] is not None


def test_frames_survive_prefixes_and_crlf(board_code: dict) -> None:
    text = _frames(board_code, _vectors(1)).replace("\n", "\r\n").replace(parity.MAGIC, ">>> " + parity.MAGIC, 1)
    assert parity.parse_parity(text).complete


def test_rgb565_round_trip_matches_the_firmware_tables() -> None:
    # MaixPy-v1 omv/img/rgb2rgb_tab.c: rb825[3]=0 rb825[4]=0 rb825[5]=1 rb825[11]=1, g826[2]=0 g826[3]=1
    # g826[11]=3; back: rb528[1]=8, g628[1]=4, g628[3]=12
    x = np.array([[[3, 3, 3], [11, 11, 11], [255, 255, 255], [4, 2, 5]]], np.uint8)
    y = parity.rgb565_roundtrip(x)
    assert y[0, 0].tolist() == [0, 4, 0] and y[0, 2].tolist() == [255, 255, 255]
    assert y[0, 1].tolist() == [8, 12, 8] and y[0, 3].tolist() == [0, 0, 8]
    grid = parity.rgb565_roundtrip(np.arange(256, dtype=np.uint8).repeat(3).reshape(1, 256, 3))
    assert len(np.unique(grid[..., 0])) == 32 and len(np.unique(grid[..., 1])) == 64
    assert np.array_equal(parity.rgb565_roundtrip(grid), grid)  # idempotent


@pytest.mark.parametrize("channels", [3, 1])
def test_parity_script_on_a_fake_board_matches_the_simulator_exactly(channels: int, tmp_path: Path) -> None:
    """The whole parity script, with CanMV feat/kpu's KPU played by nncase's Simulator."""
    from k210tool.sim.engine import NncaseEngine

    kmodel = tiny_real_kmodel(tmp_path, channels=channels)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    rng = np.random.default_rng(3)
    batch = rng.integers(0, 256, size=(3, 8, 8, channels), dtype=np.uint8)
    for i, img in enumerate(batch):
        (inputs / parity.input_file_name(i)).write_bytes(parity.input_file_bytes(img))
    (inputs / "notes.txt").write_text("not an input")
    r = render_script("parity", get_board("maix_dock", "canmv_v5"), model=kmodel,
                      model_at=parse_location(str(kmodel)), options=ScriptOptions(inputs_dir=str(inputs)))
    run = parity.parse_parity(run_main(load_script(r.source)))
    assert run.header["input"] == ("exact" if channels == 1 else "rgb565")
    want = NncaseEngine(kmodel.read_bytes()).run(parity.board_inputs(batch, "canmv_v5"))[0]
    assert run.vectors == 3 and all(t is not None for t in run.latency_us)
    for v in range(3):
        assert run.outputs[v][0].tobytes() == want[v].ravel().tobytes()
    if channels == 3:  # the rounding is real: the raw inputs give other outputs
        raw = NncaseEngine(kmodel.read_bytes()).run(batch)[0]
        assert not np.array_equal(raw, want)


def test_input_files_are_planar() -> None:
    img = np.arange(2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 3)
    assert list(parity.input_file_bytes(img)) == [0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11]
    assert parity.input_mode("canmv") == "exact" and parity.input_mode("maixpy") == "rgb565"
    assert parity.input_mode("canmv_v5", 1) == "exact"
