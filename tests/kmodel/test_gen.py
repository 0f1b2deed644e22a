"""The pieces of k210tool's KPU code generation, each against a reference that is not our own code."""

from __future__ import annotations

import numpy as np
import pytest

from k210tool.compile.kmodel import KpuConv, read_kmodel
from k210tool.compile.kmodel.gen.act import LayerScale, Zone, output_stage, segments_needed
from k210tool.compile.kmodel.gen.layer import (
    ConvArgs,
    LayerGeometry,
    Segment,
    activation,
    batch_norm,
    layer_words,
)
from k210tool.compile.kmodel.gen.pack import Option, pack
from k210tool.compile.kmodel.kpu import signed
from k210tool.compile.kmodel.stackvm import decode, lift
from k210tool.compile.kmodel.stackvm_asm import Assembler
from k210tool.compile.kmodel.v5write import write_v5_model
from k210tool.sim.interp.actfast import ActTable, bn_act_exact

NNCASE_MODELS = ("tiny_relu", "tiny_prelu", "tiny_leaky", "tiny_relu6")


def _v5_files(samples: dict, compiled: object) -> list[bytes]:
    return [samples[5]] + [compiled.kmodel(n) for n in NNCASE_MODELS]  # type: ignore[attr-defined]


def test_layer_words_rebuild_every_nncase_layer(samples: dict, compiled: object) -> None:
    """The structural fields (weight loads, row layout, write-back, DMA) follow nncase's emitter exactly."""
    count = 0
    for data in _v5_files(samples, compiled):
        for mod in read_kmodel(data).v5.modules:
            for fn in mod.functions:
                for op in fn.ops:
                    if not isinstance(op, KpuConv):
                        continue
                    L = op.layer
                    geom = LayerGeometry(L.in_shape, L.out_channels, L.filter_size, L.depthwise, L.pool_type,
                                         L.src_address, L.dst_address)
                    args = ConvArgs(signed(L.get("arg_x"), 24), L.get("shr_x"), signed(L.get("arg_w"), 24),
                                    L.get("shr_w"), signed(L.get("arg_add"), 40), L.get("pad_value"))
                    assert layer_words(geom, args, bool(L.get("send_data_out"))).words == L.words
                    bn = op.batch_norm
                    assert np.array_equal(batch_norm(bn.mul, bn.shift, bn.add).words, bn.words)
                    segs = [Segment(s["x_start"], s["y_mul"], s["shift"], s["bias"]) for s in op.activation.segments()]
                    assert activation(segs).segments() == op.activation.segments()
                    count += 1
    assert count > 120  # yolox alone has 120 layers


def test_v5_files_are_written_back_byte_for_byte(samples: dict, compiled: object) -> None:
    for data in _v5_files(samples, compiled):
        assert write_v5_model(read_kmodel(data).v5) == data


def test_assembled_stackvm_lifts_back_to_the_same_ops(compiled: object) -> None:
    ops_seen = set()
    for name in NNCASE_MODELS:
        km = read_kmodel(compiled.kmodel(name))  # type: ignore[attr-defined]
        ops = km.v5.modules[km.v5.entry_module].functions[0].ops
        asm = Assembler()
        for op in ops:
            asm.op(op.name, op.args)
        back = lift(decode(bytes(asm.code)))
        assert [(o.name, o.args) for o in back] == [(o.name, o.args) for o in ops]
        ops_seen |= {o.name for o in ops}
    assert {"call", "dequantize", "quantize"} <= ops_seen


def _run(zones: list[Zone], gain: np.ndarray, offset: np.ndarray, reach: np.ndarray, alu: np.ndarray) -> np.ndarray:
    bn, act, _unit = output_stage(LayerScale(gain, offset, reach, np.arange(len(zones))), zones)
    segs = act.segments()
    table = ActTable(*(np.array([s[k] for s in segs], np.int64) for k in ("x_start", "y_mul", "shift", "bias")))
    return bn_act_exact(np.broadcast_to(alu, (len(zones), len(alu))).copy(), None, (bn.mul, bn.shift, bn.add), table)


