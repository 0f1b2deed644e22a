"""Reset strategies: drive the USB-UART's DTR/RTS lines into the K210's RESET and BOOT (IO16) pins.

Maix boards wire two modem lines to the chip: one pulls RESET low, the other pulls IO16 low. IO16 low
while RESET is released starts the mask-ROM ISP loader; IO16 high boots the firmware from flash. Which
line goes where depends on the board (kflash's ``-B`` names): the Dock/Bit ("dan") put RESET on RTS and
BOOT on DTR, the KD233 and the FT2232/CH552 boards (Go, Maixduino, Amigo, Cube: "goE") the other way
round. pyserial's ``dtr = True`` asserts the line (drives the pin low).

A strategy is a callable taking the transport (esptool's ``reset.py`` pattern); the emulator interprets
the lines with the same :data:`WIRINGS` table, and the real kflash CLI's own sequences are checked
against it in the tests.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

# How long each line state is held; the RC on the RESET pin and the ROM's IO16 sampling need ~10 ms,
# kflash holds 100 ms.
HOLD = 0.1


@dataclass(frozen=True)
class Wiring:
    """Which modem line drives RESET and which drives BOOT (IO16); ``"dtr"`` or ``"rts"``."""

    name: str
    reset: str
    boot: str

    def lines(self, reset: bool, boot: bool) -> dict[str, bool]:
        """Line states (True = asserted) giving the requested pin states."""
        return {self.reset: reset, self.boot: boot}


WIRINGS = {
    "dan": Wiring("dan", reset="rts", boot="dtr"),
    "kd233": Wiring("kd233", reset="dtr", boot="rts"),
}
# kflash -B names -> wiring. goD (old CMSIS-DAP firmware) decodes its own sequence and is not modelled.
KFLASH_WIRING = {
    "dan": "dan", "bit": "dan", "trainer": "dan",
    "kd233": "kd233", "goE": "kd233", "bit_mic": "kd233", "maixduino": "kd233",
}


def wiring_for(kflash_board: str | None) -> Wiring | None:
    name = KFLASH_WIRING.get(kflash_board or "")
    return WIRINGS[name] if name else None


class LineDriver(Protocol):
    def set_lines(self, dtr: bool | None = None, rts: bool | None = None) -> None: ...


def _apply(port: LineDriver, wiring: Wiring, reset: bool, boot: bool) -> None:
    # BOOT first, then RESET: IO16 must already be at its level when RESET is released.
    port.set_lines(**{wiring.boot: boot})
    port.set_lines(**{wiring.reset: reset})


@dataclass(frozen=True)
class ResetSequence:
    """A callable reset: ``steps`` are (RESET asserted, BOOT asserted) pin states, each held ``hold`` s."""

    kind: str  # "isp" (into the mask-ROM loader) or "hard" (into the firmware)
    wiring: Wiring
    steps: tuple[tuple[bool, bool], ...]
    hold: float = HOLD

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.wiring.name}"

    def __call__(self, port: LineDriver) -> None:
        for reset, boot in self.steps:
            _apply(port, self.wiring, reset=reset, boot=boot)
            time.sleep(self.hold)


def isp_reset(wiring: Wiring, hold: float = HOLD) -> ResetSequence:
    """Into the mask-ROM ISP loader: RESET low, then IO16 low and RESET released."""
    return ResetSequence("isp", wiring, ((False, False), (True, False), (False, True)), hold)


def hard_reset(wiring: Wiring, hold: float = HOLD) -> ResetSequence:
    """Into the firmware in flash: IO16 released, RESET pulsed."""
    return ResetSequence("hard", wiring, ((False, False), (True, False), (False, False)), hold)


def isp_strategies(kflash_board: str | None) -> list[ResetSequence]:
    """The board's own sequence first; for an unknown board both wirings (as kflash's auto mode)."""
    wiring = wiring_for(kflash_board)
    if wiring is not None:
        return [isp_reset(wiring)]
    return [isp_reset(WIRINGS["dan"]), isp_reset(WIRINGS["kd233"])]
