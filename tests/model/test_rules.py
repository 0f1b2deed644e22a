"""Each KPU rewrite rule on a tiny model: what it changes, and the float before/after it promises."""

from __future__ import annotations

import numpy as np
import pytest
from model_factory import predict, tiny_backbone

from k210tool.model.graph import annotate_shapes, graph_from_model
from k210tool.model.rewrite import EXACT_COSINE, RewriteOptions, rewrite
from k210tool.tfutil import import_tf_keras


def _run(model, size: int, **opts):  # type: ignore[no-untyped-def]
    g = graph_from_model(model)
    annotate_shapes(g, model)
    x = np.random.default_rng(0).normal(0, 1, (8, size, size, 3)).astype(np.float32)
    done = rewrite(g, model, x, RewriteOptions(**opts), "test")
    return done.graph, done.model, done.report, x


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return float(np.min(np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))


def _model(build, size: int):  # type: ignore[no-untyped-def]
    k = import_tf_keras()
    k.utils.set_random_seed(0)
    inp = k.Input((size, size, 3), name="image")
    return k.Model(inp, build(k.layers, inp))


def test_dropout_is_removed_exactly() -> None:
    m = _model(lambda L, x: L.Flatten()(L.Dropout(0.5)(L.Conv2D(4, 3, padding="same")(x))), 9)
    g, new, rep, x = _run(m, 9, only=("dropout",))
    assert [c.rule for c in rep.changes] == ["dropout"] and rep.exact
    assert not any(n.class_name == "Dropout" for n in g)
    assert rep.rules[0].cosine_min >= EXACT_COSINE
    np.testing.assert_allclose(predict(new, x), predict(m, x), rtol=1e-6, atol=1e-6)


def test_prelu_becomes_relu_and_is_reported_not_exact() -> None:
    k = import_tf_keras()
    m = _model(lambda L, x: L.Flatten()(L.PReLU(alpha_initializer=k.initializers.Constant(0.3), shared_axes=[1, 2])(
        L.Conv2D(4, 3, padding="same")(x))), 9)
    g, new, rep, x = _run(m, 9, only=("prelu",), prelu="relu")
    assert len(rep.changes) == 1 and not rep.changes[0].exact and not rep.exact
    assert [n.class_name for n in g][-2] == "ReLU"
    assert rep.rules[0].cosine_mean < 0.9999  # the negative half changed
    expected = predict(k.Model(m.input, m.layers[1].output), x)
    np.testing.assert_allclose(predict(new, x), np.maximum(expected, 0).reshape(len(x), -1), rtol=1e-5, atol=1e-5)


def test_prelu_with_zero_slopes_is_exact_and_leaky_uses_the_mean_slope() -> None:
    k = import_tf_keras()
    m = _model(lambda L, x: L.Flatten()(L.PReLU(shared_axes=[1, 2])(L.Conv2D(4, 3, padding="same")(x))), 9)
    _, _, rep, _ = _run(m, 9, only=("prelu",), prelu="relu")
    assert rep.exact and rep.rules[0].cosine_min >= EXACT_COSINE
    m2 = _model(lambda L, x: L.Flatten()(L.PReLU(alpha_initializer=k.initializers.Constant(0.2), shared_axes=[1, 2])(
        L.Conv2D(4, 3, padding="same")(x))), 9)
    g, new, rep, x = _run(m2, 9, only=("prelu",), prelu="leaky")
    assert any(n.class_name == "LeakyReLU" for n in g) and rep.exact
    np.testing.assert_allclose(predict(new, x), predict(m2, x), rtol=1e-5, atol=1e-5)


def test_prelu_keep_changes_nothing() -> None:
    m = _model(lambda L, x: L.Flatten()(L.PReLU()(L.Conv2D(4, 3, padding="same")(x))), 9)
    _, _, rep, _ = _run(m, 9, only=("prelu",), prelu="keep")
    assert rep.changes == []


