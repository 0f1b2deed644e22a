"""Child process that runs one nncase 1.9 compile (``python -m k210tool.compile._nncase_worker JOBDIR``).

nncase is C++ that prints to stdout and can abort or segfault on input it does not like; running it in a
child keeps the parent alive to report a clear error and never leaves a partial kmodel. The job folder holds
``job.json`` (CompileOptions fields), ``model.bin`` (tflite/onnx), ``calib.npy`` (uint8 samples in the
kmodel's input layout); the child writes ``model.kmodel`` there.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def run(job_dir: Path) -> int:
    import numpy as np  # noqa: I001 - numpy before nncase, the order this worker was validated with
    import nncase

    job = json.loads((job_dir / "job.json").read_text())
    co = nncase.CompileOptions()
    for key, value in job["options"].items():
        setattr(co, key, value)
    if job.get("dump_dir"):
        co.dump_ir = True
        co.dump_asm = True
        co.dump_dir = job["dump_dir"]
    compiler = nncase.Compiler(co)
    model = (job_dir / "model.bin").read_bytes()
    io = nncase.ImportOptions()
    if job["format"] == "onnx":
        compiler.import_onnx(model, io)
    else:
        compiler.import_tflite(model, io)
    calib = np.load(job_dir / "calib.npy")
    ptq = nncase.PTQTensorOptions()
    ptq.samples_count = int(calib.shape[0])
    if job.get("calibrate_method"):
        ptq.calibrate_method = job["calibrate_method"]
    ptq.set_tensor_data(np.ascontiguousarray(calib).tobytes())
    compiler.use_ptq(ptq)
    compiler.compile()
    kmodel = compiler.gencode_tobytes()
    (job_dir / "model.kmodel").write_bytes(bytes(kmodel))
    print("K210TOOL-DONE", flush=True)
    return 0


if __name__ == "__main__":
    from k210tool.child import die_with_parent

    die_with_parent()
    sys.exit(run(Path(sys.argv[1])))
