"""Harness cases: scene-context self-attention (keras_attention/layers/context_attention.py)."""

from keras_attention import layers as L
from tests.keras_attention.case_shapes import RANK_ERROR, SHAPE, SMALL
from tests.layer_harness import LayerCase

# Eight channels (one query / key channel): two unscaled recurrences with randomised weights
# otherwise give energies large enough that float32 rounding differences between XLA's
# fused (jit) and op-by-op evaluation exceed the dynamic-size check's 1e-5 tolerance.
RCCA_SHAPE = (2, 6, 6, 8)


def position_map(shape):
    n = None if shape[1] is None or shape[2] is None else shape[1] * shape[2]
    return (shape[0], n, n)


def pooled_position_map(pool):
    def shape_of(shape):
        if shape[1] is None or shape[2] is None:
            return (shape[0], None, None)
        n = (shape[1] // pool) * (shape[2] // pool)
        return (shape[0], n, n)

    return shape_of


def criss_cross_map(shape):
    return (*shape[:3], shape[1] + shape[2])


CASES = [
    LayerCase(
        "pam_danet",
        L.PositionAttention,
        {},
        SHAPE,
        attention_shape=position_map,
        invalid=(({"reduction": 0}, SHAPE, "reduction"), RANK_ERROR),
    ),
    LayerCase(
        "criss_cross_rcca",
        L.CrissCrossAttention,
        {},
        RCCA_SHAPE,
        attention_shape=criss_cross_map,
        invalid=(
            ({"reduction": 0}, SMALL, "reduction"),
            ({"recurrence": 0}, SMALL, "recurrence"),
            RANK_ERROR,
        ),
    ),
    LayerCase(
        "criss_cross_once_r4",
        L.CrissCrossAttention,
        {"recurrence": 1, "reduction": 4},
        (2, 5, 7, 16),
        attention_shape=criss_cross_map,
    ),
]

# --- ObjectContext: convolution biases feed BatchNorms (official layout), whose gradient is
# exactly zero with batch statistics, so the gradient checks run in inference mode;
# test_context_attention.py checks the training-mode forward pass in closed form.
CASES += [
    LayerCase(
        "ocnet_base",
        L.ObjectContext,
        {},
        SMALL,
        attention_shape=position_map,
        training=False,
        invalid=(
            ({"mode": "aspp"}, SMALL, "mode"),
            ({"key_channels": 0}, SMALL, "key_channels"),
            ({"value_channels": -1}, SMALL, "value_channels"),
            ({"out_channels": 2.0}, SMALL, "out_channels"),
            ({"pyramid_sizes": ()}, SMALL, "pyramid_sizes"),
            ({"pyramid_sizes": (1, 0)}, SMALL, "pyramid_sizes"),
            ({"mode": "pyramid", "pyramid_sizes": (1, 8)}, SMALL, "pyramid_sizes"),
            ({"dilations": (2, 0)}, SMALL, "dilations"),
            ({"dropout": 1.0}, SMALL, "dropout"),
            ({"activation": "gelu"}, SMALL, "activation"),
            ({"preset": "timm"}, SMALL, "preset"),
            ({"context_pooling": 0}, SMALL, "context_pooling"),
            ({"context_pooling": 7}, SMALL, "context_pooling"),
            ({"mode": "pyramid", "context_pooling": 2}, SMALL, "context_pooling"),
            ({"branch_channels": 0}, SMALL, "branch_channels"),
            ({"branch_channels": 8}, SMALL, "branch_channels"),
            RANK_ERROR,
        ),
    ),
    LayerCase(
        "ocnet_pyramid",
        L.ObjectContext,
        {"mode": "pyramid", "pyramid_sizes": (1, 2, 3), "out_channels": 8},
        SMALL,
        attention_shape=lambda s: (s[0], 3, *position_map(s)[1:]),
        training=False,
    ),
    LayerCase(
        "ocnet_asp",
        L.ObjectContext,
        {"mode": "asp", "dilations": (1, 2), "out_channels": 8, "dropout": 0.1},
        SMALL,
        attention_shape=position_map,
        training=False,
    ),
    # official ASP-OC: leaky ReLU, 2x2-pooled attention, branches of out_channels // 2
    LayerCase(
        "ocnet_asp_official",
        L.ObjectContext,
        {"mode": "asp", "dilations": (1, 2), "out_channels": 16, "preset": "official"},
        SMALL,
        attention_shape=pooled_position_map(2),
        training=False,
    ),
    LayerCase(
        "ocnet_base_official_pooled",
        L.ObjectContext,
        {"preset": "official", "context_pooling": 3, "activation": "leaky_relu"},
        SMALL,
        attention_shape=pooled_position_map(3),
        training=False,
    ),
]

# --- CompactGeneralizedNonLocal ---
CASES += [
    LayerCase(
        "cgnl_dot",
        L.CompactGeneralizedNonLocal,
        {},
        SMALL,
        attention_shape=lambda s: (s[0], 1, 1),
        invalid=(
            ({"inner_channels": 0}, SMALL, "inner_channels"),
            ({"groups": 0}, SMALL, "groups"),
            ({"groups": 3}, SMALL, "groups"),
            ({"kernel": "rbf"}, SMALL, "kernel"),
            ({"order": -1}, SMALL, "order"),
            ({"gamma": 0}, SMALL, "gamma"),
            ({"gaussian_factors": "beta"}, SMALL, "gaussian_factors"),
            RANK_ERROR,
        ),
    ),
    LayerCase(
        "cgnl_gaussian_constant_official",
        L.CompactGeneralizedNonLocal,
        {"kernel": "gaussian", "order": 2, "gaussian_factors": "constant"},
        SMALL,
        attention_shape=lambda s: (s[0], 1, 3),
    ),
    LayerCase(
        "cgnl_gaussian_groups",
        L.CompactGeneralizedNonLocal,
        {"kernel": "gaussian", "groups": 2, "gamma": 1e-2, "use_scale": True},
        SMALL,
        attention_shape=lambda s: (s[0], 2, 4),
    ),
]
