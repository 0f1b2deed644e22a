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
