"""The emulated board's filesystem: board paths (``/flash/main.py``, ``/sd/x``) on a host directory.

Every path a script uses goes through :meth:`ConfinedFS.host_path`, which normalises it against the
current directory and refuses anything that leaves the root (``..``, absolute host paths, symlinks
pointing outside). This confines the *file API*; it is not a security sandbox for hostile code - the
emulator runs scripts in CPython.
"""

from __future__ import annotations

import errno
import os
import posixpath
import shutil
from pathlib import Path
from typing import Any

# MaixPy/CanMV mount the SPIFFS partition at /flash and an SD card at /sd; /flash is the start directory.
MOUNTS = ("flash", "sd")
DEFAULT_CWD = "/flash"


def mp_oserror(code: int, path: str | None = None) -> OSError:
    """An OSError as MicroPython raises it: only the errno (the traceback shows ``[Errno 2] ENOENT``).

    ``path`` is accepted for the reader of the call site; MicroPython does not show it.
    """
    return OSError(code, errno.errorcode.get(code, str(code)))


class ConfinedFS:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        for mount in MOUNTS:
            (self.root / mount).mkdir(parents=True, exist_ok=True)
        self.cwd = DEFAULT_CWD

    def board_path(self, path: str | bytes) -> str:
        """Absolute, normalised board path for ``path`` relative to the current directory."""
        if isinstance(path, bytes):
            path = path.decode()
        if not isinstance(path, str):
            raise TypeError("path must be str")
        joined = posixpath.normpath(posixpath.join(self.cwd, path))
        if joined.startswith("//"):
            joined = joined[1:]
        return joined

    def host_path(self, path: str | bytes) -> Path:
        board = self.board_path(path)
        host = (self.root / board.lstrip("/")).resolve()
        if host != self.root and self.root not in host.parents:
            raise mp_oserror(errno.EACCES, board)
        return host

    # --- the MicroPython `os` functions -----------------------------------------------------------
    def listdir(self, path: str = "") -> list[str]:
        host = self.host_path(path or ".")
        try:
            return sorted(os.listdir(host))
        except OSError as exc:
            raise mp_oserror(exc.errno or errno.EIO, str(path)) from None

    def ilistdir(self, path: str = "") -> Any:
        host = self.host_path(path or ".")
        for name in self.listdir(path):
            st = os.stat(host / name)
            is_dir = os.path.isdir(host / name)
            yield (name, 0x4000 if is_dir else 0x8000, 0, 0 if is_dir else st.st_size)

    def stat(self, path: str) -> tuple[int, ...]:
        host = self.host_path(path)
        try:
            st = os.stat(host)
        except OSError as exc:
            raise mp_oserror(exc.errno or errno.EIO, str(path)) from None
        mode = 0x4000 if os.path.isdir(host) else 0x8000
        size = 0 if mode == 0x4000 else st.st_size
        mtime = int(st.st_mtime)
        return (mode, 0, 0, 0, 0, 0, size, mtime, mtime, mtime)

    def statvfs(self, path: str = "/") -> tuple[int, ...]:
        usage = shutil.disk_usage(self.host_path(path))
        bsize = 4096
        return (bsize, bsize, usage.total // bsize, usage.free // bsize, usage.free // bsize, 0, 0, 0, 0, 255)

    def mkdir(self, path: str) -> None:
        self._call(os.mkdir, path)

    def rmdir(self, path: str) -> None:
        self._call(os.rmdir, path)

    def remove(self, path: str) -> None:
        host = self.host_path(path)
        if host.is_dir():
            raise mp_oserror(errno.EISDIR, str(path))
        self._call(os.remove, path)

    def rename(self, old: str, new: str) -> None:
        try:
            os.rename(self.host_path(old), self.host_path(new))
        except OSError as exc:
            raise mp_oserror(exc.errno or errno.EIO, str(old)) from None

    def chdir(self, path: str) -> None:
        board = self.board_path(path)
        if not self.host_path(board).is_dir():
            raise mp_oserror(errno.ENOENT, board)
        self.cwd = board

    def getcwd(self) -> str:
        return self.cwd

    def open(self, path: str | bytes | int, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if isinstance(path, int):
            raise mp_oserror(errno.EBADF)
        host = self.host_path(path)
        if host.is_dir():
            raise mp_oserror(errno.EISDIR, str(path))
        try:
            return open(host, mode, *args, **kwargs)  # noqa: SIM115 - returned to the script
        except OSError as exc:
            raise mp_oserror(exc.errno or errno.EIO, str(path)) from None

    def _call(self, fn: Any, path: str) -> None:
        try:
            fn(self.host_path(path))
        except OSError as exc:
            raise mp_oserror(exc.errno or errno.EIO, str(path)) from None
