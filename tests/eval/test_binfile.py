from __future__ import annotations

import pickle

import numpy as np
import pytest

from k210tool.errors import InputError
from k210tool.eval.binfile import decode, load_bin, write_bin


def test_round_trip(tmp_path) -> None:
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, (16, 16, 3), dtype=np.uint8) for _ in range(6)]
    path = write_bin(tmp_path / "x.bin", imgs, [True, False, True])
    s = load_bin(path)
    assert s.pairs == 3 and list(s.issame) == [True, False, True]
    assert np.array_equal(decode(s.images[4]), imgs[4])


class _Boom:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        import os

        return (os.system, ("touch PWNED",))


def test_malicious_pickle_runs_nothing(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "evil.bin"
    bad.write_bytes(pickle.dumps(([_Boom(), b"x"], [True]), protocol=2))
    with pytest.raises(InputError, match="refusing"):
        load_bin(bad)
    assert not (tmp_path / "PWNED").exists()


def test_python2_style_bytes_and_numpy_entries(tmp_path) -> None:
    # old sets store numpy uint8 buffers; protocol-2 bytes go through _codecs.encode
    img = np.zeros((8, 8, 3), np.uint8)
    import cv2

    buf = cv2.imencode(".png", img)[1]
    path = tmp_path / "np.bin"
    path.write_bytes(pickle.dumps(([buf, buf.tobytes()], np.array([True])), protocol=2))
    s = load_bin(path)
    assert s.pairs == 1 and decode(s.images[0]).shape == (8, 8, 3)


@pytest.mark.parametrize("payload", [b"", b"not a pickle", pickle.dumps({"a": 1}, protocol=2),
                                     pickle.dumps(([b"x"], [True]), protocol=2)])
def test_bad_files_are_clear_errors(tmp_path, payload: bytes) -> None:
    p = tmp_path / "bad.bin"
    p.write_bytes(payload)
    with pytest.raises(InputError):
        load_bin(p)


# --- memory is bounded by the file: a few bytes cannot declare gigabytes -----------------------------------
def _binint(n: int) -> bytes:
    import struct

    return b"J" + struct.pack("<i", n)


def _peak_of(load, path):
    import tracemalloc

    tracemalloc.start()
    try:
        try:
            load(path)
        except InputError as exc:
            error = exc
        else:
            error = None
        return tracemalloc.get_traced_memory()[1], error
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("payload", [
    # numpy.core.multiarray._reconstruct(ndarray, (200_000_000,), b"B") -> a 200 MB array from 80 bytes
    b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + _binint(200_000_000) + b"\x85C\x01B\x87R",
    # ndarray((200_000_000,), "u1") called directly
    b"cnumpy\nndarray\n" + _binint(200_000_000) + b"\x85" + b"X\x02\x00\x00\x00u1" + b"\x86R",
    # bytes(200_000_000)
    b"cbuiltins\nbytearray\n" + _binint(200_000_000) + b"\x85R",
])
def test_a_tiny_bin_cannot_allocate_what_it_only_declares(tmp_path, payload):
    path = tmp_path / "bomb.bin"
    path.write_bytes(b"\x80\x02" + payload + b"]\x86.")  # (thing, [])
    assert path.stat().st_size < 200
    peak, error = _peak_of(load_bin, path)
    assert error is not None and "verification .bin" in error.message
    assert peak < 20 << 20, peak


def test_one_image_listed_many_times_is_not_copied_many_times(tmp_path):
    """A pickle may reference one object from its memo over and over (two bytes each): share, don't copy."""
    import struct

    n = 200
    image = b"\xff" * (1 << 20)
    body = b"\x80\x02(" + b"cbuiltins\nbytearray\nB" + struct.pack("<I", len(image)) + image + b"\x85R" + b"q\x00"
    body += b"h\x00" * (n - 1) + b"l" + b"(" + b"\x88\x89" * (n // 4) + b"l\x86."
    path = tmp_path / "refs.bin"
    path.write_bytes(body)
    assert path.stat().st_size < 2 << 20
    peak, error = _peak_of(load_bin, path)
    assert error is None
    assert peak < 16 << 20, peak
