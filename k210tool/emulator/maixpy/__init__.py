"""The MaixPy/CanMV hardware of the virtual board: camera, LCD, image, KPU, pins.

Generated apps (``k210tool script``) run on the emulator with these modules: ``sensor`` reads frames from a
folder of images or a video file, ``lcd`` writes what it displays to a folder as PNGs, ``image`` is an
RGB565/greyscale image with the drawing and KPU-input methods the templates use, and the KPU of the board's
firmware flavour (``KPU`` on MaixPy-v1, ``maix.KPU`` on CanMV releases and on CanMV feat/kpu) runs the real
kmodel bytes - from the emulated flash or the board's filesystem - with the firmware's version check and
memory limit. ``Maix``/``maix`` add ``GPIO`` (pin interrupts) and ``utils``, ``fpioa_manager`` routes pads.

Configure it with :class:`Hardware` and hand the registry to the emulator::

    from k210tool.emulator.maixpy import Hardware, maix_registry
    hw = Hardware(camera="frames/", lcd_out="lcd/", button_presses={3, 5})
    with Emulator("maix_dock", modules=maix_registry(hw)) as emu:
        ...
    hw.lcd.frames, hw.loader.loads

A board started without ``modules=`` (``k210tool emulate``) has these modules too; there the camera and
LCD folders come from ``$K210TOOL_CAMERA`` and ``$K210TOOL_LCD`` (without them: a test pattern, and no
files written).
"""

from __future__ import annotations

import os
import types
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from k210tool.emulator.runtime import BoardContext, ModuleRegistry

CAMERA_ENV = "K210TOOL_CAMERA"
LCD_ENV = "K210TOOL_LCD"


@dataclass
class Hardware:
    """What is attached to the virtual board. One per board: it outlives soft resets.

    ``camera``: a folder of images, a video file, a sequence of RGB arrays or a ``FrameSource`` (None:
    ``$K210TOOL_CAMERA``, else a test pattern); ``camera_end``: ``loop``, ``hold`` or ``stop`` when it runs
    out. ``lcd_out``: folder for displayed frames (None: ``$K210TOOL_LCD``, else frames are only counted).
    ``button_presses``: snapshot numbers (1 = the first frame) at which the boot button is pressed;
    ``press_every_frame`` presses it at every snapshot. ``engine``: ``auto`` (nncase's Simulator for v5,
    the NumPy interpreter for v4), ``nncase`` or ``numpy``.
    """

    camera: Any = None
    camera_end: str = "loop"
    lcd_out: str | Path | None = None
    button_presses: Iterable[int] = ()
    press_every_frame: bool = False
    engine: str = "auto"
    _parts: dict[str, Any] = field(default_factory=dict, repr=False)

    # --- the parts, made on first use --------------------------------------------------------------------
    @property
    def loader(self) -> Any:
        if "loader" not in self._parts:
            from k210tool.emulator.maixpy.kmodels import KmodelLoader

            self._parts["loader"] = KmodelLoader(self.engine)
        return self._parts["loader"]

    @property
    def pins(self) -> Any:
        if "pins" not in self._parts:
            from k210tool.emulator.maixpy.board_io import Pins

            self._parts["pins"] = Pins()
        return self._parts["pins"]

    @property
    def lcd(self) -> Any:
        if "lcd" not in self._parts:
            from k210tool.emulator.maixpy.lcd import LcdSink

            out = self.lcd_out if self.lcd_out is not None else os.environ.get(LCD_ENV) or None
            self._parts["lcd"] = LcdSink(Path(out) if out else None)
        return self._parts["lcd"]

    def camera_for(self, ctx: BoardContext) -> Any:
        if "camera" not in self._parts:
            from k210tool.emulator.maixpy.camera import Camera, TestPattern, open_source

            spec = self.camera if self.camera is not None else os.environ.get(CAMERA_ENV) or None
            source = open_source(spec) if spec is not None else TestPattern()
            presses = frozenset(int(n) for n in self.button_presses)
            pad = ctx.board.pins.get("boot_button", 16)

            def on_snapshot(n: int) -> None:
                if self.press_every_frame or n in presses:
                    self.pins.press(pad)

            self._parts["camera"] = Camera(source, self.camera_end, on_snapshot)
        return self._parts["camera"]

    def press_button(self, pad: int | None = None) -> bool:
        """Press a pad (default: the board's boot button) now; True when a script's handler ran."""
        return bool(self.pins.press(self._parts.get("boot_pad", 16) if pad is None else pad))


def register_hardware(registry: ModuleRegistry, hardware: Hardware | None = None) -> Hardware:
    """Add the hardware modules to ``registry`` (they override nothing the runtime needs)."""
    hw = hardware or Hardware()

    def with_loader(factory: Any) -> Any:
        def make(ctx: BoardContext) -> types.ModuleType:
            if ctx.kmodel_loader is None:
                ctx.kmodel_loader = hw.loader
            return factory(ctx)

        return make

    def image(ctx: BoardContext) -> types.ModuleType:
        from k210tool.emulator.maixpy.image import make_image_module

        return make_image_module(ctx)

    def sensor(ctx: BoardContext) -> types.ModuleType:
        from k210tool.emulator.maixpy.camera import make_sensor_module

        return make_sensor_module(ctx, hw.camera_for(ctx))

    def lcd(ctx: BoardContext) -> types.ModuleType:
        from k210tool.emulator.maixpy.lcd import make_lcd_module

        return make_lcd_module(ctx, hw.lcd)

    def kpu(ctx: BoardContext) -> types.ModuleType:
        from k210tool.emulator.maixpy.kpu_maixpy import make_kpu_module

        return make_kpu_module(ctx)

    def fpioa(ctx: BoardContext) -> types.ModuleType:
        from k210tool.emulator.maixpy.board_io import make_fpioa_module

        hw._parts["boot_pad"] = ctx.board.pins.get("boot_button", 16)
        return make_fpioa_module(ctx, hw.pins)

    def maix_named(name: str) -> Any:
        def make(ctx: BoardContext) -> types.ModuleType:
            from k210tool.emulator.maixpy.board_io import make_maix_module

            if name == "maix" and not ctx.board.firmware.kpu_api.startswith("canmv"):
                raise ImportError("no module named 'maix'")
            return make_maix_module(ctx, hw.pins, lambda: hw.loader.memory_free(ctx), name)

        return make

    registry.register("image", image)
    registry.register("sensor", sensor)
    registry.register("lcd", lcd)
    registry.register("KPU", with_loader(kpu))
    registry.register("fpioa_manager", fpioa)
    registry.register("Maix", with_loader(maix_named("Maix")))
    registry.register("maix", with_loader(maix_named("maix")))
    return hw


def maix_registry(hardware: Hardware | None = None, base: ModuleRegistry | None = None) -> ModuleRegistry:
    """The emulator's default modules plus the hardware of ``hardware`` (see :class:`Hardware`)."""
    from k210tool.emulator.mpmodules import default_registry

    registry = (base or default_registry()).copy()
    register_hardware(registry, hardware)
    return registry


__all__ = ["CAMERA_ENV", "LCD_ENV", "Hardware", "maix_registry", "register_hardware"]
