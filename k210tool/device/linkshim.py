"""Modem-line shim for clients of ``k210tool emulate`` (installed as ``sitecustomize.py``).

A Linux pseudo-terminal has no DTR/RTS lines: pyserial's ioctls fail with ENOTTY, and kflash, which
resets the board through them, stops with "Greeting fail". ``k210tool emulate`` therefore writes this
file as ``<shim dir>/sitecustomize.py``; with ``PYTHONPATH=<shim dir>`` every Python client (kflash,
mpremote, k210tool itself) loads it at start-up. It changes only pyserial's DTR/RTS updates, and only
for the emulator's pseudo-terminals: each explicit line change is sent over a Unix socket to the
emulator, which applies it to the virtual board's RESET/BOOT pins before acknowledging - so the change
is ordered with the bytes the client writes afterwards. Opening a port changes nothing (a plain open
lands in the firmware's REPL, as on the board); all protocol code in the client runs unmodified.

This module must import nothing from k210tool: it runs inside other programs' interpreters.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys

CONFIG_NAME = "k210tool-emulator.json"
_ATTR = "_k210tool_emulator_ports"


def _load_ports(shim_dir: str) -> dict[str, str]:
    try:
        with open(os.path.join(shim_dir, CONFIG_NAME), encoding="utf-8") as fh:
            config = json.load(fh)
    except (OSError, ValueError):
        return {}
    return {os.path.realpath(p["pty"]): p["socket"] for p in config.get("ports", [])}


def _send_line(ser: object, socket_path: str, line: str, value: bool) -> None:
    link = getattr(ser, "_k210tool_link", None)
    for _attempt in range(2):
        try:
            if link is None:
                link = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                link.settimeout(5.0)
                link.connect(socket_path)
                ser._k210tool_link = link  # type: ignore[attr-defined]
            link.sendall(f"{line} {int(value)}\n".encode())
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = link.recv(64)
                if not chunk:
                    raise OSError(errno.ECONNRESET, "emulator closed the line channel")
                reply += chunk
            return
        except OSError:
            try:
                if link is not None:
                    link.close()
            except OSError:
                pass
            link = None
            ser._k210tool_link = None  # type: ignore[attr-defined]
    raise OSError(errno.ENOTTY, "k210tool emulator is not running (DTR/RTS not delivered)")


def _patch(serialposix: object) -> None:
    cls = serialposix.Serial  # type: ignore[attr-defined]
    ports: dict[str, str] = getattr(serialposix, _ATTR)
    original_open = cls.open
    original_dtr = cls._update_dtr_state
    original_rts = cls._update_rts_state

    def target(ser: object) -> str | None:
        name = getattr(ser, "portstr", None) or getattr(ser, "port", None)
        return ports.get(os.path.realpath(name)) if isinstance(name, str) else None

    def patched_open(self: object) -> None:
        self._k210tool_opening = True  # type: ignore[attr-defined]
        try:
            original_open(self)
        finally:
            self._k210tool_opening = False  # type: ignore[attr-defined]

    def make_update(line: str, original: object) -> object:
        def update(self: object) -> None:
            sock = target(self)
            if sock is None:
                return original(self)  # type: ignore[operator]
            if getattr(self, "_k210tool_opening", False):
                return None  # pyserial applying its defaults at open: the board sees no edge
            _send_line(self, sock, line.upper(), bool(getattr(self, f"_{line}_state")))
            return None

        return update

    cls.open = patched_open
    cls._update_dtr_state = make_update("dtr", original_dtr)
    cls._update_rts_state = make_update("rts", original_rts)


def install(shim_dir: str) -> bool:
    """Route DTR/RTS of the ptys listed in ``shim_dir`` to their emulator. Idempotent; False without pyserial."""
    try:
        import serial.serialposix as serialposix
    except Exception:  # no pyserial (or not POSIX): nothing to patch
        return False
    if not hasattr(serialposix, _ATTR):
        setattr(serialposix, _ATTR, {})
        serialposix._k210tool_emulator_dirs = []  # type: ignore[attr-defined]
        _patch(serialposix)
    getattr(serialposix, _ATTR).update(_load_ports(shim_dir))
    if shim_dir not in serialposix._k210tool_emulator_dirs:  # type: ignore[attr-defined]
        # child processes this one starts (k210tool runs kflash in one) need the same shim
        serialposix._k210tool_emulator_dirs.append(shim_dir)  # type: ignore[attr-defined]
    return True


def _shim_dirs() -> list[str]:
    """Every shim directory on sys.path (a client may talk to several emulators and bridges)."""
    return [e for e in sys.path if e and os.path.isfile(os.path.join(e, CONFIG_NAME))]


def _chain_next_sitecustomize(shims: list[str]) -> None:
    """Run the sitecustomize these shims shadow (a distribution's or a venv's), if any."""
    import importlib.util

    skip = {os.path.realpath(d) for d in shims}
    for entry in sys.path:
        if not entry or os.path.realpath(entry) in skip:
            continue
        candidate = os.path.join(entry, "sitecustomize.py")
        if os.path.isfile(candidate):
            spec = importlib.util.spec_from_file_location("_k210tool_chained_sitecustomize", candidate)
            if spec and spec.loader:
                spec.loader.exec_module(importlib.util.module_from_spec(spec))
            return


if __name__ == "sitecustomize":
    _shims = _shim_dirs() or [os.path.dirname(os.path.abspath(__file__))]
    for _dir in _shims:
        install(_dir)
    _chain_next_sitecustomize(_shims)
