"""Create an attention layer by name, so a backbone can swap attention with one argument.

Names follow timm's `create_attn` where timm has the mechanism (`se`, `eca`, `ceca`, `gc`,
`gca`, `cbam`), so a timm user finds the same choice under the same name.
"""

import inspect
import warnings

from keras_attention import layers as L
from keras_attention.layers._utils import check_positive_int

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

# name -> (layer class, default keyword arguments, one-line description)
_ATTENTION = {
    "nl": (
        L.NonLocal,
        dict(_TIMM_NL),
        "Non-local block, embedded Gaussian, timm NonLocalAttn settings",
    ),
    "mhsa": (
        L.MultiHeadSelfAttention2D,
        {},
        "Multi-head self-attention over feature-map positions",
    ),
    "generalized_attention": (
        L.GeneralizedAttention,
        {},
        "Generalized attention (Zhu et al. 2019), all four terms",
    ),
    "san_pairwise": (
        L.PairwiseSelfAttention,
        {},
        "SAN pairwise (subtraction) local self-attention, 7x7 footprint",
    ),
    "san_patchwise": (
        L.PatchwiseSelfAttention,
        {},
        "SAN patchwise local self-attention, 7x7 footprint",
    ),
    "se": (L.SqueezeExcite, {}, "Squeeze-and-Excitation, timm channel rounding"),
    "eca": (L.EfficientChannelAttention, {}, "Efficient Channel Attention, adaptive kernel"),
    "ceca": (
        L.EfficientChannelAttention,
        {"circular": True},
        "Efficient Channel Attention with circular padding (timm CecaModule)",
    ),
    "gc": (
        L.GlobalContext,
        dict(_TIMM_GC, fusion="multiply", zero_init_last=False),
        "Global Context, sigmoid-gated fusion, timm GlobalContext defaults",
    ),
    "gca": (
        L.GlobalContext,
        dict(_TIMM_GC, fusion="add", zero_init_last=True),
        "Global Context, additive fusion, timm GlobalContext(fuse_add=True) settings",
    ),
    "cam": (L.DualChannelAttention, {}, "DANet channel attention module"),
    "cbam": (
        L.CBAM,
        dict(_TIMM_CBAM_CHANNEL, **_TIMM_CBAM_SPATIAL),
        "CBAM channel then spatial gate, timm CbamModule settings",
    ),
    "channel_gate": (
        L.ChannelGate,
        dict(_TIMM_CBAM_CHANNEL),
        "CBAM channel gate alone, timm ChannelAttn settings",
    ),
    "spatial_gate": (
        L.SpatialGate,
        dict(_TIMM_CBAM_SPATIAL),
        "CBAM spatial gate alone, timm SpatialAttn settings",
    ),
    "bam": (L.BAM, {}, "Bottleneck Attention Module, official code (product of branches)"),
    "residual_attention": (
        L.ResidualAttention,
        {},
        "Residual Attention Network module, (1 + soft mask) * trunk",
    ),
    # Relative-position tables are sized for the feature map: (7, 7) (ResNet-50's last
    # stage at 224x224) unless the caller passes feat_size, as timm's byobnet does.
    "bottleneck": (
        L.BottleneckAttention,
        {"feat_size": (7, 7)},
        "BoTNet relative-position self-attention, timm BottleneckAttn defaults, feat_size (7, 7)",
    ),
    "halo": (L.HaloAttention, {}, "HaloNet blocked local self-attention, timm HaloAttn defaults"),
    "lambda": (L.LambdaLayer, {}, "Lambda layer, r=9 local position lambdas, timm LambdaLayer"),
    "aa_conv": (
        L.AttentionAugmentedConv2D,
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
        L.LocalSelfAttention2D,
        {},
        "Neighbourhood self-attention, 7 x 7 window, one head",
    ),
    "interaction_aware": (
        L.InteractionAwareAttention,
        {},
        "Interaction-aware attention on one map, PCA-inspired projection",
    ),
    "pam": (L.PositionAttention, {}, "DANet position attention module"),
    "cca": (L.CrissCrossAttention, {}, "CCNet recurrent criss-cross attention (recurrence 2)"),
    "oc_base": (L.ObjectContext, {"mode": "base"}, "OCNet Base-OC object context"),
    "oc_pyramid": (
        L.ObjectContext,
        {"mode": "pyramid"},
        "OCNet Pyramid-OC, object context in 1, 2, 3, 6 region partitions",
    ),
    "oc_asp": (L.ObjectContext, {"mode": "asp"}, "OCNet ASP-OC, ASPP with an object context"),
    "cgnl": (L.CompactGeneralizedNonLocal, {}, "Compact generalized non-local, dot kernel"),
    # GlobalAttentionUpsample takes [low, high] maps, so it has no factory name.
    "pan_fpa": (
        L.FeaturePyramidAttention,
        {},
        "PAN feature pyramid attention (smp FPABlock), input width kept, maps >= 8 x 8",
    ),
}


