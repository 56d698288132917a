"""Harness cases: hard attention (keras_attention/layers/hard_attention.py)."""

from keras_attention import layers as L
from tests.keras_attention.case_shapes import RANK_ERROR, SHAPE
from tests.layer_harness import LayerCase

IMAGES = (2, 12, 12, 3)
CROP_INPUT = [IMAGES, (2, 2)]
BOX_INPUT = [IMAGES, (2, 3)]
FEATURES = (2, 6, 6, 8)
# The second input (corners, locations, boxes) is a (batch, n) vector: no spatial size.
_PAIR_SIZES = (((5, 7), ()), ((11, 6), ()))


def image_mask(input_shape):
    return (*input_shape[0][:3], 1)


def cell_mask(input_shape):
    return (*input_shape[:3], 1)


CASES = [
    LayerCase(
        "hard_crop_5x4",
        L.HardCrop,
        {"crop_size": (5, 4)},
        CROP_INPUT,
        attention_shape=image_mask,
        other_sizes=_PAIR_SIZES,
        no_input_gradient=(1,),
        invalid=(
            ({"crop_size": (0, 4)}, CROP_INPUT, "crop_size"),
            ({"crop_size": 4}, CROP_INPUT, "crop_size"),
            ({}, [IMAGES, (2, 4)], "corners"),
            ({}, IMAGES, "inputs"),
            ({}, [(2, 12, 3), (2, 2)], r"input_shape=\(2, 12, 3\)"),
        ),
    ),
    LayerCase(
        "glimpse_g3_s2_f2",
        L.GlimpseSensor,
        {"glimpse_size": 3, "num_scales": 2, "scale_factor": 2},
        CROP_INPUT,
        other_sizes=_PAIR_SIZES,
        no_input_gradient=(1,),
        invalid=(
            ({"glimpse_size": 0}, CROP_INPUT, "glimpse_size"),
            ({"num_scales": 0}, CROP_INPUT, "num_scales"),
            ({"scale_factor": 1.5}, CROP_INPUT, "scale_factor"),
            ({}, [IMAGES, (2, 3)], "locations"),
            ({}, [(2, 12, 3), (2, 2)], r"input_shape=\(2, 12, 3\)"),
        ),
    ),
    LayerCase(
        "glimpse_g2_s3_f3",
        L.GlimpseSensor,
        {"glimpse_size": 2, "num_scales": 3, "scale_factor": 3},
        CROP_INPUT,
        other_sizes=_PAIR_SIZES,
        no_input_gradient=(1,),
    ),
    LayerCase(
        "topk_hard_k5",
        L.TopKHardAttention,
        {"k": 5},
        FEATURES,
        attention_shape=cell_mask,
        invalid=(
            ({"k": 0}, FEATURES, "k"),
            ({"k": 37}, FEATURES, "`k`"),
            RANK_ERROR,
        ),
    ),
    LayerCase(
        "adaptive_hard",
        L.AdaptiveHardAttention,
        {},
        FEATURES,
        attention_shape=cell_mask,
        invalid=(RANK_ERROR,),
    ),
    LayerCase(
        "attention_proposal_flatten",
        L.AttentionProposal,
        {"units": 16},
        FEATURES,
        dynamic_hw="pooling='flatten' feeds a fully connected layer (RA-CNN's APN)",
        invalid=(
            ({"units": 0}, FEATURES, "units"),
            ({"pooling": "max"}, FEATURES, "pooling"),
            ({"min_half_size": 1.0}, FEATURES, "min_half_size"),
            ({}, (2, None, None, 8), "pooling='avg'"),
            RANK_ERROR,
        ),
    ),
    LayerCase(
        "attention_proposal_avg",
        L.AttentionProposal,
        {"units": 16, "pooling": "avg", "activation": "relu", "min_half_size": 0.0},
        SHAPE,
    ),
    LayerCase(
        "boxcar_crop_6x6",
        L.BoxcarCrop,
        {"output_size": (6, 6)},
        BOX_INPUT,
        attention_shape=image_mask,
        other_sizes=_PAIR_SIZES,
        invalid=(
            ({"output_size": (6, 0)}, BOX_INPUT, "output_size"),
            ({"sharpness": 0}, BOX_INPUT, "sharpness"),
            ({}, [IMAGES, (2, 4)], "boxes"),
            ({}, [(2, 12, 3), (2, 3)], r"input_shape=\(2, 12, 3\)"),
        ),
    ),
    LayerCase(
        "boxcar_crop_same_size_k5",
        L.BoxcarCrop,
        {"sharpness": 5.0},
        BOX_INPUT,
        attention_shape=image_mask,
        other_sizes=_PAIR_SIZES,
    ),
]
