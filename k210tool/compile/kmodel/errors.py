"""The two errors of the kmodel package.

:class:`KmodelError` is a file that cannot be read (truncated, corrupt, unknown version or opcode);
:class:`TranscodeError` is a valid v5 file whose content has no kmodel v4 form. Both are one-line
:class:`~k210tool.errors.K210ToolError` subclasses, so the CLI prints them without a traceback.
"""

from __future__ import annotations

from k210tool.errors import InputError, K210ToolError


class KmodelError(InputError):
    """A kmodel file that is truncated, corrupt or of a kind this reader does not know."""


class TranscodeError(K210ToolError):
    """A v5 kmodel op that has no kmodel v4 equivalent (names the op, its layer and what to change)."""
