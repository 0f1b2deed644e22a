"""Pins and the ``Maix``/``maix`` modules: ``fpioa_manager.fm``, ``GPIO`` with interrupts, ``utils``.

A button is a pad (``boards/*.toml`` ``[pins]``, e.g. ``boot_button = 16``) that ``fm.register(pad,
fm.fpioa.GPIOHS0)`` routes to a GPIO; pressing it (:meth:`Pins.press`) pulls the pad low, which calls the
handler a script gave ``GPIO(...).irq(handler, GPIO.IRQ_FALLING)`` - on the script's own thread, as
MicroPython schedules pin interrupts - and releases it again.

``Maix``/``maix`` extend the emulator's ``Maix`` (``utils.flash_read``) with ``GPIO``, ``utils.heap_free()``
reporting the RAM the loaded kmodels leave, and on CanMV the ``KPU`` of the firmware's flavour.
"""

from __future__ import annotations

import threading
import types
from collections.abc import Callable
from typing import Any

from k210tool.emulator.runtime import BoardContext

# fpioa function numbers of GPIOHS0..31 and GPIO0..7 (K210 fpioa.h: FUNC_GPIOHS0 = 24, FUNC_GPIO0 = 56)
FUNC_GPIOHS0 = 24
FUNC_GPIO0 = 56


class Pins:
    """Pad routing and pin interrupts of one board (shared across soft resets; handlers are per script)."""

    def __init__(self) -> None:
        self.routes: dict[int, int] = {}  # pad -> fpioa function
        self.gpios: dict[int, Any] = {}  # fpioa function -> GPIO object
        self.levels: dict[int, int] = {}  # pad -> level (1: released, pulled up)
        self.presses = 0
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self.routes.clear()
            self.gpios.clear()

    def press(self, pad: int) -> bool:
        """Press and release ``pad``; True when a script's falling-edge handler ran."""
        with self._lock:
            self.presses += 1
            gpio = self.gpios.get(self.routes.get(pad, -1))
        self.levels[pad] = 0
        ran = gpio is not None and gpio.edge(falling=True)
        self.levels[pad] = 1
        if gpio is not None:
            gpio.edge(falling=False)
        return ran


def make_fpioa_module(ctx: BoardContext, pins: Pins) -> types.ModuleType:
    """``fpioa_manager`` with ``fm.register(pad, function, force=False)`` and ``fm.fpioa`` constants."""
    fpioa = types.SimpleNamespace(**{f"GPIOHS{i}": FUNC_GPIOHS0 + i for i in range(32)},
                                  **{f"GPIO{i}": FUNC_GPIO0 + i for i in range(8)})

    def register(pad: int, function: int, force: bool = False) -> None:
        pins.routes[int(pad)] = int(function)

    def unregister(pad: int, *_a: Any) -> None:
        pins.routes.pop(int(pad), None)

    fm = types.SimpleNamespace(register=register, unregister=unregister, fpioa=fpioa,
                               get_pin_by_function=lambda f: next((p for p, g in pins.routes.items() if g == f), -1))
    mod = types.ModuleType("fpioa_manager")
    mod.__dict__.update(fm=fm, fpioa=fpioa)
    return mod


def make_gpio_class(pins: Pins) -> type:
    class GPIO:
        IN, OUT = 0, 3
        PULL_NONE, PULL_DOWN, PULL_UP = 0, 1, 2
        IRQ_NONE, IRQ_RISING, IRQ_FALLING, IRQ_BOTH = 0, 1, 2, 3
        WAKEUP_NOT_SUPPORT = 0

        def __init__(self, gpio_id: int, mode: int = 0, pull: int = 0, value: int | None = None) -> None:
            self._id = int(gpio_id)
            self._mode = mode
            self._value = 1 if pull == self.PULL_UP else (value or 0)
            self._handler: Callable[[Any], Any] | None = None
            self._trigger = self.IRQ_NONE
            pins.gpios[self._id] = self

        def value(self, v: int | None = None) -> int | None:
            if v is None:
                pad = next((p for p, f in pins.routes.items() if f == self._id), None)
                return pins.levels.get(pad, self._value) if pad is not None else self._value
            self._value = 1 if v else 0
            return None

        def irq(self, handler: Callable[[Any], Any], trigger: int, *_a: Any, **_kw: Any) -> None:
            self._handler, self._trigger = handler, int(trigger)

        def disirq(self) -> None:
            self._handler, self._trigger = None, self.IRQ_NONE

        def edge(self, falling: bool) -> bool:
            wanted = self.IRQ_FALLING if falling else self.IRQ_RISING
            if self._handler is not None and self._trigger in (wanted, self.IRQ_BOTH):
                self._handler(self)
                return True
            return False

    for i in range(32):
        setattr(GPIO, f"GPIOHS{i}", FUNC_GPIOHS0 + i)
    for i in range(8):
        setattr(GPIO, f"GPIO{i}", FUNC_GPIO0 + i)
    return GPIO


def make_maix_module(ctx: BoardContext, pins: Pins, memory_free: Callable[[], int],
                     name: str = "Maix") -> types.ModuleType:
    """``Maix``/``maix``: the emulator's flash_read plus GPIO, heap figures and (CanMV) the KPU."""
    from k210tool.emulator.mpmodules import make_maix

    base = make_maix(ctx)
    utils = types.SimpleNamespace(**vars(base.utils))
    utils.heap_free = memory_free
    utils.gc_heap_size = lambda *a: ctx.board.model_memory
    mod = types.ModuleType(name)
    mod.__dict__.update(vars(base))
    mod.__name__ = name
    mod.utils = utils  # type: ignore[attr-defined]
    mod.GPIO = make_gpio_class(pins)  # type: ignore[attr-defined]
    api = ctx.board.firmware.kpu_api
    if api == "canmv":
        from k210tool.emulator.maixpy.kpu_canmv import CanmvKPU

        mod.KPU = lambda: CanmvKPU(ctx)  # type: ignore[attr-defined]
    elif api == "canmv_v5":
        from k210tool.emulator.maixpy.kpu_canmv import CanmvV5KPU

        mod.KPU = lambda: CanmvV5KPU(ctx)  # type: ignore[attr-defined]
    return mod


__all__ = ["Pins", "make_fpioa_module", "make_gpio_class", "make_maix_module"]