@pytest.mark.parametrize("seed", range(12))
def test_zones_give_each_channel_its_own_prelu(seed: int) -> None:
    """Several PReLU shapes in one table: every channel gets its own activation over every alu it can reach.

    Increasing arms round exactly; decreasing arms take the runtime's carry_shift on negative products
    (floor, then one more step down past a half), which is at most 2 output steps low."""
    rng = np.random.default_rng(seed)
    zones, n = [], 5  # unchained: up to 3 segments each
    for _ in range(n):
        a = float(rng.choice([-1.7, -0.4, 0.0, 0.3, 1.8]) + rng.uniform(-0.05, 0.05))
        orient = float(rng.choice([1.0, -1.0]))
        zones.append(Zone(orient * a, orient, int(rng.integers(20, 236))))
    gain = rng.uniform(0.005, 0.3, n)
    offset = rng.uniform(-30, 30, n)
    reach = 3000 * gain
    alu = np.arange(-3000, 3001, dtype=np.int64)
    out = _run(zones, gain, offset, reach, alu)
    for k, z in enumerate(zones):
        u = gain[k] * alu + offset[k]
        arm = np.where(u > 0, z.right, z.left)
        ideal = np.clip(np.rint(z.zero + arm * u), 0, 255)
        diff = out[k].astype(int) - ideal
        rising = arm >= 0
        assert np.abs(diff[rising]).max(initial=0) <= 1, (k, z)  # within the floor of y
        assert diff[~rising].min(initial=0) >= -2 and diff[~rising].max(initial=0) <= 1, (k, z)


def test_seven_chained_zones_fit_one_table_and_mismatched_ones_cost_guards() -> None:
    up, down = Zone(0.3, 1.0, 40), Zone(-0.3, -1.0, 200)
    assert segments_needed([up, down] * 3 + [up]) == 15  # one guard, then 2 per zone
    assert segments_needed([up] * 3) == 9  # each up zone after another starts from the wrong end
    options = [[Option(Zone(0.1 * (i + 1), 1.0, 30), 1.0, 1.0, 30), Option(Zone(-0.1 * (i + 1), -1.0, 225),
                                                                          -1.0, 1.0, 225)] for i in range(14)]
    groups = pack(options, 1, free_order=True)
    assert [len(g.channels) for g in groups] == [7, 7]
    assert all(segments_needed(g.zones) <= 16 for g in groups)


def test_padded_zone_groups_never_take_a_map_past_the_kpus_1024_channels() -> None:
    # PReLU channels that do not chain: five per table, each group padded to the 4-channel row blocks of a
    # narrow map, would store 800 channels as 1280; a dense layer reading them would have its channel count
    # cut to 10 bits. With the limit the groups are consecutive runs of whole row blocks, unpadded.
    options = [[Option(Zone(0.1 + 0.001 * i, 1.0, 30), 1.0, 1.0, 30)] for i in range(800)]
    padded = pack(options, 4, free_order=True)
    assert sum(len(g.channels) for g in padded) > 1024
    groups = pack(options, 4, free_order=True, limit=1024)
    assert sum(len(g.channels) for g in groups) == 800 and all(len(g.channels) % 4 == 0 for g in groups)
    assert all(segments_needed(g.zones) <= 16 for g in groups)
    with pytest.raises(ValueError, match="1024 channels"):
        layer_words(LayerGeometry((1100, 4, 4), 128, 1, False, 0, 0, 0), ConvArgs(-128, 0, 0, 0, 0, 0))


def test_adds_wider_than_a_kpu_layer_reads_stay_on_the_cpu() -> None:
    from k210tool.compile.netplan import Add, place, plan_from_graph
    from k210tool.model.graph import annotate_shapes, graph_from_model
    from k210tool.tfutil import import_tf_keras

    k = import_tf_keras()
    inp = k.Input((8, 8, 3))
    for c, on_kpu in ((512, True), (640, False)):  # the add's one layer reads both operands: 2 x 640 > 1024
        a = k.layers.Conv2D(c, 1)(inp)
        x = k.layers.Add()([a, k.layers.Conv2D(c, 1)(a)])
        model = k.Model(inp, k.layers.Dense(8)(k.layers.GlobalAveragePooling2D()(x)))
        graph = graph_from_model(model)
        annotate_shapes(graph, model)
        plan = plan_from_graph(graph)
        place(plan)
        assert [op.kpu for op in plan.ops if isinstance(op, Add)] == [on_kpu]
