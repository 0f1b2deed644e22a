"""Output files: atomic, mode from the umask, nothing left after a kill, never over an input."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from k210tool.errors import InputError
from k210tool.fileio import check_output_path, scratch_dir, sweep_scratch, write_bytes, write_together


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_outputs_get_the_mode_the_umask_asks_for(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        write_bytes(tmp_path / "a.kmodel", b"x")
        write_together([(tmp_path / "b.kmodel", b"y"), (tmp_path / "b.kmodel.json", b"{}")])
    finally:
        os.umask(old)
    for name in ("a.kmodel", "b.kmodel", "b.kmodel.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_killed_writer_leaves_neither_a_half_file_nor_a_temporary_one(tmp_path: Path) -> None:
    target = tmp_path / "face.kmodel"
    target.write_bytes(b"old")
    script = textwrap.dedent(f"""
        import os, sys
        from k210tool.fileio import atomic_open
        with atomic_open({str(target)!r}) as fh:
            fh.write(b"new" * 1000)
            fh.flush()
            print("writing", flush=True)
            sys.stdin.read()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["face.kmodel"]


def test_files_written_together_replace_nothing_when_one_fails(tmp_path: Path, monkeypatch) -> None:
    from k210tool import fileio

    (tmp_path / "m.kmodel").write_bytes(b"old kmodel")
    (tmp_path / "m.kmodel.json").write_text("old summary")
    real = fileio._write_all

    def disk_full(fd: int, data: bytes) -> None:
        if data == b"new summary":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data)

    monkeypatch.setattr(fileio, "_write_all", disk_full)
    with pytest.raises(InputError, match="the disk is full"):
        write_together([(tmp_path / "m.kmodel", b"new kmodel"), (tmp_path / "m.kmodel.json", b"new summary")])
    assert (tmp_path / "m.kmodel").read_bytes() == b"old kmodel"
    assert (tmp_path / "m.kmodel.json").read_text() == "old summary"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.kmodel", "m.kmodel.json"]


def test_an_output_that_is_an_input_is_refused(tmp_path: Path) -> None:
    model = tmp_path / "m.h5"
    model.write_bytes(b"model")
    (tmp_path / "link.h5").symlink_to(model)
    for out in (model, tmp_path / "link.h5", tmp_path / "." / "m.h5"):
        with pytest.raises(InputError, match="would overwrite the input"):
            check_output_path(out, [model])
    assert check_output_path(tmp_path / "other.h5", [model, None]) == tmp_path / "other.h5"


def test_scratch_folders_of_killed_runs_are_swept(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"k210tool-nncase-{int(dead.stdout)}-abc123"
    stale.mkdir()
    (stale / "calib.npy").write_bytes(b"x")
    mine = tmp_path / f"k210tool-nncase-{os.getpid()}-def456"
    mine.mkdir()
    other = tmp_path / "k210tool-mpy-cross-0"
    other.mkdir()
    with scratch_dir("job") as folder:
        assert folder.is_dir() and folder.stat().st_mode & 0o777 == 0o700
        assert not stale.exists() and mine.exists() and other.exists()
    assert not folder.exists()
    assert sweep_scratch(tmp_path) == []


def test_a_full_disk_anywhere_is_a_one_line_exit_2(capsys, monkeypatch) -> None:
    """ENOSPC raised outside k210tool's own writers (nncase's scratch folder, Keras saving) is the environment."""
    from helpers import assert_one_line_error, run_cli

    import k210tool.boards as boards

    def full(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device", "/tmp/k210tool-nncase-1-x/calib.npy")

    monkeypatch.setattr(boards, "all_boards", full)
    run = run_cli(capsys, "boards")
    assert_one_line_error(run, "the disk is full", "/tmp/k210tool-nncase-1-x/calib.npy")