@pytest.mark.parametrize("size,exact", [(9, True), (8, False)])
def test_same_stride2_becomes_symmetric_padding(size: int, exact: bool) -> None:
    m = _model(lambda L, x: L.Flatten()(L.DepthwiseConv2D(3, 2, padding="same")(L.Conv2D(4, 3, 2, padding="same")(x))),
               size)
    g, new, rep, x = _run(m, size, only=("symmetric-stride2",), approximate=("symmetric-stride2",))
    assert len(rep.changes) == 2 and rep.exact is exact
    assert sum(n.class_name == "ZeroPadding2D" for n in g) == 2
    assert all(n.get("padding") == "valid" for n in g if n.class_name in ("Conv2D", "DepthwiseConv2D"))
    assert new.output_shape == m.output_shape
    if exact:
        assert rep.rules[0].cosine_min >= EXACT_COSINE
        np.testing.assert_allclose(predict(new, x), predict(m, x), rtol=1e-5, atol=1e-5)
    else:
        assert _cos(predict(new, x), predict(m, x)) < 0.9999


def test_asymmetric_zeropad_before_stride2_becomes_symmetric() -> None:
    m = _model(lambda L, x: L.Flatten()(L.Conv2D(4, 3, 2, padding="valid")(L.ZeroPadding2D(((0, 1), (0, 1)))(x))), 8)
    g, new, rep, _ = _run(m, 8, only=("symmetric-zeropad",), approximate=("symmetric-zeropad",))
    assert len(rep.changes) == 1 and not rep.exact
    pad = next(n for n in g if n.class_name == "ZeroPadding2D")
    assert [list(p) for p in pad.get("padding")] == [[1, 1], [1, 1]]
    assert new.output_shape == m.output_shape


def test_dense_on_flattened_1x1_becomes_conv_exactly() -> None:
    m = _model(lambda L, x: L.Dense(6, name="emb")(L.Flatten()(L.Conv2D(5, 7)(x))), 7)
    g, new, rep, x = _run(m, 7, only=("dense-to-conv",))
    assert len(rep.changes) == 1 and rep.exact
    assert not any(n.class_name == "Dense" for n in g)
    np.testing.assert_allclose(predict(new, x), predict(m, x), rtol=1e-5, atol=1e-5)


def test_batchnorm_after_dense_is_folded_exactly() -> None:
    k = import_tf_keras()
    m = _model(lambda L, x: L.BatchNormalization(name="bn")(L.Dense(6)(L.GlobalAveragePooling2D()(
        L.Conv2D(5, 3)(x)))), 9)
    bn = m.get_layer("bn")
    rng = np.random.default_rng(3)
    bn.set_weights([rng.uniform(0.5, 2, 6), rng.normal(0, 1, 6), rng.normal(0, 1, 6), rng.uniform(0.5, 2, 6)])
    g, new, rep, x = _run(m, 9, only=("fold-batchnorm",))
    assert len(rep.changes) == 1 and rep.exact and not any(n.class_name == "BatchNormalization" for n in g)
    assert rep.rules[0].cosine_min >= EXACT_COSINE
    np.testing.assert_allclose(predict(new, x), predict(m, x), rtol=1e-4, atol=1e-4)
    del k


def test_input_model_is_not_mutated_and_whole_report_adds_up() -> None:
    m = tiny_backbone(size=33)
    before = [w.copy() for w in m.get_weights()]
    config = m.get_config()
    g, new, rep, _ = _run(m, 33, prelu="relu", approximate=("symmetric-stride2",))
    assert {c.rule for c in rep.changes} == {"prelu", "symmetric-stride2"}
    assert sum(r.changes for r in rep.rules) == len(rep.changes)
    assert rep.cosine is not None and rep.next_steps
    assert m.get_config() == config
    assert all(np.array_equal(a, b) for a, b in zip(before, m.get_weights(), strict=True))
    assert not any(n.class_name == "PReLU" for n in g)


def test_unknown_rule_is_an_input_error() -> None:
    from k210tool.errors import InputError
    from k210tool.model.rewrite import selected_rules

    with pytest.raises(InputError, match="unknown rewrite rule"):
        selected_rules(RewriteOptions(only=("nope",)))


