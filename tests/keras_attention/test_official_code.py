"""Fidelity to the papers' official code: each layer, in the configuration that reproduces
an official module, against a NumPy transcription of that module (see official_code.py
for the sources and commits), with every weight and BatchNorm statistic randomised,
float32, H != W, 1e-5 relative. Where the paper and the official code disagree, the
paper's configuration is checked too (here or in the family's closed-form tests).
"""

import numpy as np
import pytest

from keras_attention import layers as L
from tests.keras_attention import official_code as O

RTOL = 1e-5


def _input(shape, seed, scale=1.0):
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype("float32")


# --------------------------------------------------------------------------------------
# NonLocal vs mmcv NonLocal2d (norm_cfg BN)


@pytest.mark.parametrize("sub_sample", [False, True], ids=["full", "subsample"])
@pytest.mark.parametrize("mode", ["gaussian", "embedded_gaussian", "dot_product"])
def test_non_local_default_scale_is_mmcv_per_mode(mode, sub_sample):
    # mmcv's default use_scale=True scales the embedded Gaussian only; the layer's default
    # scale="auto" must follow it in every mode.
    x = _input((2, 6, 8, 12), seed=0)
    layer = O.built_randomized(L.NonLocal(pairwise=mode, subsample=sub_sample), x.shape, seed=1)
    expected = O.mmcv_non_local_2d(
        O.export_non_local(layer), O.to_nchw(x), mode, use_scale=True, sub_sample=sub_sample
    )
    O.assert_close_nchw(layer(x, training=False), expected)


@pytest.mark.parametrize("mode", ["gaussian", "embedded_gaussian"])
def test_non_local_paper_scale_is_mmcv_without_use_scale(mode):
    # The paper: f = exp(theta_i . phi_j) (or x_i . x_j) with no temperature.
    x = _input((2, 5, 7, 12), seed=2)
    layer = O.built_randomized(L.NonLocal(pairwise=mode, scale=None), x.shape, seed=3)
    expected = O.mmcv_non_local_2d(O.export_non_local(layer), O.to_nchw(x), mode, use_scale=False)
    O.assert_close_nchw(layer(x, training=False), expected)


def test_non_local_gaussian_inner_scale_differs_from_mmcv():
    # The former default (inner_channels ** -0.5 in the Gaussian mode too) is not mmcv's.
    x = _input((2, 5, 7, 12), seed=4)
    layer = O.built_randomized(L.NonLocal(pairwise="gaussian", scale="inner"), x.shape, seed=5)
    expected = O.to_nhwc(O.mmcv_non_local_2d(O.export_non_local(layer), O.to_nchw(x), "gaussian"))
    assert np.max(np.abs(O.numpy64(layer(x, training=False)) - expected)) > 1e-2


# --------------------------------------------------------------------------------------
# GlobalContext vs GCNet ContextBlock


@pytest.mark.parametrize("pooling", ["attention", "avg"])
@pytest.mark.parametrize(
    "fusion, fusion_types",
    [
        ("add", ("channel_add",)),
        ("multiply", ("channel_mul",)),
        (("multiply", "add"), ("channel_add", "channel_mul")),
        (("add", "multiply"), ("channel_mul", "channel_add")),
    ],
)
def test_global_context_matches_gcnet_context_block(fusion, fusion_types, pooling):
    x = _input((2, 6, 9, 64), seed=6)
    layer = O.built_randomized(L.GlobalContext(fusion=fusion, pooling=pooling), x.shape, seed=7)
    expected = O.gcnet_context_block(
        O.export_global_context(layer),
        O.to_nchw(x),
        pooling_type="att" if pooling == "attention" else "avg",
        fusion_types=fusion_types,
    )
    O.assert_close_nchw(layer(x), expected)


def test_global_context_combined_fusion_gates_before_adding():
    # Distinguishes the official order from add-then-gate: (x + a) * s != x * s + a.
    x = _input((2, 6, 9, 64), seed=8)
    layer = O.built_randomized(L.GlobalContext(fusion=("add", "multiply")), x.shape, seed=9)
    assert layer.fusions == ("multiply", "add")
    assert [w.path.split("/")[-2] for w in layer.weights].count("multiply_reduce") == 2
    state = O.export_global_context(layer)
    nchw = O.to_nchw(x)
    add_only = O.gcnet_context_block(state, nchw, fusion_types=("channel_add",)) - nchw
    gate_only = O.gcnet_context_block(state, nchw, fusion_types=("channel_mul",)) / nchw
    wrong_order = O.to_nhwc((nchw + add_only) * gate_only)
    assert np.max(np.abs(O.numpy64(layer(x)) - wrong_order)) > 1e-2


