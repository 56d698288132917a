"""Create an attention layer by name, so a backbone can swap attention with one argument.

Names follow timm's `create_attn` where timm has the mechanism (`se`, `eca`, `ceca`, `gc`,
`gca`, `cbam`), so a timm user finds the same choice under the same name.
"""

from keras_attention import layers as L

# timm `GlobalContext` defaults (rd_ratio=1/8, rd_divisor=1, LayerNorm2d eps=1e-6), so timm
# gcresnet weights load into create_attention("gc" / "gca", C). timm zeroes the last conv's
# weight whenever it fuses by addition (`reset_parameters`), hence zero_init_last for "gca".
_TIMM_GC = {"reduction_ratio": 1 / 8, "divisor": 1, "norm_epsilon": 1e-6}

# timm `CbamModule` / `ChannelAttn` / `SpatialAttn` defaults (mlp_bias=False, rd_divisor=1,
# [mean, max] pooling order), so timm CBAM weights load into create_attention("cbam", C).
_TIMM_CBAM_CHANNEL = {"use_bias": False, "divisor": 1}
_TIMM_CBAM_SPATIAL = {"pooling_order": "mean_max"}

# name -> (layer class, default keyword arguments, one-line description)
_ATTENTION = {
    "se": (L.SqueezeExcite, {}, "Squeeze-and-Excitation, timm channel rounding"),
    "eca": (L.EfficientChannelAttention, {}, "Efficient Channel Attention, adaptive kernel"),
    "ceca": (L.EfficientChannelAttention, {"circular": True},
             "Efficient Channel Attention with circular padding (timm CecaModule)"),
    "gc": (L.GlobalContext, dict(_TIMM_GC, fusion="multiply", zero_init_last=False),
           "Global Context, sigmoid-gated fusion, timm GlobalContext defaults"),
    "gca": (L.GlobalContext, dict(_TIMM_GC, fusion="add", zero_init_last=True),
            "Global Context, additive fusion, timm GlobalContext(fuse_add=True) settings"),
    "cam": (L.DualChannelAttention, {}, "DANet channel attention module"),
    "cbam": (L.CBAM, dict(_TIMM_CBAM_CHANNEL, **_TIMM_CBAM_SPATIAL),
             "CBAM channel then spatial gate, timm CbamModule settings"),
    "channel_gate": (L.ChannelGate, dict(_TIMM_CBAM_CHANNEL),
                     "CBAM channel gate alone, timm ChannelAttn settings"),
    "spatial_gate": (L.SpatialGate, dict(_TIMM_CBAM_SPATIAL),
                     "CBAM spatial gate alone, timm SpatialAttn settings"),
    "bam": (L.BAM, {}, "Bottleneck Attention Module, official code (product of branches)"),
    "residual_attention": (L.ResidualAttention, {},
                           "Residual Attention Network module, (1 + soft mask) * trunk"),
}


def list_attention():
    """Sorted names accepted by `create_attention`."""
    return sorted(_ATTENTION)


def describe_attention():
    """`{name: description}` for every name accepted by `create_attention`."""
    return {name: _ATTENTION[name][2] for name in list_attention()}


def create_attention(name, channels=None, **kwargs):
    """Build the attention layer registered as `name`.

    Args:
        name: one of `list_attention()`; `None` or `""` returns `None` (no attention), so a
            backbone can pass its `attention=` argument straight through.
        channels: number of input channels. When given, the layer is built for
            `(batch, height, width, channels)` inputs right away, so a configuration that
            does not fit the channel count fails here rather than inside a model.
        **kwargs: overrides of the layer's constructor arguments.

    Returns:
        A Keras layer, or `None`.
    """
    if name is None or name == "":
        return None
    if not isinstance(name, str) or name.lower() not in _ATTENTION:
        raise ValueError(
            f"Unknown attention name={name!r}. Valid names: {', '.join(list_attention())}."
        )
    cls, defaults, _ = _ATTENTION[name.lower()]
    layer = cls(**{**defaults, **kwargs})
    if channels is not None:
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"`channels` must be a positive integer, got channels={channels!r}.")
        layer.build((None, None, None, channels))
    return layer
