"""Create an attention layer by name, so a backbone can swap attention with one argument.

Names follow timm's `create_attn` where timm has the mechanism (`se`, `eca`, `ceca`, `gc`,
`gca`, `cbam`), so a timm user finds the same choice under the same name.
"""

import inspect
import warnings

from keras_attention import layers as L
from keras_attention.layers._utils import check_positive_int
from keras_attention.names import ATTENTION, describe_attention, list_attention  # noqa: F401

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
    if not isinstance(attention, str) or attention.lower() not in ATTENTION:
        raise ValueError(
            f"Unknown attention name={attention!r}. Valid names: {', '.join(list_attention())}."
        )
    class_name, defaults, _ = ATTENTION[attention.lower()]
    cls = getattr(L, class_name)
    kwargs = _translate_timm_arguments(attention, cls, dict(kwargs))
    layer = cls(**{**defaults, **kwargs})
    if channels is not None:
        check_positive_int("channels", channels)
        layer.build((None, None, None, channels))
    return layer
