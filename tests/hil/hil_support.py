"""Helpers of the virtual-board tests: small real kmodels compiled with nncase 1.9 through k210tool's own
backend (built once per session), and running a script on an emulated board.

- ``face``: a tiny "face embedding" network (3x32x32 -> three 3x3 stride-2 convs, ReLU -> 8x4x4 = 128
  output), seeded weights; every op runs on the KPU.
- ``big``: a 1x1 convolution on a 320x240 image with a float output of 12x240x320 values, so nncase's
  TOTAL (about 4.8 MB) exceeds what every MicroPython firmware leaves for models.
- ``detector``: the demo detector of :mod:`k210tool.emulator.maixpy.demo_detector`.

Each is written as ``NAME.kmodel`` (v5, nncase's own output) and ``NAME_v4.kmodel`` (transcoded), with a
summary ``.kmodel.json`` that carries what the script templates read (input, outputs, preprocessing).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from xdist_once import build_once

FACE_SIZE = 32
EMBEDDING = 128


def _onnx(nodes: list, inputs: list, outputs: list, arrays: dict[str, np.ndarray]) -> bytes:
    from onnx import helper, numpy_helper, shape_inference

    graph = helper.make_graph(nodes, "hil_test", inputs, outputs,
                              [numpy_helper.from_array(a.astype(np.float32), n) for n, a in arrays.items()])
    model = shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]))
    model.ir_version = 7
    return model.SerializeToString()


def face_onnx() -> bytes:
    from onnx import TensorProto, helper

    rng = np.random.default_rng(7)
    chans = [3, 16, 16, 8]
    arrays, nodes, x = {}, [], "x"
    for i in range(3):
        arrays[f"w{i}"] = rng.normal(0, 1 / np.sqrt(9 * chans[i]), (chans[i + 1], chans[i], 3, 3))
        arrays[f"b{i}"] = rng.normal(0, 0.05, chans[i + 1])
        nodes.append(helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], kernel_shape=[3, 3],
                                      strides=[2, 2], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]) if i < 2 else
                     helper.make_node("Identity", [f"c{i}"], [f"r{i}"]))
        x = f"r{i}"
    nodes.append(helper.make_node("Flatten", [x], ["y"]))
    return _onnx(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, FACE_SIZE, FACE_SIZE])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, EMBEDDING])], arrays)


def big_onnx() -> bytes:
    from onnx import TensorProto, helper

    arrays = {"w": np.random.default_rng(3).normal(0, 0.3, (12, 3, 1, 1)), "b": np.zeros(12)}
    return _onnx([helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[1, 1])],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 240, 320])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 12, 240, 320])], arrays)


def _compile(onnx_bytes: bytes, h: int, w: int, folder: Path, name: str, out_shape: list[int]) -> None:
    from k210tool.compile.kmodel import transcode_to_v4
    from k210tool.compile.nncase_backend import NncaseSettings, compile_kmodel
    from k210tool.preprocess import Preprocess
    from k210tool.train.data.synthetic import identity_images

    pre = Preprocess(height=h, width=w)  # (x - 127.5) / 128, the project's default
    calib = np.stack([pre.prepare(img) for img in identity_images(900, 4)])
    v5 = compile_kmodel(onnx_bytes, NncaseSettings(pre, model_format="onnx", model_layout="NCHW"), calib).kmodel
    for suffix, data, version in (("", v5, 5), ("_v4", transcode_to_v4(v5), 4)):
        summary = {"kmodel_version": version, "kmodel_size": len(data),
                   "inputs": [{"name": "input", "shape": [1, 3, h, w], "layout": "NCHW", "dtype": "uint8"}],
                   "outputs": [{"name": "output", "shape": out_shape, "dtype": "float32"}],
                   "preprocess": pre.to_dict()}
        (folder / f"{name}{suffix}.kmodel").write_bytes(data)
        (folder / f"{name}{suffix}.kmodel.json").write_text(json.dumps(summary))


def build(folder: Path, name: str) -> None:
    if name == "face":
        _compile(face_onnx(), FACE_SIZE, FACE_SIZE, folder, "face", [1, EMBEDDING])
    elif name == "big":
        _compile(big_onnx(), 240, 320, folder, "big", [1, 12, 240, 320])
    elif name == "detector":
        from k210tool.emulator.maixpy.demo_detector import build_demo_detector

        build_demo_detector(folder / "detector.kmodel", 5)
        build_demo_detector(folder / "detector_v4.kmodel", 4)
    else:
        raise KeyError(name)


class ModelCache:
    """Build each model once per test session, shared by the xdist workers (tests/xdist_once.py)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, name: str, version: int = 5) -> Path:
        folder = build_once(self.root, name, lambda f: build(f, name))
        return folder / f"{name}{'' if version == 5 else '_v4'}.kmodel"


def run_on(emu: object, source: str, timeout: float = 60) -> tuple[str, str]:
    """Run ``source`` on an emulated board over its serial port: (output, traceback), newlines normalised."""
    from k210tool.device.deploy import run_script
    from k210tool.device.transport import open_transport

    out = bytearray()
    with open_transport(emu.port) as t:  # type: ignore[attr-defined]
        res = run_script(t, source, on_output=out.extend, timeout=timeout)
    return out.decode("utf-8", "replace").replace("\r\n", "\n"), res.traceback.replace("\r\n", "\n")
