"""Reading kmodel v3/v4/v5: the three sample files, nncase 1.9 output, byte-exact v4 write-back."""

from __future__ import annotations

from collections import Counter

import pytest

from k210tool.compile.kmodel import KmodelError, kmodel_version, read_kmodel, write_v4
from k210tool.compile.kmodel.stackvm import decode
from k210tool.errors import K210ToolError


def test_versions_of_the_samples(samples):
    assert {v: kmodel_version(data) for v, data in samples.items()} == {3: 3, 4: 4, 5: 5}


def test_v3_sample_is_a_chain_of_kpu_convs(samples):
    m = read_kmodel(samples[3])
    ops = Counter(layer.op for layer in m.layers)
    assert ops == {"K210_CONV": 16, "CHANNELWISE_DEQUANTIZE": 1}
    first = m.layers[0].kpu
    assert first is not None and first.in_shape == (3, 240, 320) and first.out_shape == (16, 120, 160)
    assert m.inputs[0].shape == (1, 3, 240, 320)
    # the 125-channel 7x10 YOLO head, dequantized to float
    assert m.outputs[0].dtype == "float32" and m.outputs[0].shape == (125 * 7 * 10,)


def test_v4_sample_writes_back_byte_for_byte(samples):
    m = read_kmodel(samples[4])
    assert Counter(layer.op for layer in m.layers)["kpu_conv2d"] == 42
    assert [o.memory.size for o in m.outputs] == [35360, 70720]
    assert write_v4(m) == samples[4]


def test_v4_writer_is_not_a_byte_copy(samples):
    """Changing a decoded field changes exactly the bytes of that field."""
    m = read_kmodel(samples[4])
    conv = m.v4.nodes[0].op
    m.v4.nodes[0].op.layer = conv.layer.replace(pad_value=7)
    out = write_v4(m)
    diff = [i for i, (a, b) in enumerate(zip(out, samples[4], strict=True)) if a != b]
    assert len(diff) == 1 and out[diff[0]] == 7


def test_v5_sample_kpu_part_reads_and_foreign_bytecode_is_reported(samples):
    m = read_kmodel(samples[5])
    ops = Counter(layer.op for layer in m.layers)
    assert (ops["kpu_conv2d"], ops["kpu_upload"], ops["kpu_download"]) == (120, 27, 52)
    assert m.inputs[0].shape == (1, 3, 224, 224) and m.outputs[0].shape == (1, 1029, 85)
    (error,) = m.errors()
    assert "unknown stackvm tensor function" in error and "nncase 1.9" in error


def test_nncase19_output_decodes_completely(compiled):
    m = read_kmodel(compiled.kmodel("tiny_prelu"))
    assert m.version == 5 and m.errors() == []
    stackvm = m.v5.modules[0]
    assert stackvm.type == "stackvm"
    main = stackvm.functions[0]
    # every byte of the main function's code is an instruction, and every tensor instruction became an op
    assert sum(1 for i in main.instructions if i.name.startswith("tensor.")) == len(main.ops)
    calls = [op for op in main.ops if op.name == "call"]
    assert calls and all(op.args["module"] == 1 for op in calls)
    assert {layer.op for layer in m.layers} >= {"kpu_conv2d", "kpu_upload", "dequantize", "quantize", "conv2d"}
    assert m.inputs[0].shape == (1, 3, 32, 32) and m.outputs[0].shape == (1, 32)


def test_unknown_opcode_is_named(compiled):
    m = read_kmodel(compiled.kmodel("tiny_relu"))
    text = bytearray(m.v5.modules[0].functions[0].text)
    first_tensor = next(i for i in m.v5.modules[0].functions[0].instructions if i.name.startswith("tensor."))
    text[first_tensor.offset + 1 : first_tensor.offset + 3] = (0x7777).to_bytes(2, "little")
    with pytest.raises(KmodelError, match="unknown stackvm tensor function 0x7777 at .text"):
        decode(bytes(text), "stackvm function 0")
    text[0] = 0xEE
    with pytest.raises(KmodelError, match="unknown stackvm opcode 0xEE at .text\\+0"):
        decode(bytes(text))


@pytest.mark.parametrize("blob", [b"", b"LDMK", b"LDMK\x07\x00\x00\x00" + bytes(40), b"\x00" * 64, b"GIF89a..."])
def test_not_a_kmodel(blob):
    with pytest.raises(KmodelError) as info:
        read_kmodel(blob)
    assert isinstance(info.value, K210ToolError) and "\n" not in str(info.value)


def test_truncated_samples_fail_cleanly(samples):
    for data in samples.values():
        for cut in (40, len(data) // 3, len(data) - 200):
            with pytest.raises(KmodelError, match="truncated|overruns|outside|do not fit|missing"):
                read_kmodel(data[:cut])
