from __future__ import annotations

import json

import pytest
from maixpy_factory import face_model, fake_kmodel, kmodel_header, tiny_real_kmodel

from k210tool.boards import get_board
from k210tool.compile.kmodel import kmodel_version
from k210tool.errors import DoesNotFitError, InputError
from k210tool.maixpy.models import (
    Location,
    check_flash_region,
    describe_model,
    parse_location,
)


@pytest.mark.parametrize("version", [3, 4, 5])
def test_version_from_header(version: int) -> None:
    assert kmodel_version(kmodel_header(version) + bytes(8)) == version


def test_version_of_a_real_nncase_kmodel(tmp_path) -> None:
    path = tiny_real_kmodel(tmp_path)
    assert kmodel_version(path.read_bytes()[:8]) == 5
    m = describe_model(path, Location(address=0x300000))
    assert m.kmodel_version == 5 and m.size == path.stat().st_size and m.input_chw == (3, 8, 8)


@pytest.mark.parametrize("data", [b"", b"LDMK", b"PK\x03\x04" + bytes(8), b"\x05\x00\x00\x00" + bytes(8)])
def test_not_a_kmodel(data: bytes, tmp_path) -> None:
    path = tmp_path / "x.kmodel"
    path.write_bytes(data)
    with pytest.raises(InputError, match="x.kmodel"):
        describe_model(path, Location(address=0x300000))


def test_missing_summary_says_what_to_do(tmp_path) -> None:
    path = fake_kmodel(tmp_path / "face.kmodel", 4)
    with pytest.raises(InputError) as exc:
        describe_model(path, Location(address=0x300000))
    assert "k210tool convert" in str(exc.value) and "--summary" in str(exc.value)
    assert "face.kmodel.json" in str(exc.value)


def test_summary_of_another_kmodel_is_refused(tmp_path) -> None:
    path = face_model(tmp_path, 4)
    other = tmp_path / "other.json"
    data = json.loads((tmp_path / "face.kmodel.json").read_text())
    other.write_text(json.dumps({**data, "kmodel_version": 5}))
    with pytest.raises(InputError, match="v5"):
        describe_model(path, Location(address=0x300000), other)
    other.write_text(json.dumps({**data, "kmodel_size": 1}))
    with pytest.raises(InputError, match="1-byte"):
        describe_model(path, Location(address=0x300000), other)


def test_a_summary_left_from_the_previous_kmodel_of_the_same_size_is_refused(tmp_path) -> None:
    """A kill between convert's two renames: new kmodel, old summary. Same version and size; the hash differs."""
    import hashlib

    path = face_model(tmp_path, 4)
    summary = tmp_path / "face.kmodel.json"
    data = json.loads(summary.read_text())
    summary.write_text(json.dumps({**data, "kmodel_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}))
    assert describe_model(path, Location(address=0x300000)).size == 4096
    path.write_bytes(path.read_bytes()[:-1] + b"\x01")
    with pytest.raises(InputError, match="SHA-256"):
        describe_model(path, Location(address=0x300000))


@pytest.mark.parametrize("change", [{"kmodel_version": "four"}, {"kmodel_size": [1]}, {"outputs": ["x"]},
                                    {"preprocess": {"height": "tall"}}, {"preprocess": []},
                                    {"outputs": [{"shape": [1, "x"]}]}])
def test_malformed_summary_values_are_one_input_error(tmp_path, change) -> None:
    path = face_model(tmp_path, 4)
    summary = tmp_path / "face.kmodel.json"
    summary.write_text(json.dumps({**json.loads(summary.read_text()), **change}))
    with pytest.raises(InputError, match="face.kmodel.json|preprocess"):
        describe_model(path, Location(address=0x300000))


def test_float_input_kmodel_is_refused(tmp_path) -> None:
    path = face_model(tmp_path, 4)
    summary = tmp_path / "face.kmodel.json"
    data = json.loads(summary.read_text())
    data["inputs"][0]["dtype"] = "float32"
    summary.write_text(json.dumps(data))
    with pytest.raises(InputError, match="uint8"):
        describe_model(path, Location(address=0x300000))


def test_locations() -> None:
    assert parse_location("0x300000") == Location(address=0x300000)
    assert parse_location("3145728").value == 0x300000
    assert parse_location("/sd/face.kmodel").value == "/sd/face.kmodel"
    for bad in ("face.kmodel", "0xZZ", "/sd/a\nb"):
        with pytest.raises(InputError):
            parse_location(bad)


def test_flash_placement_checks() -> None:
    dock = get_board("maix_dock")
    check_flash_region(dock, 0x300000, 0x200000, "model")
    with pytest.raises(InputError, match="CanMV firmware"):
        check_flash_region(dock, 0x200000, 0x10000, "model")
    with pytest.raises(InputError, match="filesystem"):
        check_flash_region(dock, 0xC80000, 0x100000, "model")
    with pytest.raises(DoesNotFitError):
        check_flash_region(dock, 0xFF0000, 0x20000, "model")
