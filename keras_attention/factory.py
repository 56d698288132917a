"""Create an attention layer by name, so a backbone can swap attention with one argument.

Names follow timm's `create_attn` where timm has the mechanism (`se`, `eca`, `ceca`, `gc`,
`gca`, `cbam`), so a timm user finds the same choice under the same name.
"""

from keras_attention import layers as L
from keras_attention.names import ATTENTION, describe_attention, list_attention  # noqa: F401


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
    if not isinstance(name, str) or name.lower() not in ATTENTION:
        raise ValueError(
            f"Unknown attention name={name!r}. Valid names: {', '.join(list_attention())}."
        )
    class_name, defaults, _ = ATTENTION[name.lower()]
    cls = getattr(L, class_name)
    layer = cls(**{**defaults, **kwargs})
    if channels is not None:
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"`channels` must be a positive integer, got channels={channels!r}.")
        layer.build((None, None, None, channels))
    return layer
