"""The one place in ``compile/`` that knows kmodel byte layouts.

``read_kmodel(bytes) -> Kmodel`` reads v3, v4 and v5 files into one typed structure;
``write_v4(Kmodel) -> bytes`` writes kmodel v4; ``transcode_to_v4(v5_bytes) -> bytes`` turns nncase 1.9's
v5 output into a v4 file the released MaixPy/CanMV firmware loads; ``kmodel_version(bytes) -> int``.
Errors are :class:`KmodelError` (unreadable file) and :class:`TranscodeError` (no v4 form), both
one-line :class:`~k210tool.errors.K210ToolError` subclasses.
"""

from __future__ import annotations

from k210tool.compile.kmodel.errors import KmodelError, TranscodeError
from k210tool.compile.kmodel.kpu import Activation, BatchNorm, KpuLayer
from k210tool.compile.kmodel.model import (
    Function,
    Kmodel,
    KpuConv,
    Layer,
    MemoryRange,
    Module,
    Op,
    TensorDesc,
    V3Model,
    V4Model,
    V4Node,
    V5Model,
)

__all__ = [
    "Activation", "BatchNorm", "Function", "Kmodel", "KmodelError", "KpuConv", "KpuLayer", "Layer", "MemoryRange",
    "Module", "Op", "TensorDesc", "TranscodeError", "V3Model", "V4Model", "V4Node", "V5Model", "kmodel_version",
    "read_kmodel", "transcode_to_v4", "write_v4",
]


def kmodel_version(data: bytes) -> int:
    """3, 4 or 5; a :class:`KmodelError` for anything that is not a kmodel."""
    head = bytes(data[:8])
    if len(head) < 8:
        raise KmodelError(f"not a kmodel: the file has only {len(data)} bytes")
    if head[:4] == b"LDMK":
        version = int.from_bytes(head[4:8], "little")
        if version in (4, 5):
            return version
        raise KmodelError(f"unsupported kmodel version {version}", "k210tool reads kmodel v3, v4 and v5")
    if int.from_bytes(head[:4], "little") == 3:
        return 3
    raise KmodelError("not a kmodel: it starts with neither 'LDMK' (v4/v5) nor the v3 header",
                      "pass a .kmodel written by nncase")


def read_kmodel(data: bytes) -> Kmodel:
    """Parse a kmodel of any version. Truncated or corrupt input raises :class:`KmodelError`."""
    from k210tool.compile.kmodel.v3 import read_v3
    from k210tool.compile.kmodel.v4 import read_v4
    from k210tool.compile.kmodel.v5 import read_v5

    data = bytes(data)
    version = kmodel_version(data)
    reader = {3: read_v3, 4: read_v4, 5: read_v5}[version]
    try:
        return reader(data)
    except KmodelError:
        raise
    except (ValueError, OverflowError, MemoryError, UnicodeDecodeError) as exc:
        # Defensive: a corrupt count or field that slipped past the bounds checks still ends as our error.
        raise KmodelError(f"corrupt kmodel v{version}: {type(exc).__name__}: {exc}".splitlines()[0]) from None


def write_v4(model: Kmodel) -> bytes:
    """Serialise a v4 :class:`Kmodel` (one read from a v4 file or made by :func:`transcode_to_v4`)."""
    from k210tool.compile.kmodel.v4 import write_v4_model

    if model.v4 is None:
        raise KmodelError(f"write_v4 needs a kmodel v4 structure, got v{model.version}",
                          "use transcode_to_v4 for nncase 1.9 (v5) output")
    return write_v4_model(model.v4)


def transcode_to_v4(v5: bytes) -> bytes:
    """nncase 1.9 kmodel v5 -> kmodel v4 (:class:`TranscodeError` names any op without a v4 form)."""
    from k210tool.compile.kmodel.transcode import transcode

    return write_v4(transcode(read_kmodel(v5)))