# --------------------------------------------------------------------------------------
# CompactGeneralizedNonLocal vs SpatialCGNL / SpatialCGNLx


@pytest.mark.parametrize("groups, use_scale", [(1, False), (2, True)])
def test_cgnl_dot_matches_spatial_cgnl(groups, use_scale):
    x = _input((2, 5, 7, 16), seed=10)
    layer = O.built_randomized(
        L.CompactGeneralizedNonLocal(groups=groups, use_scale=use_scale), x.shape, seed=11
    )
    expected = O.cgnl_official(O.export_cgnl(layer), O.to_nchw(x), groups, "dot", use_scale)
    O.assert_close_nchw(layer(x), expected)


@pytest.mark.parametrize("groups, use_scale, order", [(1, False, 2), (2, True, 3)])
def test_cgnl_gaussian_constant_factors_match_spatial_cgnlx(groups, use_scale, order):
    # Large features (|theta| ~ 10), so the constant beta and the exact per-entry factors
    # differ well above the tolerance (checked below).
    x = _input((2, 5, 7, 16), seed=12, scale=4.0)
    layer = O.built_randomized(
        L.CompactGeneralizedNonLocal(
            kernel="gaussian",
            groups=groups,
            use_scale=use_scale,
            order=order,
            gaussian_factors="constant",
        ),
        x.shape,
        seed=13,
    )
    expected = O.cgnl_official(
        O.export_cgnl(layer), O.to_nchw(x), groups, "gaussian", use_scale, order
    )
    O.assert_close_nchw(layer(x), expected)
    exact = L.CompactGeneralizedNonLocal.from_config(
        dict(layer.get_config(), gaussian_factors="exact")
    )
    exact.build(x.shape)
    exact.set_weights(layer.get_weights())
    reference = O.to_nhwc(expected)
    assert np.max(np.abs(O.numpy64(exact(x)) - reference)) > 100 * RTOL * np.abs(reference).max()


# --------------------------------------------------------------------------------------
# ObjectContext vs OCNet's modules (preset="official")


def test_object_context_official_base_oc():
    x = _input((2, 6, 9, 16), seed=14)
    layer = O.built_randomized(L.ObjectContext(mode="base", preset="official"), x.shape, seed=15)
    assert layer.activation_name == "leaky_relu" and layer.pool == 1
    expected = O.ocnet_base_oc(O.export_object_context(layer), O.to_nchw(x), 8)
    O.assert_close_nchw(layer(x, training=False), expected)


def test_object_context_official_pyramid_oc():
    x = _input((2, 7, 10, 8), seed=16)
    sizes = (1, 2, 3)
    layer = O.built_randomized(
        L.ObjectContext(mode="pyramid", pyramid_sizes=sizes, preset="official"), x.shape, seed=17
    )
    expected = O.ocnet_pyramid_oc(O.export_object_context(layer), O.to_nchw(x), sizes)
    O.assert_close_nchw(layer(x, training=False), expected)


