"""Neighbourhood (local window) self-attention and its cross-frame version."""

import keras
from keras import layers, ops

from keras_attention.layers import _utils as U
from keras_attention.layers.base import AttentionLayer

register = keras.saving.register_keras_serializable(package="keras_attention")

# Logit of the neighbours outside the image: exp underflows to exactly 0 in float32, and the
# centre of the window is always inside, so no row is fully masked.
_MASKED_LOGIT = -1e9


def _flat_pixels(x):
    """`(B, H, W, ...)` -> `(B * H * W, ...)` (the trailing axes are static)."""
    return ops.reshape(x, (-1, *x.shape[3:]))


def _window_views(x, kernel_size, dilation):
    """The `k * k` shifted views of a zero-padded `(B, H, W, ...)` tensor, stacked on axis 3.

    View `i * k + j` holds, at `(y, x)`, the value at `(y + (i - r) * d, x + (j - r) * d)`
    (`r = k // 2`, `d = dilation`; zeros outside the image). The slices end at offsets from
    the end of the padded tensor, so height and width may be unknown when tracing.
    """
    pad = (kernel_size // 2) * dilation
    padding = [(0, 0), (pad, pad), (pad, pad)] + [(0, 0)] * (len(x.shape) - 3)
    padded = ops.pad(x, padding)
    views = []
    for i in range(kernel_size):
        for j in range(kernel_size):
            top, left = i * dilation, j * dilation
            bottom, right = 2 * pad - top, 2 * pad - left
            views.append(padded[:, top : (-bottom or None), left : (-right or None)])
    return ops.stack(views, axis=3)


class _LocalAttentionBase(AttentionLayer):
    """Multi-head attention from each query position to a `k x k` window of a key map."""

    def __init__(
        self,
        num_heads=1,
        key_dim=None,
        value_dim=None,
        kernel_size=7,
        dilation=1,
        use_bias=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        U.check_positive_int("num_heads", num_heads)
        U.check_positive_int("key_dim", key_dim, allow_none=True)
        U.check_positive_int("value_dim", value_dim, allow_none=True)
        U.check_positive_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(
                f"`kernel_size` must be an odd positive integer, got kernel_size={kernel_size!r}."
            )
        U.check_positive_int("dilation", dilation)
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.value_dim = value_dim
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.use_bias = bool(use_bias)

    def _build_projections(self, channels):
        if self.key_dim is None and channels % self.num_heads:
            raise ValueError(
                f"Without `key_dim`, the input channels ({channels}) must be divisible by "
                f"`num_heads`; got num_heads={self.num_heads}."
            )
        key_dim = self.key_dim or channels // self.num_heads
        value_dim = self.value_dim or key_dim
        heads = self.num_heads
        bias = "nd" if self.use_bias else None
        kw = U.sublayer_kwargs(self)

        def projection(name, depth, bias_axes):
            layer = layers.EinsumDense(
                "bhwc,cnd->bhwnd",
                output_shape=(None, None, heads, depth),
                bias_axes=bias_axes,
                name=name,
                **kw,
            )
            layer.build((None, None, None, channels))
            return layer

        self.query = projection("query", key_dim, bias)
        # A key bias adds the same q . b to every logit of a window: the softmax ignores it.
        self.key = projection("key", key_dim, None)
        self.value = projection("value", value_dim, bias)
        self.output_dense = layers.EinsumDense(
            "bhwnd,ndc->bhwc",
            output_shape=(None, None, channels),
            bias_axes="c" if self.use_bias else None,
            name="output_dense",
            **kw,
        )
        self.output_dense.build((None, None, None, heads, value_dim))
        self.scale = float(key_dim) ** -0.5

    def _attend(self, query_map, reference_map):
        q = self.query(query_map) * ops.cast(self.scale, query_map.dtype)  # (B, H, W, n, d)
        keys = _window_views(self.key(reference_map), self.kernel_size, self.dilation)
        values = _window_views(self.value(reference_map), self.kernel_size, self.dilation)
        inside = _window_views(
            ops.ones_like(reference_map[..., :1]), self.kernel_size, self.dilation
        )  # (B, H, W, k*k, 1)
        inside = ops.transpose(inside, (0, 1, 2, 4, 3)) > 0  # (B, H, W, 1, k*k)
        # per-pixel einsums with (B, H, W) as one batch axis: LiteRT's batch matmul takes at
        # most 5-D operands, and these are 6-D (the same products, so the same values)
        pixels = ops.shape(q)[:3]
        logits = ops.einsum("mnd,mknd->mnk", _flat_pixels(q), _flat_pixels(keys))
        logits = ops.reshape(ops.cast(logits, "float32"), (*pixels, *logits.shape[1:]))
        logits = ops.where(inside, logits, _MASKED_LOGIT)
        attention = ops.cast(ops.softmax(logits, axis=-1), query_map.dtype)  # (B, H, W, n, k*k)
        mixed = ops.einsum("mnk,mknd->mnd", _flat_pixels(attention), _flat_pixels(values))
        mixed = ops.reshape(mixed, (*pixels, *mixed.shape[1:]))
        return self.output_dense(mixed), attention

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            key_dim=self.key_dim,
            value_dim=self.value_dim,
            kernel_size=self.kernel_size,
            dilation=self.dilation,
            use_bias=self.use_bias,
        )
        return config


@register
class LocalSelfAttention2D(_LocalAttentionBase):
    """Neighbourhood self-attention: each position attends to the `k x k` window around it.

    The survey's remedy for the quadratic cost of global self-attention. Queries, keys and
    values are 1x1 projections of the input into `num_heads` heads; the query at `(y, x)`
    is compared (scaled dot product, `key_dim ** -0.5`) with the keys of the `k * k`
    positions `(y + (i - k // 2) * dilation, x + (j - k // 2) * dilation)`; a softmax over
    the window (float32) weights their values, and a 1x1 projection maps the heads back to
    `C` channels. The window stays centred at the borders: neighbours outside the image are
    masked out of the softmax (weight exactly 0, the remaining weights still sum to 1), not
    attended as zero-valued pixels, and unlike NATTEN the window is not shifted inwards.
    The same as dense multi-head attention with a band mask, at `O(H W k^2)` memory
    (shifted views of the padded keys and values) instead of `O((H W)^2)`. No residual.

    Args:
        num_heads: number of attention heads (1).
        key_dim: width of each head's queries and keys; `None` (default): `C // num_heads`
            (then `C` must be divisible by `num_heads`).
        value_dim: width of each head's values; `None` (default): `key_dim`.
        kernel_size: odd side `k` of the square window (7).
        dilation: spacing of the window's taps (1): the window covers offsets
            `(i - k // 2) * dilation`, `i = 0 .. k - 1`, on each axis.
        use_bias: whether the query, value and output projections have biases (the key
            projection never has one: it would shift a window's logits equally).
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a `(batch, height, width, channels)` feature map; height and width may be
            unknown until called.
        training: unused (no dropout or normalisation inside); accepted like every layer.
        return_attention: if `True`, also return the window attention.

    Returns:
        The attended feature map (same shape and compute dtype as the input); with
        `return_attention=True`, a tuple `(outputs, attention)` with the attention of shape
        `(batch, height, width, num_heads, kernel_size ** 2)`: entry `i * k + j` is the
        weight of the neighbour at offset `((i - k // 2) * dilation, (j - k // 2) *
        dilation)`; it is 0 where that neighbour lies outside the image, and each
        `(b, y, x, head)` row sums to 1.
    """

    def build(self, input_shape):
        self._build_projections(U.feature_map_channels(self, input_shape))

    def call(self, inputs, training=None, return_attention=False):
        outputs, attention = self._attend(inputs, inputs)
        return (outputs, attention) if return_attention else outputs

    def compute_attention_shape(self, input_shape):
        return (*input_shape[:3], self.num_heads, self.kernel_size**2)


@register
class LocalCrossAttention2D(_LocalAttentionBase):
    """Neighbourhood cross-attention between two frames, for feature alignment without flow.

    The survey's alternative to optical-flow warping in video feature propagation (Deep
    Feature Flow): the features of frame `t` (queries) gather the features of a reference
    frame `t - k` (keys and values) from the `k x k` window around the same position, so
    the content may have moved by up to `(k // 2) * dilation` pixels. Exactly
    `LocalSelfAttention2D`'s computation (same projections, scaling, masking of neighbours
    outside the image, float32 softmax, output projection) with the keys and values taken
    from the reference map; `LocalSelfAttention2D` is this layer applied to `[x, x]`.

    Args:
        num_heads: number of attention heads (1).
        key_dim: width of each head's queries and keys; `None` (default): `C // num_heads`
            (then `C` must be divisible by `num_heads`).
        value_dim: width of each head's values; `None` (default): `key_dim`.
        kernel_size: odd side `k` of the square window (7).
        dilation: spacing of the window's taps (1): the window covers offsets
            `(i - k // 2) * dilation`, `i = 0 .. k - 1`, on each axis.
        use_bias: whether the query, value and output projections have biases (the key
            projection never has one: it would shift a window's logits equally).
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a list `[query_frame, reference_frame]` of two `(batch, height, width,
            channels)` feature maps of the same shape; height and width may be unknown.
        training: unused; accepted like every layer here.
        return_attention: if `True`, also return the window attention.

    Returns:
        The query frame's aligned features (the query frame's shape and compute dtype); with
        `return_attention=True`, a tuple `(outputs, attention)` with the attention of shape
        `(batch, height, width, num_heads, kernel_size ** 2)` over the reference frame's
        window, laid out as in `LocalSelfAttention2D`.
    """

    def _split(self, input_shape):
        if (
            not isinstance(input_shape, (list, tuple))
            or len(input_shape) != 2
            or not all(isinstance(s, (list, tuple)) for s in input_shape)
        ):
            raise ValueError(
                f"{type(self).__name__} expects `inputs` = [query_frame, reference_frame], two "
                f"feature maps; got input_shape={input_shape}."
            )
        return tuple(input_shape[0]), tuple(input_shape[1])

    def build(self, input_shape):
        query_shape, reference_shape = self._split(input_shape)
        channels = U.feature_map_channels(self, query_shape)
        U.feature_map_channels(self, reference_shape)
        if any(
            a is not None and b is not None and a != b for a, b in zip(query_shape, reference_shape)
        ):
            raise ValueError(
                f"{type(self).__name__} needs `inputs` (query and reference frames) of the same "
                f"shape; got input_shape={[query_shape, reference_shape]}."
            )
        self._build_projections(channels)

    def call(self, inputs, training=None, return_attention=False):
        query_frame, reference_frame = inputs
        outputs, attention = self._attend(query_frame, reference_frame)
        return (outputs, attention) if return_attention else outputs

    def compute_output_shape(self, input_shape):
        return self._split(input_shape)[0]

    def compute_attention_shape(self, input_shape):
        query_shape = self._split(input_shape)[0]
        return (*query_shape[:3], self.num_heads, self.kernel_size**2)

    def compute_output_spec(self, inputs, training=None, return_attention=False):
        shapes = [tuple(x.shape) for x in inputs]
        outputs = keras.KerasTensor(self.compute_output_shape(shapes), dtype=self.compute_dtype)
        if not return_attention:
            return outputs
        attention = keras.KerasTensor(
            self.compute_attention_shape(shapes), dtype=self.compute_dtype
        )
        return outputs, attention