def test_approximate_rules_run_only_when_asked() -> None:
    from k210tool.model.rewrite import selected_rules

    default = {r.name for r in selected_rules(RewriteOptions())}
    assert default == {"dropout", "rotate180", "dense-to-conv", "fold-batchnorm"}
    asked = {r.name for r in selected_rules(RewriteOptions(prelu="leaky", approximate=("symmetric-stride2",)))}
    assert {"prelu", "symmetric-stride2"} <= asked and "symmetric-zeropad" not in asked


def _turned(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x[:, ::-1, ::-1])


@pytest.mark.parametrize("size", [8, 16])
def test_rotation_makes_tf_same_stride2_exact_on_the_kpus_grid(size: int) -> None:
    """Even sizes: TF 'same' stride 2 samples odd centres; turned by 180 degrees they are the KPU's even ones."""
    k = import_tf_keras()
    m = _model(lambda L, x: L.Dense(5)(L.Flatten()(L.DepthwiseConv2D(3, 1, padding="same")(L.Conv2D(6, 1, 2)(
        L.PReLU(shared_axes=[1, 2])(L.DepthwiseConv2D(3, 2, padding="same")(L.Conv2D(4, 3, 2, padding="same")(x))))))),
        size)
    del k
    g, new, rep, x = _run(m, size)
    assert rep.input_rotation == 180 and g.input_rotation == 180 and rep.exact
    assert "rotate180" in {c.rule for c in rep.changes} and all(c.exact for c in rep.changes)
    convs = [n for n in g if n.class_name in ("Conv2D", "DepthwiseConv2D")]
    # every stride-2 conv is now padding 1 on each side + 'valid' (the 1x1 one became a 3x3 with a corner tap)
    for n in convs:
        if tuple(n.get("strides")) == (2, 2):
            assert n.get("padding") == "valid" and tuple(n.get("kernel_size")) == (3, 3)
            pad = g.nodes[n.inputs[0].layer]
            assert pad.class_name == "ZeroPadding2D" and [list(p) for p in pad.get("padding")] == [[1, 1], [1, 1]]
    # the Dense after the Flatten reads the turned map: its rows were reordered, so the output is the same
    np.testing.assert_allclose(predict(new, _turned(x)), predict(m, x), rtol=1e-5, atol=1e-5)
    assert rep.rules[0].cosine_min >= EXACT_COSINE


def test_mobilenetv2_padding_is_turned_too() -> None:
    m = _model(lambda L, x: L.GlobalAveragePooling2D()(L.Conv2D(4, 3, 2, padding="valid")(L.ZeroPadding2D(((0, 1), (0, 1)))(
        L.Conv2D(4, 3, padding="same")(x)))), 8)
    g, new, rep, x = _run(m, 8)
    assert rep.input_rotation == 180 and rep.exact
    pad = next(n for n in g if n.class_name == "ZeroPadding2D")
    assert [list(p) for p in pad.get("padding")] == [[1, 1], [1, 1]]
    np.testing.assert_allclose(predict(new, _turned(x)), predict(m, x), rtol=1e-5, atol=1e-5)


def test_no_rotation_when_the_grid_is_already_the_kpus_or_cannot_be() -> None:
    aligned = _model(lambda L, x: L.Flatten()(L.Conv2D(4, 3, 2, padding="valid")(L.ZeroPadding2D(1)(x))), 8)
    assert _run(aligned, 8)[2].input_rotation == 0
    odd = _model(lambda L, x: L.Flatten()(L.Conv2D(4, 3, 2, padding="same")(x)), 9)  # TF pads (1,1): aligned
    assert _run(odd, 9)[2].input_rotation == 0
    blocked = _model(lambda L, x: L.GlobalAveragePooling2D()(L.MaxPooling2D(3, 2)(L.Conv2D(4, 3, 2, padding="same")(x))),
                     16)
    rep = _run(blocked, 16)[2]
    assert rep.input_rotation == 0 and rep.changes == []  # a 3x3/2 pool moves under the turn: left alone
    spatial = _model(lambda L, x: L.Conv2D(4, 3, 2, padding="same")(x), 16)  # the output map would come out turned
    assert _run(spatial, 16)[2].input_rotation == 0
