"""Harness cases: PAN's layer-domain attention (keras_attention/layers/pyramid_attention.py).

Convolution biases feed BatchNorms (smp's layout, the default), whose gradient is exactly
zero with batch statistics, so the default configurations run their gradient checks in
inference mode and the bias-free ones in training mode.
"""

from keras_attention import layers as L
from tests.keras_attention.case_shapes import RANK_ERROR
from tests.layer_harness import LayerCase

# Three 2x2 poolings: FPA maps need height and width >= 8 (H != W throughout).
FPA_SHAPE = (2, 16, 12, 16)
FPA_SIZES = ((8, 13), (17, 9))
GAU_SHAPES = [(2, 12, 10, 16), (2, 6, 5, 24)]  # [low, high]
GAU_SIZES = (((8, 10), (4, 5)), ((9, 7), (3, 3)))


def fpa_map(shape):
    return (*shape[:3], 1)


def gau_map(shapes):
    return (shapes[1][0], 1, 1, shapes[1][-1])


CASES = [
    LayerCase(
        "pan_fpa",
        L.FeaturePyramidAttention,
        {},
        FPA_SHAPE,
        attention_shape=fpa_map,
        other_sizes=FPA_SIZES,
        training=False,
        invalid=(
            ({"out_channels": 0}, FPA_SHAPE, "out_channels"),
            ({}, (2, 7, 12, 16), r"height >= 8; got input_shape=\(2, 7, 12, 16\)"),
            ({}, (2, 16, 4, 16), r"width >= 8; got input_shape=\(2, 16, 4, 16\)"),
            RANK_ERROR,
        ),
    ),
    # 17 x 16: the coarsest level is 2 x 2; at 1 x 1, batch statistics over two samples
    # make the first 3x3 unit's normalised output constant, so its kernel gets no gradient.
    LayerCase(
        "pan_fpa_no_bias_widened",
        L.FeaturePyramidAttention,
        {"out_channels": 24, "use_bias": False},
        (2, 17, 16, 8),
        attention_shape=fpa_map,
        other_sizes=FPA_SIZES,
    ),
    LayerCase(
        "pan_gau",
        L.GlobalAttentionUpsample,
        {},
        GAU_SHAPES,
        attention_shape=gau_map,
        other_sizes=GAU_SIZES,
        training=False,
        invalid=(
            ({"gate_activation": "tanh"}, GAU_SHAPES, "gate_activation"),
            ({}, GAU_SHAPES[0], r"\[low, high\]"),
            ({}, [(2, 12, 10), GAU_SHAPES[1]], r"input_shape=\(2, 12, 10\)"),
            ({}, [GAU_SHAPES[0], (2, 6, 5, None)], "known channel dimension"),
        ),
    ),
    LayerCase(
        "pan_gau_smp_sigmoid_no_bias",
        L.GlobalAttentionUpsample,
        {"gate_activation": "sigmoid", "use_bias": False},
        GAU_SHAPES,
        attention_shape=gau_map,
        other_sizes=GAU_SIZES,
    ),
]
