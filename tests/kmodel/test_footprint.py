"""``board_fit``: what the firmware's loader allocates for a kmodel, read from the kmodel, against the limit.

The working memory is checked against an oracle that does not go through k210tool's reader: nncase's own
TOTAL (``kmodel_info.txt``: input + output + data pools + the file) for v5, the v4 header's ``main_mem``
word for v4. The verdicts are checked at the exact boundary of each of the loader's steps.
"""

from __future__ import annotations

import dataclasses
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from k210tool.boards import get_firmware
from k210tool.compile.kmodel import read_kmodel, transcode_to_v4
from k210tool.compile.kmodel.footprint import board_fit, largest_cpu_float_weights


@pytest.fixture(scope="module")
def nncase_tiny() -> tuple[bytes, int]:
    """A tiny MobileFaceNet-shaped network compiled by nncase: (v5 kmodel, nncase's TOTAL from its dump)."""
    from k210tool.compile.nncase_backend import NncaseSettings, compile_kmodel
    from k210tool.preprocess import Preprocess
    from k210tool.train.data.synthetic import identity_images

    sys.path.insert(0, str(Path(__file__).parent))
    from onnx_models import tiny_mobilefacenet

    pre = Preprocess(height=32, width=32)
    calib = np.stack([pre.prepare(img) for i in range(2) for img in identity_images(1000 + i, 1)])
    res = compile_kmodel(tiny_mobilefacenet(32, "relu", False, False),
                         NncaseSettings(pre, model_format="onnx", model_layout="NCHW"), calib)
    return res.kmodel, res.dump.memory.total


def test_v5_working_memory_is_what_nncase_counts(nncase_tiny):
    v5, nncase_total = nncase_tiny
    fit = board_fit(v5, get_firmware("canmv_v5"))
    assert fit.version == 5 and fit.file == len(v5) and not fit.unread
    assert fit.file + fit.working == nncase_total
    assert fit.total == nncase_total + get_firmware("canmv_v5").model_overhead
    assert fit.fits and fit.problem == "" and fit.reason.startswith("fits: ")


def test_v4_working_memory_is_the_headers_main_memory(nncase_tiny):
    v4 = transcode_to_v4(nncase_tiny[0])
    main_mem = struct.unpack_from("<I", v4, 20)[0]  # {'KMDL', version, flags, target, constants, main_mem, ...}
    fit = board_fit(v4, get_firmware("canmv"))
    assert (fit.version, fit.file, fit.working) == (4, len(v4), main_mem) and main_mem > 0
    assert fit.total == len(v4) + main_mem + get_firmware("canmv").model_overhead
    assert board_fit(read_kmodel(v4), get_firmware("canmv")) == fit  # parsed or bytes: the same answer


def test_each_step_of_the_loader_at_its_boundary(nncase_tiny):
    v4 = transcode_to_v4(nncase_tiny[0])
    canmv = get_firmware("canmv")
    total = board_fit(v4, canmv).total

    def at(memory: int, in_use: int = 0):
        return board_fit(v4, dataclasses.replace(canmv, model_memory=memory), in_use)

    assert at(total).fits and at(total + 1000, in_use=1000).fits
    short = at(total - 1)
    assert (short.fits, short.problem) == (False, "memory") and "1 bytes too many" in short.reason
    assert at(total + 1000, in_use=1001).problem == "memory"
    assert "other models hold" in at(total + 1000, in_use=1001).reason
    assert at(len(v4)).problem == "memory"  # the file fits its buffer, the runtime's memory does not
    assert at(len(v4) - 1).problem == "buffer"  # the firmware's malloc of the file itself fails
    assert board_fit(v4, get_firmware("maixpy_minimum")).problem == "version"
    assert board_fit(nncase_tiny[0], canmv).problem == "version"
    for fit in (short, at(len(v4) - 1), board_fit(v4, get_firmware("maixpy_minimum"))):
        assert "\n" not in fit.reason and fit.reason


def test_a_kmodel_unreadable_past_its_header_is_judged_on_its_size():
    data = b"LDMK" + struct.pack("<I", 4) + np.random.default_rng(0).bytes(4000)  # a v4 header, then noise
    fit = board_fit(data, get_firmware("canmv"))
    assert fit.fits and fit.unread and fit.working == 0 and fit.file == len(data)
    small = dataclasses.replace(get_firmware("canmv"), model_memory=len(data) - 1)
    assert board_fit(data, small).problem == "buffer"


def test_largest_float_weights_a_cpu_op_holds(nncase_tiny):
    """nncase leaves the global depthwise conv (64 channels, 8x8 kernel) on the CPU in float, in v5 and v4."""
    v5 = nncase_tiny[0]
    assert largest_cpu_float_weights(read_kmodel(v5)) == 64 * 8 * 8 * 4
    assert largest_cpu_float_weights(read_kmodel(transcode_to_v4(v5))) == 64 * 8 * 8 * 4
