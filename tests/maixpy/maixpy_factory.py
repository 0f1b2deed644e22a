"""Model files for the script tests.

Most tests use *header-only* kmodels: the first 8 bytes say the version (u32 3 for v3, "LDMK" + u32 4/5)
and the rest is zeros. Rendering reads only that header, the file size and the convert summary beside the
file, so nothing else matters there. :func:`tiny_real_kmodel` compiles a real (tiny) v5 kmodel with nncase
1.9 for the tests that run it through nncase's Simulator.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from k210tool.preprocess import Preprocess

# Names of people that try to break out of a string literal, a comment or the template.
HOSTILE = [
    'Robert"); import os; os.remove("/flash/main.py") #',
    "O'Brien",
    'tri """ple',
    "tri '''ple",
    "back\\slash\\",
    "new\nline\r\nand\ttab",
    "{{ names }} {% if %} {# x #}",
    "Zoë Ægir Ñandú",
    "张伟",
    "😀 emoji \U0010FFFF",
    "nul\x00bell\x07del\x7f",
    "\\u00e9 not an escape",
    "# comment",
    "x" * 500,
]


def kmodel_header(version: int) -> bytes:
    return struct.pack("<I", 3) + bytes(4) if version == 3 else b"LDMK" + struct.pack("<I", version)


def fake_kmodel(path: Path, version: int, size: int = 4096) -> Path:
    """A header-only kmodel of ``size`` bytes."""
    head = kmodel_header(version)
    path.write_bytes(head + bytes(size - len(head)))
    return path


def summary_dict(version: int, size: int, pre: Preprocess | None = None,
                 outputs: tuple[tuple[int, ...], ...] = ((1, 128),)) -> dict[str, Any]:
    pre = pre or Preprocess()
    return {
        "kmodel_version": version,
        "kmodel_size": size,
        "inputs": [{"name": "input", "shape": [1, pre.channels, pre.height, pre.width], "layout": "NCHW",
                    "dtype": "uint8"}],
        "outputs": [{"name": f"out{i}", "shape": list(s), "dtype": "float32"} for i, s in enumerate(outputs)],
        "preprocess": pre.to_dict(),
    }


def face_model(folder: Path, version: int, name: str = "face", size: int = 4096,
               pre: Preprocess | None = None, outputs: tuple[tuple[int, ...], ...] = ((1, 128),)) -> Path:
    """Header-only kmodel plus its convert summary MODEL.kmodel.json."""
    path = fake_kmodel(folder / f"{name}.kmodel", version, size)
    (folder / f"{name}.kmodel.json").write_text(json.dumps(summary_dict(version, size, pre, outputs)))
    return path


def tiny_real_kmodel(folder: Path, name: str = "tiny", hw: int = 8, channels: int = 3) -> Path:
    """A real kmodel v5 (1x1 conv + flatten, uint8 NCHW input, mean/std inside) and its summary."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper, shape_inference

    from k210tool.tfutil import quiet_stderr

    rng = np.random.default_rng(0)
    weights = numpy_helper.from_array(rng.normal(size=(4, channels, 1, 1)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[1, 1]),
         helper.make_node("Flatten", ["y"], ["z"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, hw, hw])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4 * hw * hw])], [weights])
    onnx_model = shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]))
    onnx_model.ir_version = 7
    pre = Preprocess(height=hw, width=hw, channels=channels, mean=(127.5,), std=(128.0,),
                     color="RGB" if channels == 3 else "GRAY")
    with quiet_stderr():
        import nncase

        opts = nncase.CompileOptions()
        opts.target = "k210"
        opts.input_type = "uint8"
        opts.preprocess = True
        opts.input_range = [0.0, 255.0]
        opts.mean, opts.std = list(pre.mean), list(pre.std)
        # nncase 1.9 crashes unless all four of these are set
        opts.input_shape = [1, channels, hw, hw]
        opts.input_layout = opts.model_layout = opts.output_layout = "NCHW"
        opts.quant_type = opts.w_quant_type = "uint8"
        opts.dump_dir = str(folder)  # nncase writes kmodel_info.txt there (else into the working directory)
        compiler = nncase.Compiler(opts)
        compiler.import_onnx(onnx_model.SerializeToString(), nncase.ImportOptions())
        ptq = nncase.PTQTensorOptions()
        ptq.samples_count = 4
        ptq.set_tensor_data(rng.integers(0, 256, size=(4, channels, hw, hw), dtype=np.uint8).tobytes())
        compiler.use_ptq(ptq)
        compiler.compile()
        data = compiler.gencode_tobytes()
    path = folder / f"{name}.kmodel"
    path.write_bytes(data)
    (folder / f"{name}.kmodel.json").write_text(
        json.dumps(summary_dict(5, len(data), pre, outputs=((1, 4 * hw * hw),))))
    return path
