"""Fuzzing what users hand k210tool: model configs, insightface .bin files and kfpkg archives.

Whatever the bytes, the reader either returns or raises :class:`InputError` (one line, exit code 2) -
never another exception, never a hang, never memory beyond what the file holds. The kmodel reader has its
own fuzz test (tests/kmodel/test_fuzz.py); together they cover every file format k210tool reads.
"""

from __future__ import annotations

import io
import json
import pickle
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from k210tool.errors import InputError

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats() | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                                 max_size=4), max_leaves=12)


def _one_line_or_ok(call, *args) -> None:
    start = time.perf_counter()
    try:
        call(*args)
    except InputError as exc:
        assert str(exc) and "\n" not in str(exc)
    assert time.perf_counter() - start < 20


@st.composite
def byte_edits(draw, data: bytes):
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(buf) - 1))
        blob = draw(st.binary(min_size=1, max_size=6))
        buf[pos:pos + len(blob)] = blob
    cut = draw(st.one_of(st.none(), st.integers(0, len(buf))))
    return bytes(buf[:cut] if cut is not None else buf)


# --- insightface .bin -------------------------------------------------------------------------------------
def _valid_bin() -> bytes:
    images = [np.frombuffer(bytes([i]) * 32, np.uint8) if i % 2 else bytes([i]) * 32 for i in range(8)]
    return pickle.dumps((images, [True, False, True, False]), protocol=2)


@FUZZ
@given(st.data())
def test_mutated_bin_files(tmp_path_factory, data) -> None:
    from k210tool.eval.binfile import load_bin

    path = tmp_path_factory.mktemp("bin") / "x.bin"
    path.write_bytes(data.draw(byte_edits(_valid_bin())))
    _one_line_or_ok(load_bin, path)


@FUZZ
@given(st.binary(max_size=300))
def test_random_pickle_opcodes(tmp_path_factory, tail) -> None:
    from k210tool.eval.binfile import load_bin

    path = tmp_path_factory.mktemp("bin") / "r.bin"
    path.write_bytes(b"\x80\x02" + tail)
    _one_line_or_ok(load_bin, path)


# --- kfpkg ------------------------------------------------------------------------------------------------
def _kfpkg_bytes(listing: object, members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
        zf.writestr("flash-list.json", listing if isinstance(listing, bytes) else json.dumps(listing))
    return buf.getvalue()


@FUZZ
@given(JSON)
def test_any_flash_list_json(tmp_path_factory, listing) -> None:
    from k210tool.device.kfpkg import read_kfpkg

    path = tmp_path_factory.mktemp("kfpkg") / "x.kfpkg"
    path.write_bytes(_kfpkg_bytes({"version": "0.1.0", "files": listing}, {"m.bin": b"x" * 64}))
    _one_line_or_ok(read_kfpkg, path)


@FUZZ
@given(st.data())
def test_mutated_kfpkg_archives(tmp_path_factory, data) -> None:
    from k210tool.device.kfpkg import read_kfpkg

    valid = _kfpkg_bytes({"version": "0.1.0", "files": [{"address": 0x300000, "bin": "m.kmodel",
                                                         "sha256Prefix": False}]}, {"m.kmodel": b"LDMK" + bytes(60)})
    path = tmp_path_factory.mktemp("kfpkg") / "m.kfpkg"
    path.write_bytes(data.draw(byte_edits(valid)))
    _one_line_or_ok(read_kfpkg, path)


# --- model files ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_h5(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    import h5py
    from model_factory import save_h5, tiny_backbone

    path = save_h5(tiny_backbone(size=16), tmp_path_factory.mktemp("model") / "m.h5")
    with h5py.File(path, "r") as f:
        return path, json.loads(f.attrs["model_config"])


def _replace_somewhere(config: object, path: list[int], value: object) -> object:
    """Replace the node that ``path`` walks to (indices taken modulo each container's size)."""
    if not path or not isinstance(config, (dict, list)) or not config:
        return value
    keys = list(config) if isinstance(config, dict) else list(range(len(config)))
    key = keys[path[0] % len(keys)]
    copy = dict(config) if isinstance(config, dict) else list(config)
    copy[key] = _replace_somewhere(config[key], path[1:], value)
    return copy


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))  # each one loads TensorFlow
@given(st.lists(st.integers(0, 50), max_size=8), JSON)
def test_mutated_model_configs(small_h5, tmp_path_factory, path, value) -> None:
    import h5py

    from k210tool.model.load import load_model

    source, config = small_h5
    target = tmp_path_factory.mktemp("model") / "m.h5"
    target.write_bytes(source.read_bytes())
    with h5py.File(target, "r+") as f:
        f.attrs["model_config"] = json.dumps(_replace_somewhere(config, path, value))
    _one_line_or_ok(load_model, target)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_mutated_model_file_bytes(small_h5, tmp_path_factory, data) -> None:
    from k210tool.model.load import load_model

    source, _ = small_h5
    raw = source.read_bytes()
    head = data.draw(byte_edits(raw[:4096]))  # the HDF5 superblock and object headers live up front
    target = tmp_path_factory.mktemp("model") / "m.h5"
    target.write_bytes(head + raw[4096:] if len(head) == 4096 else head)
    _one_line_or_ok(load_model, target)