@pytest.mark.parametrize("shape", [(2, 6, 10, 12), (2, 7, 9, 12)], ids=["even", "odd"])
def test_object_context_official_asp_oc(shape):
    # ASP_OC_Module(12, out_features=8): branches of 8 channels, output 2 * 8; odd sizes
    # exercise the floored 2x2 max-pool and the aligned-corner upsampling back.
    x = _input(shape, seed=18)
    dilations = (1, 2, 3)
    layer = O.built_randomized(
        L.ObjectContext(mode="asp", preset="official", out_channels=16, dilations=dilations),
        x.shape,
        seed=19,
    )
    assert layer.pool == 2 and layer.context_conv.filters == 8
    assert layer.stages[0][0].filters == 4 and layer.stages[0][2].filters == 8  # key, value
    outputs, attention = layer(x, training=False, return_attention=True)
    n = (shape[1] // 2) * (shape[2] // 2)
    assert tuple(attention.shape) == (2, n, n)
    expected = O.ocnet_asp_oc(O.export_object_context(layer), O.to_nchw(x), 8, dilations)
    O.assert_close_nchw(outputs, expected)


def test_object_context_paper_preset_is_not_the_official_module():
    # Same weights, paper preset (ReLU, full-resolution attention): a different function.
    x = _input((2, 6, 10, 12), seed=20)
    official = O.built_randomized(
        L.ObjectContext(mode="asp", preset="official", out_channels=16, dilations=(1, 2, 3)),
        x.shape,
        seed=21,
    )
    paper = L.ObjectContext.from_config(
        dict(official.get_config(), preset="paper", branch_channels=8, value_channels=8)
    )
    paper.build(x.shape)
    paper.set_weights(official.get_weights())
    expected = O.to_nhwc(
        O.ocnet_asp_oc(O.export_object_context(official), O.to_nchw(x), 8, (1, 2, 3))
    )
    assert np.max(np.abs(O.numpy64(paper(x, training=False)) - expected)) > 1e-2


# --------------------------------------------------------------------------------------
# BAM vs the official bam.py: equal on square maps, the paper's global pooling otherwise


def test_bam_matches_official_code_on_square_maps():
    x = _input((2, 8, 8, 48), seed=22)
    layer = O.built_randomized(L.BAM(), x.shape, seed=23)
    expected = O.bam_official(O.export_bam(layer), O.to_nchw(x))
    O.assert_close_nchw(layer(x, training=False), expected)


def test_bam_pools_globally_where_the_official_code_uses_a_square_window():
    # 6 x 9: the official H x H window averages the first 6 columns only; the layer (and
    # the paper) average all of them.
    x = _input((2, 6, 9, 48), seed=24)
    layer = O.built_randomized(L.BAM(), x.shape, seed=25)
    state = O.export_bam(layer)
    official = O.to_nhwc(O.bam_official(state, O.to_nchw(x)))
    ours = O.numpy64(layer(x, training=False))
    assert np.max(np.abs(ours - official)) > 1e-2
    # ... and the layer is the paper's global average on non-square maps
    # (test_mixed.py::test_bam_closed_form, 9 x 10).


# --------------------------------------------------------------------------------------
# PatchwiseSelfAttention vs SAN's SAM(sa_type=1): square footprint, no softmax


def test_san_patchwise_without_softmax_matches_official_sam():
    x = _input((2, 6, 9, 32), seed=26)
    layer = O.built_randomized(
        L.PatchwiseSelfAttention(kernel_size=3, share_planes=4, softmax=False), x.shape, seed=27
    )
    expected = O.san_patchwise(O.export_san_patchwise(layer), O.to_nchw(x), 3, 4)
    O.assert_close_nchw(layer(x, training=False), expected)


def test_san_patchwise_default_softmax_is_not_the_official_module():
    x = _input((2, 6, 9, 32), seed=28)
    layer = O.built_randomized(
        L.PatchwiseSelfAttention(kernel_size=3, share_planes=4), x.shape, seed=29
    )
    expected = O.to_nhwc(O.san_patchwise(O.export_san_patchwise(layer), O.to_nchw(x), 3, 4))
    assert np.max(np.abs(O.numpy64(layer(x, training=False)) - expected)) > 1e-2


# --------------------------------------------------------------------------------------
# GeneralizedAttention vs mmcv: equal wherever mmcv is right; its E2-without-E4 bug named


@pytest.mark.parametrize(
    "attention_type, kv_stride", [("1111", 1), ("1111", 2), ("1001", 1), ("0011", 1), ("1010", 1)]
)
def test_generalized_attention_matches_mmcv(attention_type, kv_stride):
    x = _input((2, 5, 7, 16), seed=30)
    layer = O.built_randomized(
        L.GeneralizedAttention(
            num_heads=2,
            attention_type=attention_type,
            position_embedding_dim=8,
            kv_stride=kv_stride,
        ),
        x.shape,
        seed=31,
    )
    expected = O.mmcv_generalized_attention(
        O.export_generalized_attention(layer),
        O.to_nchw(x),
        2,
        attention_type,
        8,
        kv_stride=kv_stride,
    )
    O.assert_close_nchw(layer(x), expected)


def test_generalized_attention_e2_without_e4_follows_the_paper_not_mmcv():
    # mmcv's "0100" / "1100" branch reads the transposed query in its vertical term: on a
    # square map it runs and differs from the formula (which "1111" minus E3, E4 gives);
    # on a non-square one it fails.
    x = _input((2, 6, 6, 16), seed=32)
    layer = O.built_randomized(
        L.GeneralizedAttention(num_heads=2, attention_type="1100", position_embedding_dim=8),
        x.shape,
        seed=33,
    )
    state = O.export_generalized_attention(layer)
    mmcv = O.to_nhwc(O.mmcv_generalized_attention(state, O.to_nchw(x), 2, "1100", 8))
    ours = O.numpy64(layer(x))
    assert np.max(np.abs(ours - mmcv)) > 1e-3
    # The formula through mmcv's correct E2-with-E4 branch, with the E4 bias at zero.
    formula = O.mmcv_generalized_attention(
        dict(state, geom_bias=np.zeros(16)), O.to_nchw(x), 2, "1101", 8
    )
    O.assert_close_nchw(ours, formula)
    with pytest.raises(ValueError):
        wide = _input((2, 5, 7, 16), seed=34)
        O.mmcv_generalized_attention(state, O.to_nchw(wide), 2, "1100", 8)
