"""Flash plans and kfpkg files: what is refused before anything is sent, and what kflash_gui can read."""

from __future__ import annotations

import json
import zipfile

import pytest

from k210tool.boards import get_board
from k210tool.device.kfpkg import (
    Region,
    kmodel_version,
    plan_flash,
    read_kfpkg,
    split_kmodel_arg,
    validate_regions,
    write_kfpkg,
)
from k210tool.errors import DoesNotFitError, FirmwareError, InputError


def _file(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_kmodel_versions_are_read_from_the_header(kmodel_bytes):
    assert kmodel_version(kmodel_bytes(5, 64)) == 5
    assert kmodel_version(kmodel_bytes(4, 64)) == 4
    assert kmodel_version(kmodel_bytes(3, 64)) == 3
    with pytest.raises(InputError, match="not a kmodel"):
        kmodel_version(b"\x7fELF" + bytes(60))


def test_default_address_and_explicit_address(tmp_path, kmodel_bytes):
    board = get_board("maix_dock")
    model = _file(tmp_path, "m.kmodel", kmodel_bytes(4, 5000))
    plan = plan_flash(board, kmodels=[split_kmodel_arg(str(model)), split_kmodel_arg(f"{model}@0x500000")])
    assert [r.address for r in plan.regions] == [board.kmodel_address, 0x500000]
    assert [r.name for r in plan.regions] == ["m.kmodel", "m-2.kmodel"]


@pytest.mark.parametrize(("spec", "error", "words"), [
    ("@0x100000", InputError, "overlaps the CanMV firmware"),
    ("@0xD00000", InputError, "overlaps the CanMV filesystem"),
    ("@0xFFF000", DoesNotFitError, "past the board's 16 MiB flash"),
    ("@0x300800", InputError, "4 KiB flash sector"),
])
def test_bad_kmodel_addresses_are_refused(tmp_path, kmodel_bytes, spec, error, words):
    model = _file(tmp_path, "m.kmodel", kmodel_bytes(4, 20_000))
    with pytest.raises(error, match=words):
        plan_flash(get_board("maix_dock"), kmodels=[split_kmodel_arg(f"{model}{spec}")])


def test_overlapping_regions_are_refused(tmp_path, kmodel_bytes):
    a = _file(tmp_path, "a.kmodel", kmodel_bytes(4, 0x2000))
    b = _file(tmp_path, "b.kmodel", kmodel_bytes(4, 0x2000))
    with pytest.raises(InputError, match="a.kmodel.*b.kmodel.*overlap"):
        plan_flash(get_board("maix_dock"), kmodels=[(a, 0x300000), (b, 0x301000)])


def test_a_kmodel_version_the_firmware_cannot_load_is_refused(tmp_path, kmodel_bytes):
    v5 = _file(tmp_path, "m.kmodel", kmodel_bytes(5, 4000))
    with pytest.raises(FirmwareError, match="cannot load a kmodel v5"):
        plan_flash(get_board("maix_dock"), kmodels=[(v5, None)])
    plan = plan_flash(get_board("maix_dock", "canmv_v5"), kmodels=[(v5, None)])
    assert plan.regions[0].kind == "kmodel"


def test_a_kmodel_too_big_for_the_firmware_s_memory_is_refused(tmp_path):
    """board_fit's verdict, the one convert and the emulated firmware give: exactly enough memory flashes,
    one byte less is refused before anything is sent."""
    import dataclasses
    from pathlib import Path

    from k210tool.compile.kmodel.footprint import board_fit

    model = _file(tmp_path, "slim.kmodel", (Path(__file__).parents[1] / "kmodel/data/slim320_v4.kmodel").read_bytes())
    dock = get_board("maix_dock")
    need = board_fit(model.read_bytes(), dock.firmware).total

    def with_memory(n: int):
        return dataclasses.replace(dock, firmware=dataclasses.replace(dock.firmware, model_memory=n))

    assert plan_flash(with_memory(need), kmodels=[(model, None)]).regions[0].kind == "kmodel"
    with pytest.raises(DoesNotFitError, match="kmodel slim.kmodel cannot load on maix_dock: needs .* 1 bytes too many"):
        plan_flash(with_memory(need - 1), kmodels=[(model, None)])


def test_firmware_goes_to_zero_with_the_boot_rom_header(tmp_path, kmodel_bytes):
    fw = _file(tmp_path, "maixpy.bin", bytes(range(256)) * 10)
    plan = plan_flash(get_board("maix_go"), firmware=fw, kmodels=[(_file(tmp_path, "m.kmodel", kmodel_bytes()), None)])
    first = plan.regions[0]
    assert (first.address, first.kind, first.sha256_prefix, first.size) == (0, "firmware", True, 2560 + 37)
    assert first.stored[1:5] == (2560).to_bytes(4, "little") and first.stored[5:-32] == fw.read_bytes()


def test_kfpkg_round_trip_and_kflash_gui_layout(tmp_path, kmodel_bytes):
    regions = [Region(0, b"fw" * 100, "fw.bin", "firmware", True),
               Region(0x300000, kmodel_bytes(4, 3000), "m.kmodel", "kmodel")]
    path = write_kfpkg(regions, tmp_path / "x.kfpkg")
    with zipfile.ZipFile(path) as zf:
        listing = json.loads(zf.read("flash-list.json"))
        names = sorted(zf.namelist())
        text = zf.read("flash-list.json").decode()
    # kflash_gui looks every member up in "files"; kflash rewrites '"address": N,' lines and int()s them
    assert names == sorted(["flash-list.json", "fw.bin", "m.kmodel"])
    assert listing["version"] == "0.1.0"
    assert [(f["address"], f["bin"], f["sha256Prefix"]) for f in listing["files"]] == [
        (0, "fw.bin", True), (0x300000, "m.kmodel", False)]
    assert '"address": 3145728,' in text.splitlines()[-5:][0] or '"address": 3145728,' in text
    back = read_kfpkg(path)
    assert [(r.address, r.kind, r.sha256_prefix, r.data) for r in back] == [
        (r.address, r.kind, r.sha256_prefix, r.data) for r in regions]


@pytest.mark.parametrize(("content", "words"), [
    (b"not a zip", "not a kfpkg"),
    ({"other.json": b"{}"}, "flash-list.json or a file it lists is missing"),
    ({"flash-list.json": b'{"files": [{"address": 0, "bin": "gone.bin", "sha256Prefix": false}]}'},
     "is missing"),
    ({"flash-list.json": b'{"files": [{"address": 0, "bin": "a.bin", "sha256Prefix": 1}]}', "a.bin": b"x"},
     "must be true or false"),
    ({"flash-list.json": b'{"files": []}'}, "lists no files"),
])
def test_bad_kfpkg_files_get_one_line_errors(tmp_path, content, words):
    path = tmp_path / "bad.kfpkg"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        with zipfile.ZipFile(path, "w") as zf:
            for name, data in content.items():
                zf.writestr(name, data)
    with pytest.raises(InputError, match=words):
        read_kfpkg(path)


def test_nothing_to_flash_and_bad_addresses(tmp_path):
    with pytest.raises(InputError, match="nothing to flash"):
        plan_flash(get_board("maix_dock"))
    with pytest.raises(InputError, match="bad flash address"):
        split_kmodel_arg("m.kmodel@3M")


def _kfpkg(tmp_path, files: list[dict], members: dict[str, bytes]) -> str:
    path = tmp_path / "hostile.kfpkg"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        zf.writestr("flash-list.json", json.dumps({"version": "0.1.0", "files": files}))
    return str(path)


@pytest.mark.parametrize(("entry", "words"), [
    ({"address": -4096, "bin": "m.bin", "sha256Prefix": False}, "negative"),
    ({"address": float("inf"), "bin": "m.bin", "sha256Prefix": False}, "must be an integer"),
    ({"address": True, "bin": "m.bin", "sha256Prefix": False}, "must be an integer"),
    ({"address": 0x300000, "bin": "", "sha256Prefix": False}, "not a file name"),
    ({"address": 0x300000, "bin": "dir/", "sha256Prefix": False}, "not a file name"),
    ({"address": 0x300000, "bin": ["m.bin"], "sha256Prefix": False}, "not a file name"),
    ("m.bin", "must be an object"),
])
def test_hostile_flash_lists_are_one_input_error(tmp_path, entry, words):
    path = _kfpkg(tmp_path, [entry], {"m.bin": b"x" * 4096, "dir/": b""})
    with pytest.raises(InputError, match=words):
        read_kfpkg(path)


def test_a_negative_address_never_passes_validation(kmodel_bytes):
    with pytest.raises(InputError, match="negative"):
        validate_regions(get_board("maix_dock"), [Region(-4096, b"x", "m.bin")])


def test_a_zip_bomb_is_refused_from_its_declared_size_before_unpacking(tmp_path):
    import tracemalloc

    path = _kfpkg(tmp_path, [{"address": 0, "bin": "big.bin", "sha256Prefix": False}], {"big.bin": bytes(64 << 20)})
    assert (tmp_path / "hostile.kfpkg").stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="unpacks to 67,108,864 bytes"):
            read_kfpkg(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak


def test_an_unreadable_kfpkg_path_is_an_input_error(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(InputError, match="cannot read kfpkg"):
        read_kfpkg(tmp_path / "a")
