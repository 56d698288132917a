"""Harness cases: multi-context attention (keras_attention/layers/multi_context.py)."""

from keras_attention import layers as L
from tests.keras_attention.case_shapes import RANK_ERROR, SHAPE, SMALL, spatial_map
from tests.layer_harness import LayerCase


def _part_maps(parts):
    return lambda shape: (*shape[:3], parts)


CASES = [
    LayerCase(
        "multi_context_holistic",
        L.MultiContextAttention,
        {},
        SMALL,
        attention_shape=spatial_map,
        invalid=(
            ({"mode": "body"}, SMALL, "mode"),
            ({"parts": 3}, SMALL, "parts"),
            ({"steps": -1}, SMALL, "steps"),
            ({"steps": 1.5}, SMALL, "steps"),
            ({"kernel_size": 2}, SMALL, "kernel_size"),
            ({"pairwise_kernel_size": 0}, SMALL, "pairwise_kernel_size"),
            ({}, (2, 6, 6, None), "channel"),
            RANK_ERROR,
        ),
    ),
    LayerCase(
        "multi_context_part",
        L.MultiContextAttention,
        {"mode": "part", "parts": 3, "steps": 2, "kernel_size": 1},
        SHAPE,
        attention_shape=_part_maps(3),
        invalid=(
            ({"parts": None}, SHAPE, "parts"),
            ({"parts": 0}, SHAPE, "parts"),
        ),
    ),
]
