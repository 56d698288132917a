"""PAN's FeaturePyramidAttention and GlobalAttentionUpsample against the NumPy transcription
of segmentation_models.pytorch's `FPABlock` / `GAUBlock` (pan_reference.py: repository,
file and commit there), every weight and BatchNorm statistic randomised, float32, H != W,
1e-5 relative; plus the paper's ReLU gate, odd sizes, the factory name and shape errors.
"""

import numpy as np
import pytest

from keras_attention import layers as L
from keras_attention.factory import create_attention
from tests.keras_attention import cases_pyramid_attention
from tests.keras_attention import official_code as O
from tests.keras_attention import pan_reference as P
from tests.layer_harness import harness_test

test_layer_harness = harness_test(cases_pyramid_attention)

RTOL = 1e-5


def _input(shape, seed):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


# 16 x 12: every level divides; 19 x 13: pooling floors (9 x 6, 4 x 3, 2 x 1) and the
# upsampling targets H // 4, H // 2 differ from twice the coarser level, as in smp.
@pytest.mark.parametrize("shape", [(2, 16, 12, 10), (2, 19, 13, 6)], ids=["16x12", "19x13"])
@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "no_bias"])
def test_fpa_matches_smp_fpa_block(shape, use_bias):
    x = _input(shape, seed=0)
    layer = O.built_randomized(
        L.FeaturePyramidAttention(out_channels=12, use_bias=use_bias), shape, seed=1
    )
    expected, expected_map = P.smp_fpa_block(P.export_fpa(layer), O.to_nchw(x))
    outputs, attention = layer(x, training=False, return_attention=True)
    O.assert_close_nchw(outputs, expected)
    O.assert_close_nchw(attention, expected_map)


@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "no_bias"])
def test_gau_sigmoid_gate_matches_smp_gau_block(use_bias):
    low, high = _input((2, 12, 10, 6), seed=2), _input((2, 5, 4, 8), seed=3)
    layer = O.built_randomized(
        L.GlobalAttentionUpsample(gate_activation="sigmoid", use_bias=use_bias),
        [low.shape, high.shape],
        seed=4,
    )
    expected, expected_weights = P.smp_gau_block(
        P.export_gau(layer), O.to_nchw(low), O.to_nchw(high)
    )
    outputs, weights = layer([low, high], training=False, return_attention=True)
    O.assert_close_nchw(outputs, expected)
    O.assert_close_nchw(weights, expected_weights)


def test_gau_default_gate_is_the_papers_relu_not_smps_sigmoid():
    low, high = _input((2, 9, 14, 4), seed=5), _input((2, 3, 7, 8), seed=6)
    layer = O.built_randomized(L.GlobalAttentionUpsample(), [low.shape, high.shape], seed=7)
    state = P.export_gau(layer)
    outputs = layer([low, high], training=False)
    O.assert_close_nchw(
        outputs, P.smp_gau_block(state, O.to_nchw(low), O.to_nchw(high), gate="relu")[0]
    )
    smp = O.to_nhwc(P.smp_gau_block(state, O.to_nchw(low), O.to_nchw(high))[0])
    assert np.max(np.abs(O.numpy64(outputs) - smp)) > 0.1


def test_fpa_runs_on_maps_of_unknown_size_down_to_8x8():
    layer = O.built_randomized(L.FeaturePyramidAttention(), (None, None, None, 4), seed=8)
    x = _input((1, 8, 11, 4), seed=9)
    expected = P.smp_fpa_block(P.export_fpa(layer), O.to_nchw(x))[0]
    O.assert_close_nchw(layer(x, training=False), expected)


def test_fpa_rejects_maps_smaller_than_8_naming_the_shape():
    with pytest.raises(ValueError, match=r"needs width >= 8; got input_shape=\(1, 32, 6, 4\)"):
        L.FeaturePyramidAttention().build((1, 32, 6, 4))


def test_factory_name_pan_fpa_keeps_the_width():
    layer = create_attention("pan_fpa", 24)
    assert type(layer) is L.FeaturePyramidAttention and layer.built
    assert layer(_input((2, 8, 16, 24), seed=10)).shape == (2, 8, 16, 24)
