"""The weights floor behind the early refusal: never above what a compiler reaches, tight where it can be."""

from __future__ import annotations

from typing import Any

from k210tool.model.graph import graph_from_model
from k210tool.model.size import weight_floor
from k210tool.tfutil import import_tf_keras


def _graph(build: Any) -> Any:
    k = import_tf_keras()
    inp = k.Input((8, 8, 3))
    return graph_from_model(k.Model(inp, build(k.layers, inp)))


def test_convolution_and_dense_kernels_count_a_byte_each_and_nothing_else() -> None:
    def build(L: Any, x: Any) -> Any:
        x = L.BatchNormalization()(L.Conv2D(8, 3, padding="same", name="c")(x))  # 216 weights + bias + BN
        x = L.PReLU(shared_axes=[1, 2])(L.DepthwiseConv2D(3, padding="same")(x))  # not counted
        return L.Dense(4, activation="relu", name="d")(L.GlobalAveragePooling2D()(x))  # 32

    floor = weight_floor(_graph(build))
    assert floor.bytes == 216 + 32 and floor.largest[0] == ("c", 216) and not floor.cpu


def test_a_linear_dense_chain_counts_its_cheapest_merge_and_an_activation_breaks_it() -> None:
    def chain(act: str | None) -> Any:
        def build(L: Any, x: Any) -> Any:
            x = L.GlobalAveragePooling2D()(L.Conv2D(64, 1, name="c")(x))  # 192
            x = L.BatchNormalization()(L.Dense(4000, activation=act, name="wide")(x))
            return L.Dense(16, name="embedding")(L.Dropout(0.1)(x))
        return build

    assert weight_floor(_graph(chain(None))).bytes == 192 + 64 * 16  # k210tool's backend multiplies them out
    assert weight_floor(_graph(chain("relu"))).bytes == 192 + 64 * 4000 + 4000 * 16
    # nncase merges nothing and keeps the 4000-wide layers in float32 on the CPU
    nn = weight_floor(_graph(chain(None)), nncase=True)
    assert nn.bytes == 192 + 4 * (64 * 4000 + 4000 * 16) and nn.cpu == ["wide", "embedding"]


def test_nncase_keeps_kernels_the_kpu_lacks_in_float32() -> None:
    def build(L: Any, x: Any) -> Any:
        x = L.Conv2D(8, 5, padding="same", name="five")(x)  # 600: 5x5, CPU
        x = L.Conv2D(8, 3, dilation_rate=2, padding="same", name="dilated")(x)  # 576: dilated, CPU
        x = L.Conv2D(8, 3, padding="same", groups=2, name="grouped")(x)  # 288: grouped, CPU
        x = L.Conv2D(8, 3, padding="same", groups=8, name="depthwise")(x)  # 72: depthwise by groups: KPU
        return L.Conv2D(4, 1, name="kpu")(x)  # 32
    g = _graph(build)
    assert weight_floor(g).bytes == 600 + 576 + 288 + 72 + 32
    nn = weight_floor(g, nncase=True)
    assert nn.bytes == 4 * (600 + 576 + 288) + 72 + 32 and nn.cpu == ["five", "dilated", "grouped"]


def test_the_kpu_ram_of_the_biggest_layer_nncase_gives_the_kpu() -> None:
    from k210tool.model.graph import annotate_shapes
    from k210tool.model.size import KPU_RAM, nncase_kpu_ram

    k = import_tf_keras()
    L = k.layers
    inp = k.Input((56, 56, 8))
    x = L.Conv2D(1100, 1, name="wide")(inp)  # more than 1024 channels (3.9 MB in KPU rows): the CPU's
    x = L.Conv2D(384, 1, name="narrow")(x)  # reads 1100 channels: the CPU's too
    x = L.DepthwiseConv2D(3, 2, padding="same", name="dw")(x)  # nncase: stride 1 on the KPU, 56x56 out
    x = L.Conv2D(64, 3, 2, padding="same", name="dense_s2")(x)  # its 2x2 pool: 28x28x384 -> 14x14x64
    model = k.Model(inp, x)
    g = graph_from_model(model)
    annotate_shapes(g, model)
    name, what, need = nncase_kpu_ram(g)
    assert (name, what) == ("dw", "DepthwiseConv2D on 56x56x384 -> 56x56x384") and need == 2 * 384 * 56 * 64 > KPU_RAM
