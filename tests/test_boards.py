from __future__ import annotations

import pytest

from k210tool.boards import all_boards, get_board
from k210tool.errors import FirmwareError, InputError


def test_every_board_loads_and_has_a_firmware_that_lists_versions() -> None:
    boards = all_boards()
    for wanted in ("maix_bit", "maix_dock", "maix_go", "maixduino", "maix_amigo", "maix_cube", "kd233"):
        assert wanted in boards
    for b in boards.values():
        assert b.firmware.kmodel_versions
        assert b.flash_size >= 8 * 1024 * 1024
        assert 0 < b.model_memory <= 6 * 1024 * 1024


def test_alias_and_case_insensitive_lookup() -> None:
    assert get_board("M1W").id == "maix_dock"
    assert get_board("Maix-Bit").id == "maix_bit"


def test_unknown_board_names_the_choices() -> None:
    with pytest.raises(InputError) as exc:
        get_board("raspberry")
    assert "maix_dock" in str(exc.value)


def test_released_firmware_refuses_v5_and_names_the_firmware_to_flash() -> None:
    dock = get_board("maix_dock")
    dock.require_kmodel_version(4)
    with pytest.raises(FirmwareError) as exc:
        dock.require_kmodel_version(5)
    assert "canmv_v5" in str(exc.value)
    get_board("maix_dock", firmware="canmv_v5").require_kmodel_version(5)


def test_user_board_folder_overrides(tmp_path, monkeypatch) -> None:
    import shutil

    from k210tool import boards as mod
    from k210tool.resources import data_dir

    src = data_dir("boards")
    shutil.copy(src / "firmware.toml", tmp_path / "firmware.toml")
    text = (src / "maix_dock.toml").read_text().replace('id = "maix_dock"', 'id = "my_board"')
    (tmp_path / "my_board.toml").write_text(text)
    monkeypatch.setenv("K210TOOL_BOARDS", str(tmp_path))
    mod.all_boards.cache_clear()
    mod.all_firmware.cache_clear()
    try:
        assert get_board("my_board").firmware.id == "canmv"
    finally:
        mod.all_boards.cache_clear()
        mod.all_firmware.cache_clear()


def test_a_bad_model_overhead_is_a_one_line_error_naming_the_file(tmp_path, monkeypatch) -> None:
    from k210tool import boards as mod

    (tmp_path / "firmware.toml").write_text('[odd]\nname = "odd"\nkmodel_versions = [4]\nmodel_memory = 1048576\n'
                                            'model_overhead = "a lot"\n')
    monkeypatch.setenv("K210TOOL_BOARDS", str(tmp_path))
    mod.all_firmware.cache_clear()
    try:
        with pytest.raises(InputError, match="firmware 'odd' is missing or has a bad field") as exc:
            mod.all_firmware()
        assert str(tmp_path / "firmware.toml") in str(exc.value) and "\n" not in str(exc.value)
    finally:
        mod.all_boards.cache_clear()
        mod.all_firmware.cache_clear()


def test_lcd_and_micropython_details_the_script_templates_use() -> None:
    from k210tool.boards import all_firmware

    assert get_board("maix_amigo").lcd.lcd_type == 1 and get_board("maix_amigo").lcd.width == 480
    assert get_board("maix_cube").lcd.invert == 1
    assert get_board("maix_dock").lcd.lcd_type == 0 and get_board("maix_dock").lcd.invert == 0
    for fw in all_firmware().values():
        assert (fw.micropython_version == "1.11") == fw.micropython, fw.id
