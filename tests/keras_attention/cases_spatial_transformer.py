"""Harness cases: spatial transformers and DRAW's Gaussian attention
(keras_attention/layers/spatial_transformer.py, gaussian_attention.py)."""

import keras

from keras_attention import layers as L
from tests.layer_harness import LayerCase

IMAGES = (2, 12, 12, 3)
_SIZES = ((5, 7), (11, 6))


def grid_map(output_size=None):
    def shape(input_shape):
        size = output_size or tuple(input_shape[1:3])
        return (input_shape[0], *size, 2)

    return shape


def image_footprint(input_shape):
    return (*input_shape[0][:3], 1)


def small_localization():
    """A user localisation network, serialised so every case build gets a fresh copy."""
    model = keras.Sequential(
        [
            keras.layers.Conv2D(4, 3, strides=3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(6),
        ],
        name="user_localization",
    )
    return keras.saving.serialize_keras_object(model)


SAMPLER_INPUT = [IMAGES, (2, 5, 7, 2)]
GAUSSIAN_READ_INPUT = [IMAGES, (2, 6)]
GAUSSIAN_WRITE_INPUT = [(2, 4, 4, 3), (2, 6)]

CASES = [
    LayerCase(
        "stn_affine_default",
        L.SpatialTransformer,
        {},
        IMAGES,
        attention_shape=grid_map(),
        other_sizes=_SIZES,
        invalid=(
            ({"transform": "perspective"}, IMAGES, "transform"),
            ({"output_size": (0, 4)}, IMAGES, "output_size"),
            ({"output_size": 8}, IMAGES, "output_size"),
            ({"tps_grid_size": (1, 4)}, IMAGES, "tps_grid_size"),
            ({"localization": "conv"}, IMAGES, "localization"),
            ({}, (2, 12, 3), r"input_shape=\(2, 12, 3\)"),
        ),
    ),
    LayerCase(
        "stn_affine_resize_align_corners",
        L.SpatialTransformer,
        {"output_size": (6, 8), "align_corners": True},
        IMAGES,
        attention_shape=grid_map((6, 8)),
        other_sizes=_SIZES,
    ),
    LayerCase(
        "stn_tps_3x3",
        L.SpatialTransformer,
        {"transform": "tps", "tps_grid_size": (3, 3), "output_size": (7, 5)},
        IMAGES,
        attention_shape=grid_map((7, 5)),
        other_sizes=_SIZES,
    ),
    LayerCase(
        "stn_user_localization",
        L.SpatialTransformer,
        {"localization": small_localization(), "output_size": (8, 8)},
        IMAGES,
        attention_shape=grid_map((8, 8)),
        other_sizes=_SIZES,
        invalid=(({"transform": "tps"}, IMAGES, "localization"),),
    ),
    LayerCase(
        "affine_grid_2x3",
        L.AffineGrid,
        {"output_size": (5, 4)},
        (2, 2, 3),
        dynamic_hw="theta has no spatial dimensions (output_size is an argument)",
        invalid=(
            ({"output_size": (0, 4)}, (2, 2, 3), "output_size"),
            ({"output_size": None}, (2, 2, 3), "output_size"),
            ({}, (2, 4), "theta"),
        ),
    ),
    LayerCase(
        "affine_grid_flat_align_corners",
        L.AffineGrid,
        {"output_size": (3, 6), "align_corners": True},
        (2, 6),
        dynamic_hw="theta has no spatial dimensions (output_size is an argument)",
    ),
    LayerCase(
        "bilinear_sampler",
        L.BilinearSampler,
        {},
        SAMPLER_INPUT,
        other_sizes=(((5, 7), (4, 3)), ((11, 6), (6, 6))),
        invalid=(
            ({}, IMAGES, "inputs"),
            ({}, [IMAGES, (2, 5, 7, 3)], "grid"),
            ({}, [(2, 12, 3), (2, 5, 7, 2)], r"input_shape=\(2, 12, 3\)"),
        ),
    ),
    LayerCase(
        "bilinear_sampler_align_corners",
        L.BilinearSampler,
        {"align_corners": True},
        SAMPLER_INPUT,
        other_sizes=(((5, 7), (4, 3)),),
    ),
    LayerCase(
        "gaussian_read_n4",
        L.GaussianAttention,
        {"glimpse_size": 4},
        GAUSSIAN_READ_INPUT,
        attention_shape=image_footprint,
        other_sizes=(((5, 7), ()), ((11, 6), ())),
        invalid=(
            ({"glimpse_size": 0}, GAUSSIAN_READ_INPUT, "glimpse_size"),
            ({"mode": "erase"}, GAUSSIAN_READ_INPUT, "mode"),
            ({"mode": "write"}, GAUSSIAN_WRITE_INPUT, "output_size"),
            ({"output_size": (8, 8)}, GAUSSIAN_READ_INPUT, "output_size"),
            ({"epsilon": 0.0}, GAUSSIAN_READ_INPUT, "epsilon"),
            ({}, [IMAGES, (2, 3, 6)], "conditioning"),
            ({}, IMAGES, "inputs"),
        ),
    ),
    LayerCase(
        "gaussian_write_n4",
        L.GaussianAttention,
        {"glimpse_size": 4, "mode": "write", "output_size": (10, 12)},
        GAUSSIAN_WRITE_INPUT,
        attention_shape=lambda s: (s[0][0], 10, 12, 1),
        dynamic_hw="the patch is glimpse_size x glimpse_size and the canvas has output_size",
        invalid=(
            ({}, [(2, 5, 4, 3), (2, 6)], r"input_shape=\(2, 5, 4, 3\)"),
            ({"output_size": (10, -1)}, GAUSSIAN_WRITE_INPUT, "output_size"),
        ),
    ),
]