def list_attention():
    """Sorted names accepted by `create_attention`."""
    return sorted(_ATTENTION)


def describe_attention():
    """`{name: description}` for every name accepted by `create_attention`."""
    return {name: _ATTENTION[name][2] for name in list_attention()}


# timm's argument names -> ours, for the layers that take the ours (timm `create_attn`
# passes rd_ratio / rd_divisor / rd_channels to SE, ECA, GC, CBAM, NL, ...).
TIMM_ARGUMENTS = {
    "rd_ratio": "reduction_ratio",
    "rd_divisor": "divisor",
    "rd_channels": "reduced_channels",
}

_MISSING = object()


def _accepted_arguments(cls):
    return set(inspect.signature(cls.__init__).parameters)


def _translate_timm_arguments(attention, cls, kwargs):
    accepted = _accepted_arguments(cls)
    for timm_name, ours in TIMM_ARGUMENTS.items():
        if timm_name not in kwargs:
            continue
        if ours not in accepted:
            raise ValueError(
                f"`{timm_name}` (timm's name for `{ours}`) does not apply to "
                f"attention={attention!r} ({cls.__name__} has no `{ours}`)."
            )
        if ours in kwargs:
            raise ValueError(f"Pass `{timm_name}` or `{ours}`, not both.")
        kwargs[ours] = kwargs.pop(timm_name)
    return kwargs


def create_attention(attention=_MISSING, channels=None, /, **kwargs):
    """Build the attention layer registered as `attention`.

    The signature follows timm's `create_attn(attn_type, channels, **kwargs)`: the
    mechanism first, then the channel count, then the layer's arguments, among them the
    Keras layer `name`:

        create_attention("se", 256, name="layer1-0-se", rd_ratio=1 / 8)

    Args:
        attention: one of `list_attention()` (positional); `None` or `""` returns `None`
            (no attention), so a backbone can pass its `attention=` argument straight
            through.
        channels: number of input channels (positional). When given, the layer is built
            for `(batch, height, width, channels)` inputs right away, so a configuration
            that does not fit the channel count fails here rather than inside a model.
        **kwargs: the layer's constructor arguments (`name`, `dtype`, ...), overriding the
            registered defaults. timm's names `rd_ratio`, `rd_divisor` and `rd_channels`
            are accepted for `reduction_ratio`, `divisor` and `reduced_channels` where the
            layer has them (timm's other argument names, e.g. `act_layer`, are not).

    Returns:
        A Keras layer, or `None`.
    """
    if attention is _MISSING:
        # the factory's first parameter was once called `name`: create_attention(name="se")
        if "name" not in kwargs:
            raise TypeError(
                "create_attention() needs the attention mechanism as its first "
                "argument, e.g. create_attention('se', 64)"
            )
        warnings.warn(
            "create_attention(name=...) is deprecated: pass the mechanism first, "
            "create_attention('se', channels, name=<layer name>)",
            DeprecationWarning,
            stacklevel=2,
        )
        attention = kwargs.pop("name")
    if attention is None or attention == "":
        return None
    if not isinstance(attention, str) or attention.lower() not in _ATTENTION:
        raise ValueError(
            f"Unknown attention name={attention!r}. Valid names: {', '.join(list_attention())}."
        )
    cls, defaults, _ = _ATTENTION[attention.lower()]
    kwargs = _translate_timm_arguments(attention, cls, dict(kwargs))
    layer = cls(**{**defaults, **kwargs})
    if channels is not None:
        check_positive_int("channels", channels)
        layer.build((None, None, None, channels))
    return layer
