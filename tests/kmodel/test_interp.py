"""The NumPy interpreter against nncase's Simulator: identical outputs, bit for bit, on models compiled here."""

from __future__ import annotations

import numpy as np
import pytest

from k210tool.compile.kmodel.kpu import KpuLayer
from k210tool.errors import K210ToolError
from k210tool.sim.engine import NncaseEngine
from k210tool.sim.interp import NumpyEngine, kpuram
from k210tool.sim.interp import kpu as kpu_model
from k210tool.sim.interp.actfast import banker_shift


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.mark.parametrize("name", ["tiny_relu", "tiny_prelu", "tiny_leaky", "tiny_relu6"])
def test_v5_outputs_equal_the_simulator_bit_for_bit(compiled, name):
    data, images = compiled.kmodel(name), compiled.images(name)
    ours = NumpyEngine(data, chunk=4).run(images)  # 6 images: a full chunk and a partial one
    ref = NncaseEngine(data).run(images)
    assert len(ours) == len(ref) == 1
    assert _same_bits(ours[0], ref[0]), np.abs(ours[0] - ref[0]).max()
    assert np.abs(ours[0]).max() > 0.1  # a real embedding, not all zeros


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilefacenet", "mobilefacenet_kpu"])
def test_v5_mobilefacenet_equals_the_simulator_bit_for_bit(compiled, name):
    data, images = compiled.kmodel(name), compiled.images(name)[:3]
    ours = NumpyEngine(data).run(images)[0]
    ref = NncaseEngine(data).run(images)[0]
    assert ours.shape == (3, 128)
    assert _same_bits(ours, ref), np.abs(ours - ref).max()


def test_engine_rejects_a_wrong_input_shape(compiled):
    engine = NumpyEngine(compiled.kmodel("tiny_relu"))
    with pytest.raises(K210ToolError, match="does not match the kmodel input"):
        engine.run(np.zeros((2, 16, 16, 3), np.uint8))


# ------------------------------------------------------------------------ KPU functional model units
def test_kpu_ram_layout_round_trips_for_every_row_layout():
    rng = np.random.default_rng(0)
    ram = np.zeros((2, 1 << 16), np.uint8)
    for c, h, w in ((5, 3, 7), (3, 2, 20), (2, 2, 70), (4, 4, 64), (9, 1, 16)):
        x = rng.integers(0, 256, (2, 1, c, h, w), dtype=np.uint8)
        kpuram.upload(ram, 128, x)
        assert np.array_equal(kpuram.download(ram, 128, (1, c, h, w)), x)


def test_kpu_ram_layout_packs_narrow_channels_four_to_a_row():
    ram = np.zeros((1, 4096), np.uint8)
    x = np.arange(1, 1 + 5 * 2 * 3, dtype=np.uint8).reshape(1, 1, 5, 2, 3)
    kpuram.upload(ram, 0, x)
    rows = ram[0, : 2 * 2 * 64].reshape(2, 2, 64)  # 2 blocks of 4 channels, 2 image rows
    assert list(rows[0, 0, 16:19]) == list(x[0, 0, 1, 0])  # channel 1 sits 16 bytes into the row
    assert list(rows[1, 1, 0:3]) == list(x[0, 0, 4, 1])  # channel 4 starts the second block


def test_banker_shift_matches_the_runtime_including_negative_values():
    t = np.array([5, 6, 7, -3, -5, -6, 12, 0], np.int64)
    s = np.array([1, 2, 1, 1, 2, 2, 0, 3], np.int64)
    # carry_shift<int64, true>: floor, then +sign when the fraction is above half or half with an odd floor
    assert list(banker_shift(t, s)) == [2, 2, 4, -2, -3, -2, 12, 0]


def test_pooling_kinds():
    y = np.arange(16, dtype=np.uint8).reshape(1, 1, 4, 4)
    assert kpu_model.pool(y, 1, (1, 2, 2)).ravel().tolist() == [5, 7, 13, 15]  # max 2x2 s2
    assert kpu_model.pool(y, 2, (1, 2, 2)).ravel().tolist() == [2, 4, 10, 12]  # mean, floor
    assert kpu_model.pool(y, 5, (1, 2, 2)).ravel().tolist() == [0, 2, 8, 10]  # left-top select
    assert kpu_model.pool(y, 6, (1, 2, 2)).ravel().tolist() == [1, 3, 9, 11]  # right-top select
    s1 = kpu_model.pool(y, 9, (1, 4, 4))  # max 2x2 stride 1, zero beyond the edge
    assert s1[0, 0, 3].tolist() == [13, 14, 15, 15] and s1[0, 0, 0, 0] == 5


