"""Talking to a K210 board over its USB serial port, in layers.

* ``transport`` - :func:`~k210tool.device.transport.open_transport` for any pyserial URL, bounded reads.
* ``ispproto``, ``reset`` - the UART ISP wire format; DTR/RTS reset sequences per board wiring.
* ``rawrepl`` - MicroPython raw REPL client (raw-paste when offered).
* ``kfpkg`` - flash regions, validation against the board, kfpkg files.
* ``isp`` - ``flash(port, plan)``: greeting probe, kflash in a bounded child, verification.
* ``deploy`` - ``deploy(transport, files)`` and ``run_script(transport, source)``, verified on the board.
* ``ports``, ``terminal``, ``ptylink`` (+ ``linkshim``) - port listing, the REPL terminal, ptys with
  DTR/RTS for clients of the emulator and of URL bridges.

Modules are imported on use; this package imports nothing so that ``k210tool --help`` stays fast.
"""
