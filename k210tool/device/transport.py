"""The byte pipe to a board: any pyserial URL, with bounded reads and one-line errors.

Everything above this layer (the raw REPL client, the ISP greeting probe, the terminal) talks to a
:class:`Transport`. :func:`open_transport` accepts what pyserial's ``serial_for_url`` accepts: a device
(``/dev/ttyUSB0``, ``COM3``, the pseudo-terminal ``k210tool emulate`` prints), ``socket://host:port`` and
``rfc2217://host:port``. Opening is exclusive, so a port another program holds is reported as busy
instead of two programs corrupting each other's bytes.
"""

from __future__ import annotations

import errno
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import serial

from k210tool.errors import DeviceError, InputError

# How long one blocking read may wait before the caller's deadline is checked again.
_READ_SLICE = 0.05


class LinkTimeout(DeviceError):
    """Nothing (or not the expected bytes) arrived in time. ``data`` holds what did arrive."""

    def __init__(self, message: str, data: bytes = b"", hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.data = data


class Transport(Protocol):
    """What the protocol layers need from a serial link."""

    name: str

    def write(self, data: bytes) -> None: ...

    def read(self, n: int, timeout: float) -> bytes: ...

    def read_available(self, limit: int, timeout: float) -> bytes: ...

    def read_until(self, ending: bytes, timeout: float, idle: float | None = None) -> bytes: ...

    def unread(self, data: bytes) -> None: ...

    def set_lines(self, dtr: bool | None = None, rts: bool | None = None) -> None: ...

    def reset_input(self) -> None: ...

    def close(self) -> None: ...


@dataclass
class SerialTransport:
    """A :class:`Transport` over an open pyserial object (``serial.Serial`` or a URL handler)."""

    serial: Any
    name: str
    _pushback: bytearray = field(default_factory=bytearray, repr=False)

    def write(self, data: bytes) -> None:
        try:
            self.serial.write(data)
            self.serial.flush()
        except (OSError, serial.SerialException) as exc:
            raise DeviceError(f"writing to {self.name} failed: {exc}", "the board or cable was disconnected?") from None

    def read(self, n: int, timeout: float) -> bytes:
        """Exactly ``n`` bytes, or fewer if ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        out = b""
        while len(out) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            out += self._read_some(n - len(out), min(remaining, _READ_SLICE))
        return out

    def read_available(self, limit: int, timeout: float) -> bytes:
        """Whatever arrives first (up to ``limit`` bytes), waiting at most ``timeout`` for it."""
        deadline = time.monotonic() + timeout
        while True:
            chunk = self._read_some(limit, min(max(deadline - time.monotonic(), 0.0), _READ_SLICE))
            if chunk or time.monotonic() >= deadline:
                return chunk

    def read_until(self, ending: bytes, timeout: float, idle: float | None = None) -> bytes:
        """Bytes up to and including ``ending``.

        ``timeout`` bounds the whole wait; ``idle`` (if given) bounds the silence between two bytes. On
        either, :class:`LinkTimeout` carries what arrived so the caller can say what the board did send.
        """
        start = last = time.monotonic()
        data = b""
        while not data.endswith(ending):
            now = time.monotonic()
            if now - start >= timeout or (idle is not None and now - last >= idle):
                raise LinkTimeout(f"no {ending!r} from {self.name} within {timeout:g} s", data)
            chunk = self._read_some(1, _READ_SLICE)
            if chunk:
                data += chunk
                last = time.monotonic()
        return data

    def unread(self, data: bytes) -> None:
        """Give bytes back: the next read returns them first (a protocol read one section too far)."""
        self._pushback[:0] = data

    def _read_some(self, limit: int, timeout: float) -> bytes:
        """What is waiting, or the first byte to come within about ``timeout`` (at most one read slice).

        The port's own timeout stays at :data:`_READ_SLICE`: changing it makes pyserial reconfigure the
        port (an RFC 2217 client even waits for the server's acknowledgements).
        """
        if self._pushback:
            out = bytes(self._pushback[:limit])
            del self._pushback[:limit]
            return out
        try:
            waiting = self.serial.in_waiting
            if waiting:
                return self.serial.read(min(waiting, limit))
            if timeout <= 0:
                return b""
            first = self.serial.read(1)
            if not first or limit <= 1:
                return first
            waiting = self.serial.in_waiting
            return first + (self.serial.read(min(waiting, limit - 1)) if waiting else b"")
        except (OSError, serial.SerialException) as exc:
            raise DeviceError(f"reading from {self.name} failed: {exc}", "the board or cable was disconnected?") from None

    def set_lines(self, dtr: bool | None = None, rts: bool | None = None) -> None:
        """Drive the modem lines the boards wire to RESET and BOOT (IO16)."""
        try:
            if dtr is not None:
                self.serial.dtr = dtr
            if rts is not None:
                self.serial.rts = rts
        except OSError as exc:
            if exc.errno == errno.ENOTTY:
                raise DeviceError(
                    f"{self.name} has no DTR/RTS lines (a pseudo-terminal?), so the board cannot be reset",
                    "for `k210tool emulate` set the PYTHONPATH line it printed; or press the board's buttons",
                ) from None
            raise DeviceError(f"setting DTR/RTS on {self.name} failed: {exc}") from None

    def reset_input(self) -> None:
        self._pushback.clear()
        try:
            self.serial.reset_input_buffer()
        except (OSError, serial.SerialException):
            pass

    @property
    def baudrate(self) -> int:
        return int(self.serial.baudrate)

    @baudrate.setter
    def baudrate(self, value: int) -> None:
        self.serial.baudrate = value

    def close(self) -> None:
        try:
            self.serial.close()
        except (OSError, serial.SerialException):
            pass

    def __enter__(self) -> SerialTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_transport(url: str, baudrate: int = 115200, exclusive: bool = True) -> SerialTransport:
    """Open ``url`` (device path or pyserial URL) or raise a one-line :class:`DeviceError`."""
    if not url:
        raise InputError("no serial port given", "pass --port (k210tool ports lists them)")
    kwargs: dict[str, Any] = {"baudrate": baudrate, "timeout": _READ_SLICE, "do_not_open": True}
    try:
        ser = serial.serial_for_url(url, **kwargs)
    except ValueError as exc:
        raise InputError(f"cannot use {url!r} as a serial port: {exc}",
                         "give a device (/dev/ttyUSB0, COM3) or a pyserial URL (socket://host:port)") from None
    if exclusive and hasattr(ser, "exclusive"):
        ser.exclusive = True
    # Open with DTR and RTS released: on Maix boards they drive RESET and BOOT, and pyserial's default
    # (both asserted) would hold a Dock in reset. Resets are explicit (see reset.py).
    ser.dtr = False
    ser.rts = False
    try:
        ser.open()
    except (OSError, serial.SerialException) as exc:
        raise _open_error(url, exc) from None
    return SerialTransport(ser, url)


def _open_error(url: str, exc: BaseException) -> DeviceError:
    code = getattr(exc, "errno", None)
    text = str(exc)
    if code == errno.ENOENT or "No such file" in text:
        return DeviceError(f"serial port {url} does not exist",
                           "plug the board in and run `k210tool ports`; for the emulator use the path it printed")
    if code in (errno.EBUSY, errno.EAGAIN) or "exclusively lock" in text or "busy" in text.lower():
        return DeviceError(f"serial port {url} is busy: another program has it open",
                           "close the serial terminal / MaixPy IDE / kflash / mpremote using it and retry")
    if code == errno.EACCES or "Permission denied" in text:
        return DeviceError(f"no permission to open {url}",
                           "add yourself to the dialout group (sudo usermod -a -G dialout $USER) and log in again")
    if "refused" in text.lower() or code == errno.ECONNREFUSED:
        return DeviceError(f"nothing accepts connections at {url}", "is the serial server running?")
    return DeviceError(f"cannot open serial port {url}: {text.splitlines()[0] if text else type(exc).__name__}")
