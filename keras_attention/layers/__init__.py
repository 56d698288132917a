"""Public attention layers (`keras_attention.layers.<Name>`)."""

from keras_attention.layers.channel import (
    DualChannelAttention,
    EfficientChannelAttention,
    GlobalContext,
    SqueezeExcite,
)
from keras_attention.layers.context_attention import (
    CompactGeneralizedNonLocal,
    CrissCrossAttention,
    ObjectContext,
    PositionAttention,
)
from keras_attention.layers.feedback import FeedbackChannelGate
from keras_attention.layers.gaussian_attention import GaussianAttention
from keras_attention.layers.generalized_attention import GeneralizedAttention
from keras_attention.layers.hard_attention import (
    AdaptiveHardAttention,
    AttentionProposal,
    BoxcarCrop,
    GlimpseSensor,
    HardCrop,
    TopKHardAttention,
)
from keras_attention.layers.interaction_aware import InteractionAwareAttention
from keras_attention.layers.local_attention import LocalCrossAttention2D, LocalSelfAttention2D
from keras_attention.layers.mixed import BAM, CBAM, ChannelGate
from keras_attention.layers.multi_context import MultiContextAttention
from keras_attention.layers.pyramid_attention import (
    FeaturePyramidAttention,
    GlobalAttentionUpsample,
)
from keras_attention.layers.relative_attention import (
    AttentionAugmentedConv2D,
    BottleneckAttention,
    HaloAttention,
    LambdaLayer,
)
from keras_attention.layers.residual_attention import ResidualAttention, SoftMaskBranch
from keras_attention.layers.san import PairwiseSelfAttention, PatchwiseSelfAttention
from keras_attention.layers.self_attention import MultiHeadSelfAttention2D, NonLocal
from keras_attention.layers.spatial import SpatialGate
from keras_attention.layers.spatial_transformer import (
    AffineGrid,
    BilinearSampler,
    SpatialTransformer,
)

__all__ = [
    "MultiHeadSelfAttention2D",
    "NonLocal",
    "LocalSelfAttention2D",
    "LocalCrossAttention2D",
    "InteractionAwareAttention",
    "SqueezeExcite",
    "EfficientChannelAttention",
    "GlobalContext",
    "DualChannelAttention",
    "FeedbackChannelGate",
    "SpatialGate",
    "ChannelGate",
    "CBAM",
    "BAM",
    "ResidualAttention",
    "SoftMaskBranch",
    "PositionAttention",
    "CrissCrossAttention",
    "ObjectContext",
    "CompactGeneralizedNonLocal",
    "FeaturePyramidAttention",
    "GlobalAttentionUpsample",
    "BottleneckAttention",
    "HaloAttention",
    "LambdaLayer",
    "AttentionAugmentedConv2D",
    "GeneralizedAttention",
    "PairwiseSelfAttention",
    "PatchwiseSelfAttention",
    "SpatialTransformer",
    "AffineGrid",
    "BilinearSampler",
    "GaussianAttention",
    "HardCrop",
    "GlimpseSensor",
    "TopKHardAttention",
    "AdaptiveHardAttention",
    "AttentionProposal",
    "BoxcarCrop",
    "MultiContextAttention",
]
