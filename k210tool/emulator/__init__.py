"""A virtual Maix board on a pseudo-terminal that kflash, mpremote and k210tool accept.

``server.Emulator`` (context manager) serves a ``board.VirtualBoard``: reset/boot pins from DTR/RTS,
the ISP ROM and flash-mode protocol (``isp``), a MicroPython REPL (``repl``) running scripts in CPython
(``runtime`` + ``mpmodules``, extensible through a ``ModuleRegistry``), a sparse flash (``flash``), a
confined filesystem (``vfs``) and fault injection (``faults``). ``process.emulator_process`` runs
``k210tool emulate`` out of process; ``pytest_fixtures`` has fixtures for tests. See docs/serial.md.
"""
