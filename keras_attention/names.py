"""The names `create_attention` accepts, their defaults and descriptions: plain data, so
a listing (`keras-attention-zoo attention`) needs no Keras. Layer classes are named as
attributes of `keras_attention.layers`.
"""

# timm `GlobalContext` defaults (rd_ratio=1/8, rd_divisor=1, LayerNorm2d eps=1e-6), so timm
# gcresnet weights load into create_attention("gc" / "gca", C). timm zeroes the last conv's
# weight whenever it fuses by addition (`reset_parameters`), hence zero_init_last for "gca".
_TIMM_GC = {"reduction_ratio": 1 / 8, "divisor": 1, "norm_epsilon": 1e-6}

# timm `CbamModule` / `ChannelAttn` / `SpatialAttn` defaults (mlp_bias=False, rd_divisor=1,
# [mean, max] pooling order), so timm CBAM weights load into create_attention("cbam", C).
_TIMM_CBAM_CHANNEL = {"use_bias": False, "divisor": 1}
_TIMM_CBAM_SPATIAL = {"pooling_order": "mean_max"}

# timm `NonLocalAttn` defaults (rd_ratio=1/8, rd_divisor=8, use_scale=True: in_channels ** -0.5),
# so timm weights load into create_attention("nl", C).
_TIMM_NL = {"reduction_ratio": 1 / 8, "divisor": 8, "scale": "input"}

# name -> (layer class in keras_attention.layers, default keyword arguments, one-line
# description)
ATTENTION = {
    "nl": (
        "NonLocal",
        dict(_TIMM_NL),
        "Non-local block, embedded Gaussian, timm NonLocalAttn settings",
    ),
    "mhsa": (
        "MultiHeadSelfAttention2D",
        {},
        "Multi-head self-attention over feature-map positions",
    ),
    "generalized_attention": (
        "GeneralizedAttention",
        {},
        "Generalized attention (Zhu et al. 2019), all four terms",
    ),
    "san_pairwise": (
        "PairwiseSelfAttention",
        {},
        "SAN pairwise (subtraction) local self-attention, 7x7 footprint",
    ),
    "san_patchwise": (
        "PatchwiseSelfAttention",
        {},
        "SAN patchwise local self-attention, 7x7 footprint",
    ),
    "se": ("SqueezeExcite", {}, "Squeeze-and-Excitation, timm channel rounding"),
    "eca": ("EfficientChannelAttention", {}, "Efficient Channel Attention, adaptive kernel"),
    "ceca": (
        "EfficientChannelAttention",
        {"circular": True},
        "Efficient Channel Attention with circular padding (timm CecaModule)",
    ),
    "gc": (
        "GlobalContext",
        dict(_TIMM_GC, fusion="multiply", zero_init_last=False),
        "Global Context, sigmoid-gated fusion, timm GlobalContext defaults",
    ),
    "gca": (
        "GlobalContext",
        dict(_TIMM_GC, fusion="add", zero_init_last=True),
        "Global Context, additive fusion, timm GlobalContext(fuse_add=True) settings",
    ),
    "cam": ("DualChannelAttention", {}, "DANet channel attention module"),
    # FeedbackChannelGate takes [features, observation of the previous pass], so it has no
    # factory name.
    "cbam": (
        "CBAM",
        dict(_TIMM_CBAM_CHANNEL, **_TIMM_CBAM_SPATIAL),
        "CBAM channel then spatial gate, timm CbamModule settings",
    ),
    "channel_gate": (
        "ChannelGate",
        dict(_TIMM_CBAM_CHANNEL),
        "CBAM channel gate alone, timm ChannelAttn settings",
    ),
    "spatial_gate": (
        "SpatialGate",
        dict(_TIMM_CBAM_SPATIAL),
        "CBAM spatial gate alone, timm SpatialAttn settings",
    ),
    "bam": ("BAM", {}, "Bottleneck Attention Module, official code (product of branches)"),
    "residual_attention": (
        "ResidualAttention",
        {},
        "Residual Attention Network module, (1 + soft mask) * trunk",
    ),
    # Relative-position tables are sized for the feature map: (7, 7) (ResNet-50's last
    # stage at 224x224) unless the caller passes feat_size, as timm's byobnet does.
    "bottleneck": (
        "BottleneckAttention",
        {"feat_size": (7, 7)},
        "BoTNet relative-position self-attention, timm BottleneckAttn defaults, feat_size (7, 7)",
    ),
    "halo": ("HaloAttention", {}, "HaloNet blocked local self-attention, timm HaloAttn defaults"),
    "lambda": ("LambdaLayer", {}, "Lambda layer, r=9 local position lambdas, timm LambdaLayer"),
    "aa_conv": (
        "AttentionAugmentedConv2D",
        {
            "filters": None,
            "kernel_size": 3,
            "dk": 16,
            "dv": 16,
            "num_heads": 4,
            "feat_size": (7, 7),
        },
        "Attention Augmented Convolution, relative logits, feat_size (7, 7), input width kept",
    ),
    # LocalCrossAttention2D takes two frames, so it has no factory name.
    "local_attention": (
        "LocalSelfAttention2D",
        {},
        "Neighbourhood self-attention, 7 x 7 window, one head",
    ),
    "interaction_aware": (
        "InteractionAwareAttention",
        {},
        "Interaction-aware attention on one map, PCA-inspired projection",
    ),
    "pam": ("PositionAttention", {}, "DANet position attention module"),
    "cca": ("CrissCrossAttention", {}, "CCNet recurrent criss-cross attention (recurrence 2)"),
    "oc_base": ("ObjectContext", {"mode": "base"}, "OCNet Base-OC object context"),
    "oc_pyramid": (
        "ObjectContext",
        {"mode": "pyramid"},
        "OCNet Pyramid-OC, object context in 1, 2, 3, 6 region partitions",
    ),
    "oc_asp": ("ObjectContext", {"mode": "asp"}, "OCNet ASP-OC, ASPP with an object context"),
    "cgnl": ("CompactGeneralizedNonLocal", {}, "Compact generalized non-local, dot kernel"),
    # GlobalAttentionUpsample takes [low, high] maps, so it has no factory name.
    "pan_fpa": (
        "FeaturePyramidAttention",
        {},
        "PAN feature pyramid attention (smp FPABlock), input width kept, maps >= 8 x 8",
    ),
}


def list_attention():
    """Sorted names accepted by `create_attention`."""
    return sorted(ATTENTION)


def describe_attention():
    """`{name: description}` for every name accepted by `create_attention`."""
    return {name: ATTENTION[name][2] for name in list_attention()}
