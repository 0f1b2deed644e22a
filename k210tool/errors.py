"""The one error root of k210tool.

Library code raises :class:`K210ToolError` (or a subclass) for anything that is the user's input or the
environment: a missing file, a corrupt model, a board that does not answer. The CLI turns it into a
one-line message plus an optional hint and a non-zero exit code; anything else is a bug and is shown with
a traceback only under ``--debug``.
"""

from __future__ import annotations


class K210ToolError(Exception):
    """An error the user can act on. ``message`` says what is wrong, ``hint`` what to do."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        message, hint = _one_line(message), (None if hint is None else _one_line(hint))
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


def _one_line(text: str) -> str:
    """Errors are one line: a library's multi-line message (pickle, h5py, nncase) is joined."""
    text = str(text)
    return " ".join(part.strip() for part in text.splitlines() if part.strip()) if "\n" in text or "\r" in text else text


class InputError(K210ToolError):
    """Bad input file or option (missing, corrupt, wrong shape, unsupported)."""


class ModelError(InputError):
    """A model file that cannot be loaded or reduced to one image-in/embedding-out graph."""


class CompileError(K210ToolError):
    """nncase failed or produced something unusable."""


class DoesNotFitError(K210ToolError):
    """The model does not fit the board (memory or flash). Exit code 2 like every refused input (issue 2)."""


class FirmwareError(K210ToolError):
    """The board's firmware cannot load what was asked (e.g. kmodel v5 on released MaixPy)."""


class DeviceError(K210ToolError):
    """The board or serial port misbehaved: no answer, lost link, failed verification."""


class GateError(K210ToolError):
    """A quality gate (--min-cosine, --max-acc-drop, parity tolerance) was violated. ``result``: the figures
    that violate it, when the raiser has them (the CLI prints them before the error line)."""

    exit_code = 4
    result: object = None
