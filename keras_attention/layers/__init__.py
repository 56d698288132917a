"""Public attention layers (`keras_attention.layers.<Name>`)."""

from keras_attention.layers.channel import (
    DualChannelAttention,
    EfficientChannelAttention,
    GlobalContext,
    SqueezeExcite,
)
from keras_attention.layers.mixed import BAM, CBAM, ChannelGate
from keras_attention.layers.residual_attention import ResidualAttention, SoftMaskBranch
from keras_attention.layers.spatial import SpatialGate

__all__ = [
    "SqueezeExcite",
    "EfficientChannelAttention",
    "GlobalContext",
    "DualChannelAttention",
    "SpatialGate",
    "ChannelGate",
    "CBAM",
    "BAM",
    "ResidualAttention",
    "SoftMaskBranch",
]
