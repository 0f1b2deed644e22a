"""Netron's kmodel reader (an independent implementation, run with Node) parses every layer of our v4 files."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from k210tool.compile.kmodel import KpuConv, read_kmodel, transcode_to_v4

HERE = Path(__file__).parent
NODE = shutil.which("node")


@pytest.fixture(scope="module")
def netron_dir(tmp_path_factory) -> Path:
    if NODE is None:
        pytest.skip("Node.js is not installed")
    import netron

    src = Path(netron.__file__).parent
    work = tmp_path_factory.mktemp("netron")
    for name in ("base.js", "kmodel.js"):
        shutil.copy(src / name, work / name)
    (work / "package.json").write_text('{"type": "module"}')  # Netron's readers are ES modules
    shutil.copy(HERE / "netron_drive.mjs", work / "drive.mjs")
    return work


def _netron(work: Path, data: bytes) -> dict:
    path = work / "model.kmodel"
    path.write_bytes(data)
    proc = subprocess.run([NODE, str(work / "drive.mjs"), str(path)], capture_output=True, text=True, timeout=120)
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", ["tiny_relu", "tiny_prelu"])
def test_netron_parses_every_layer_of_our_v4(compiled, netron_dir, name):
    v4 = transcode_to_v4(compiled.kmodel(name))
    parsed = _netron(netron_dir, v4)
    assert "error" not in parsed, parsed
    assert parsed["format"] == "kmodel v4"
    ours = read_kmodel(v4).v4.nodes
    nodes = parsed["graphs"][0]["nodes"]
    assert [n["type"] for n in nodes] == [n.name for n in ours]
    for theirs, node in zip(nodes, ours, strict=True):
        if isinstance(node.op, KpuConv):  # Netron found the weights where the padding counts point
            (shape,) = theirs["weights"]
            assert int(np.prod(shape)) == node.op.weights.size
        if node.name == "conv2d":
            assert theirs["initializers"] == 2  # float weights and bias read inline


def test_netron_parses_the_v4_sample_like_we_do(netron_dir, samples):
    parsed = _netron(netron_dir, samples[4])
    assert [n["type"] for n in parsed["graphs"][0]["nodes"]] == [layer.op for layer in read_kmodel(samples[4]).layers]
