"""`k210tool inspect` on the three sample files and on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from k210tool.cli import cli, main

DATA = Path(__file__).parent / "data"


def _inspect(*args: str) -> dict:
    result = CliRunner().invoke(cli, ["inspect", *args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.mark.parametrize("name, version, loads_on, kpu, first_op", [
    ("yolo_v3.kmodel", 3, {"maixpy", "maixpy_minimum", "canmv", "canmv_v5", "sdk"}, 16, "K210_CONV"),
    ("slim320_v4.kmodel", 4, {"maixpy", "canmv", "canmv_v5", "sdk"}, 42, "kpu_conv2d"),
    ("yolox_nano_224_v5.kmodel", 5, {"canmv_v5", "sdk"}, 120, "kpu_upload"),
])
def test_inspect_describes_each_sample(name, version, loads_on, kpu, first_op):
    r = _inspect(str(DATA / name))
    assert r["version"] == version
    assert set(r["loads_on"]) == loads_on
    assert r["kpu_layers"] == kpu
    assert r["layers"][0]["op"] == first_op
    assert r["inputs"][0]["dtype"] == "uint8" and len(r["inputs"][0]["shape"]) == 4
    kpu_rows = [row for row in r["layers"] if row["op"] in ("K210_CONV", "kpu_conv2d")]
    assert all(row["placement"] == "KPU" and "pool" in row["args"] for row in kpu_rows)


def test_loads_on_counts_memory_not_only_the_version(tmp_path):
    """Issue 18: "loads on" is the one fit answer (board_fit): a v4 kmodel too big for MaixPy's 2 MiB is not
    listed for MaixPy although MaixPy reads v4."""
    small = _inspect(str(DATA / "slim320_v4.kmodel"))
    big = tmp_path / "big_v4.kmodel"
    big.write_bytes((DATA / "slim320_v4.kmodel").read_bytes() + bytes(2 * 2**20))  # the reader keeps the size
    r = _inspect(str(big))
    assert "maixpy" in small["loads_on"] and "maixpy" not in r["loads_on"]
    assert {"canmv", "canmv_v5", "sdk"} <= set(r["loads_on"])


def test_inspect_words_decodes_every_kpu_field():
    r = _inspect(str(DATA / "slim320_v4.kmodel"), "--words")
    words = r["layers"][0]["kpu"]
    assert words["image_channel_num"]["i_ch_num"] == 2  # 3 input channels, stored minus one
    assert words["kernel_pool_type_cfg"]["pad_value"] == 128
    assert len(words) == 12


def test_inspect_table_mentions_firmware():
    result = CliRunner().invoke(cli, ["inspect", str(DATA / "yolox_nano_224_v5.kmodel"), "--limit", "3"])
    assert result.exit_code == 0
    assert "loads on:" in result.output and "nncase 1.9" in result.output and "more layers" in result.output


def test_inspect_bad_file_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.kmodel"
    bad.write_bytes(b"LDMK\x04\x00\x00\x00" + bytes(12))
    with pytest.raises(SystemExit) as info:
        main(["inspect", str(bad)])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("k210tool: error:") and "\n" not in err and "truncated" in err