def test_layer_words_decode_named_fields():
    layer = KpuLayer((0,) * 12).replace(i_ch_num=63, o_ch_num=127, i_row_wid=55, i_col_high=55,
                                         o_row_wid=27, o_col_high=27, kernel_type=1, pool_type=5)
    assert layer.in_shape == (64, 56, 56) and layer.out_shape == (128, 28, 28)
    assert layer.filter_size == 3 and layer.pool_name == "left_top_2_s2"


# -------------------------------------------------------------------------- batches on threads
@pytest.mark.parametrize("n, chunk, workers, want", [
    (64, 16, 2, [16, 16, 16, 16]),
    (10, 16, 2, [5, 5]),
    (7, 2, 2, [2, 2, 2, 1]),
    (1, 16, 2, [1]),
    (5, 16, 1, [5]),
    (33, 16, 2, [9, 9, 9, 6]),
])
def test_images_are_split_into_batches_for_the_threads(n, chunk, workers, want):
    from k210tool.sim.interp import _split

    parts = _split(n, chunk, workers)
    assert [e - s for s, e in parts] == want
    assert parts[0][0] == 0 and parts[-1][1] == n and all(a[1] == b[0] for a, b in zip(parts[:-1], parts[1:], strict=True))


@pytest.mark.parametrize("name", ["tiny_relu", "tiny_prelu"])
def test_batches_on_threads_give_the_bytes_of_one_thread(compiled, name, monkeypatch):
    """Batches run concurrently on their own threads (and reuse each other's memory pools on a second run):
    the outputs equal a single-threaded run's, image for image, whatever the batch sizes."""
    data = compiled.kmodel(name)
    images = np.concatenate([compiled.images(name)] * 2)[:11]
    monkeypatch.setenv("K210TOOL_INTERP_THREADS", "1")
    want = NumpyEngine(data, chunk=3).run(images)[0]
    monkeypatch.setenv("K210TOOL_INTERP_THREADS", "3")
    engine = NumpyEngine(data, chunk=2)
    for batch in (images, images[::-1], images[:1]):
        got = engine.run(batch)[0]
        ref = want if batch is images else (want[::-1] if len(batch) == len(images) else want[:1])
        assert _same_bits(got, np.ascontiguousarray(ref))
    assert engine.run(images[:0])[0].shape == (0,) + want.shape[1:]


def test_lazy_kpu_ram_keeps_the_bytes_a_partly_overwritten_map_left():
    """Maps stored lazily, one partly overwriting another, then read back as bytes at other addresses and
    shapes: the same bytes as writing every map eagerly, in order."""
    rng = np.random.default_rng(5)
    n, size = 2, 1 << 15
    eager = np.zeros((n, size), np.uint8)
    lazy = kpuram.KpuRam(np.zeros((n, size), np.uint8))
    # 6-wide maps pack four channels to a 64-byte row: a 2-channel map over the second half of an 8-channel
    # one writes channel slots 0 and 1 only, and slots 2 and 3 keep the 8-channel map's bytes
    stores = [(0, (1, 8, 6, 6)), (2 * 64 * 6, (1, 4, 6, 6)), (4096, (1, 3, 10, 10)), (64 * 6, (1, 2, 6, 6)),
              (4096 + 320, (1, 1, 10, 10)), (2 * 64 * 6, (1, 2, 6, 6)), (2 * 64 * 6, (1, 4, 6, 6))]
    for start, shape in stores:
        x = rng.integers(0, 256, (n,) + shape, dtype=np.uint8)
        kpuram.upload(eager, start, x)
        lazy.store(start, shape, kpuram.to_cm(x))
    # an exact hit returns the newest map; other reads see the bytes
    last_start, last_shape = stores[-1]
    assert np.array_equal(kpuram.from_cm(lazy.load(last_start, last_shape), n),
                          kpuram.download(eager, last_start, last_shape))
    for start, shape in ((0, (1, 8, 6, 6)), (4096, (1, 3, 10, 10)), (0, (1, 16, 4, 4))):
        got = kpuram.from_cm(lazy.load(start, shape), n)
        assert np.array_equal(got, kpuram.download(eager, start, shape)), (start, shape)
    lazy.flush_range(0, size)
    assert np.array_equal(lazy.ram, eager)
