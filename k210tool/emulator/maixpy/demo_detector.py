"""A tiny, real YOLOv2-style "face" detector kmodel for the virtual board's demos and tests.

No face-detector kmodel can be downloaded here, and the face_recognition/enroll templates need one. This
module writes a small network, compiles it with nncase 1.9 (through :mod:`k210tool.compile`) and keeps a
summary beside it, so ``k210tool script --detector`` can place it. **It does not detect faces.** It marks
the grid cells of its input that are mostly covered by non-black pixels - a photo held in front of a black
background, which is how the demo and the end-to-end test compose their camera frames:

1. a 1x1 convolution sums the channels (``/ 8``) and ``Clip(0, 1)`` turns every pixel into "something
   there" (1) or "black" (0);
2. five stride-2 convolutions averaging 2x2 pixels each give each 32x32 cell's coverage (0..1);
3. a 1x1 convolution writes one anchor's region-layer planes per cell: x = y = w = h = 0 (a box of the
   anchor's size centred on the cell) and objectness ``gain * (coverage - 0.75)``, so a cell fires when more
   than 75 % of it is covered; one class (its softmax is 1).

With the defaults (input 160x160, 32-pixel cells: a 5x5 grid, as the templates' ``layer = ceil(size / 32)``
expects) and the anchor sized like the photo (:func:`anchor_for`), a 112x112 photo centred in a 320x240
frame gives one box, around the photo. The network's input and output
are the K210's: uint8 NCHW in, float32 ``(1, 6, rows, cols)`` out (channel-major, as the firmware's region
layer reads it).

    python -m k210tool.emulator.maixpy.demo_detector det.kmodel [--kmodel-version 4] \\
        [--frames-from PHOTO_OR_FOLDER... --frames-to CAMERA_FOLDER] [--demo-scene CAMERA_FOLDER --people N]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from k210tool.errors import InputError, K210ToolError
from k210tool.preprocess import Preprocess
from k210tool.report import Reporter

DEFAULT_SIZE = (160, 160)  # (width, height): 5 x 5 cells of 32 pixels (the KPU wants outputs of 4x4 and more)
CELL = 32
COVERAGE = 0.75  # a cell fires above this fraction of non-black pixels
GAIN = 10.0


def anchor_for(photo: tuple[int, int], frame: tuple[int, int], size: tuple[int, int] = DEFAULT_SIZE) -> tuple[float, float]:
    """The anchor (w, h in grid cells) of a ``photo`` (w, h pixels) shown in a camera ``frame`` (w, h)."""
    return (photo[0] * size[0] / frame[0] / CELL, photo[1] * size[1] / frame[1] / CELL)


def detector_onnx(size: tuple[int, int] = DEFAULT_SIZE, coverage: float = COVERAGE, gain: float = GAIN) -> bytes:
    """The ONNX graph (float NCHW input of raw 0..255 pixels). Every op maps onto a KPU convolution: the
    32x32 cell average is five 3x3 stride-2 convolutions that each average 2x2 pixels (the KPU's own
    stride-2 form), so the kmodel has no CPU compute op and runs on every engine k210tool has."""
    from onnx import TensorProto, helper, numpy_helper, shape_inference

    w, h = size
    if w % CELL or h % CELL or w > 320 or h > 240 or min(w, h) < 4 * CELL:
        raise InputError(f"detector input {w}x{h} must be a multiple of {CELL}, at least {4 * CELL} and at most "
                         "320x240 (the KPU's limits)")
    rows, cols = h // CELL, w // CELL
    head_w = np.zeros((6, 1, 1, 1), np.float32)
    head_w[4] = gain
    head_b = np.zeros(6, np.float32)
    head_b[4] = -gain * coverage
    mean2x2 = np.zeros((1, 1, 3, 3), np.float32)
    mean2x2[0, 0, 1:, 1:] = 0.25  # with padding 1 and stride 2: the mean of each 2x2 block
    arrays = {"sum_w": np.full((1, 3, 1, 1), 1.0 / 8.0, np.float32), "zero": np.zeros(1, np.float32),
              "mean_w": mean2x2, "lo": np.array(0.0, np.float32), "hi": np.array(1.0, np.float32),
              "head_w": head_w, "head_b": head_b}
    nodes = [helper.make_node("Conv", ["x", "sum_w", "zero"], ["s"], kernel_shape=[1, 1]),
             helper.make_node("Clip", ["s", "lo", "hi"], ["p0"])]
    for i in range(5):  # 2 ** 5 = CELL
        nodes.append(helper.make_node("Conv", [f"p{i}", "mean_w", "zero"], [f"p{i + 1}"], kernel_shape=[3, 3],
                                      strides=[2, 2], pads=[1, 1, 1, 1]))
    nodes.append(helper.make_node("Conv", ["p5", "head_w", "head_b"], ["y"], kernel_shape=[1, 1]))
    graph = helper.make_graph(nodes, "k210tool_demo_detector",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, h, w])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, rows, cols])],
                              [numpy_helper.from_array(a, n) for n, a in arrays.items()])
    model = shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]))
    model.ir_version = 7
    return model.SerializeToString()


def calibration_frames(size: tuple[int, int] = DEFAULT_SIZE, count: int = 8, seed: int = 0) -> np.ndarray:
    """Black frames with synthetic face photos at random places and sizes (uint8 NHWC)."""
    import cv2

    from k210tool.train.data.synthetic import identity_images

    w, h = size
    rng = np.random.default_rng(seed)
    frames = np.zeros((count, h, w, 3), np.uint8)
    for i in range(count):
        side = int(rng.integers(h // 3, h))
        photo = cv2.resize(identity_images(1000 + i, 1)[0], (side, side), interpolation=cv2.INTER_AREA)
        x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        frames[i, y:y + side, x:x + side] = photo
    return frames


def photo_frame(photo: np.ndarray, frame: tuple[int, int] = (320, 240), side: int = 112) -> np.ndarray:
    """A camera frame (``frame`` = w, h) showing ``photo`` resized to ``side`` pixels, centred on black."""
    import cv2

    w, h = frame
    out = np.zeros((h, w, 3), np.uint8)
    x, y = (w - side) // 2, (h - side) // 2
    out[y:y + side, x:x + side] = cv2.resize(np.asarray(photo, np.uint8)[..., :3], (side, side),
                                               interpolation=cv2.INTER_AREA)
    return out


def compose_frames(photos: list[Path], out_dir: Path | str, frame: tuple[int, int] = (320, 240)) -> list[Path]:
    """Write ``out_dir/000.png``... : one camera frame per photo (see :func:`photo_frame`), in order."""
    from k210tool.preprocess import load_image, save_image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, photo in enumerate(photos):
        path = out / f"{i:03d}.png"
        save_image(path, photo_frame(load_image(photo), frame))
        written.append(path)
    return written


ENROL_VARIATION = 0.0  # neutral renders to enrol
PROBE_VARIATION = 0.03  # small pose/light/noise changes: what the untrained demo MobileFaceNet still matches
STRANGER_SEED = 200


def demo_scene(out_dir: Path | str, people: int = 3, probes: int = 2, first_seed: int = 100) -> list[int | None]:
    """Camera frames for the enroll + face_recognition demo, written as ``out_dir/000.png``...: one neutral
    photo of each of ``people`` synthetic identities (seeds ``first_seed``...; enrol on these), then
    ``probes`` slightly different photos of each, then one of an identity nobody enrolled. Returns the
    identity seed each frame shows (None for the stranger)."""
    from k210tool.preprocess import save_image
    from k210tool.train.data.synthetic import identity_images

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seeds = list(range(first_seed, first_seed + people))
    shots = [(s, identity_images(s, 1, variation=ENROL_VARIATION, image_seed=1)[0]) for s in seeds]
    for s in seeds:
        shots += [(s, p) for p in identity_images(s, probes, variation=PROBE_VARIATION, image_seed=2)]
    shots.append((None, identity_images(STRANGER_SEED, 1, variation=PROBE_VARIATION, image_seed=2)[0]))
    for i, (_seed, photo) in enumerate(shots):
        save_image(out / f"{i:03d}.png", photo_frame(photo))
    return [seed for seed, _photo in shots]


def build_demo_detector(out: Path | str, kmodel_version: int = 5, size: tuple[int, int] = DEFAULT_SIZE,
                        reporter: Reporter | None = None) -> Path:
    """Compile the detector and write ``out`` (kmodel v5, or v4 transcoded) and ``out.json`` beside it."""
    from k210tool.compile.nncase_backend import NncaseSettings, compile_kmodel
    from k210tool.fileio import check_output_path, write_bytes, write_json

    if kmodel_version not in (4, 5):
        raise InputError(f"kmodel version {kmodel_version}: the demo detector is written as v4 or v5")
    path = check_output_path(out)
    w, h = size
    pre = Preprocess(height=h, width=w, mean=(0.0,), std=(1.0,))
    settings = NncaseSettings(pre, model_format="onnx", model_layout="NCHW")
    result = compile_kmodel(detector_onnx(size), settings, calibration_frames(size), reporter=reporter)
    data = result.kmodel
    if kmodel_version == 4:
        from k210tool.compile.kmodel import transcode_to_v4

        data = transcode_to_v4(data)
    summary = {
        "kmodel": str(path), "kmodel_version": kmodel_version, "kmodel_size": len(data),
        "inputs": [{"name": "input", "shape": [1, 3, h, w], "layout": "NCHW", "dtype": "uint8"}],
        "outputs": [{"name": "regions", "shape": [1, 6, h // CELL, w // CELL], "dtype": "float32"}],
        "preprocess": pre.to_dict(),
        "source": "k210tool demo detector (marks cells covered by non-black pixels; not a face detector)",
        "region_layer": {"anchors_per_cell": 1, "classes": 1, "cell": CELL, "coverage": COVERAGE},
    }
    write_bytes(path, data)
    write_json(Path(str(path) + ".json"), summary)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m k210tool.emulator.maixpy.demo_detector",
        description="Write the virtual board's demo detector kmodel (not a face detector) and, optionally, "
                    "camera frames that show photos the way it finds them (centred on black).")
    parser.add_argument("out", type=Path, help="output .kmodel (its summary goes to OUT.json)")
    parser.add_argument("--kmodel-version", type=int, choices=(4, 5), default=5)
    parser.add_argument("--frames-from", type=Path, nargs="+", default=[],
                        help="photos (files or folders, in order) to turn into camera frames")
    parser.add_argument("--frames-to", type=Path, default=None, help="folder for the camera frames")
    parser.add_argument("--demo-scene", type=Path, default=None, metavar="FOLDER",
                        help="write the demo's camera frames there: PEOPLE synthetic identities to enrol, two "
                             "probes of each, one stranger")
    parser.add_argument("--people", type=int, default=3, help="identities in --demo-scene")
    args = parser.parse_args(argv)
    try:
        path = build_demo_detector(args.out, args.kmodel_version)
        frames = []
        if args.frames_from:
            if args.frames_to is None:
                raise InputError("--frames-from needs --frames-to FOLDER")
            frames = compose_frames(_photos(args.frames_from), args.frames_to)
        if args.demo_scene is not None:
            frames = demo_scene(args.demo_scene, args.people)
    except K210ToolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps({"kmodel": str(path), "summary": str(path) + ".json",
                      "anchors": [round(a, 4) for a in anchor_for((112, 112), (320, 240))], "frames": len(frames)}))
    return 0


def _photos(items: list[Path]) -> list[Path]:
    from k210tool.preprocess import find_images

    photos: list[Path] = []
    for item in items:
        photos += find_images(item) if item.is_dir() else [item]
    return photos


if __name__ == "__main__":
    sys.exit(main())
