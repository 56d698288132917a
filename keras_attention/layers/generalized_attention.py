"""Generalized attention (Zhu et al., "An Empirical Study of Spatial Attention Mechanisms in
Deep Networks", ICCV 2019)."""

import math

import keras
import numpy as np
from keras import layers, ops

from keras_attention.layers import _utils as U
from keras_attention.layers.base import AttentionLayer

register = keras.saving.register_keras_serializable(package="keras_attention")

# mmcv's fixed wave length of the sinusoidal relative position embedding.
_WAVE_LENGTH = 1000.0


def _check_attention_type(value):
    if not isinstance(value, str) or len(value) != 4 or set(value) - {"0", "1"} or "1" not in value:
        raise ValueError(
            "`attention_type` must be a string of four '0'/'1' flags with at least one '1' "
            f"(E1 query-key content, E2 query content-position, E3 key content, E4 position), "
            f"got attention_type={value!r}."
        )


@register
class GeneralizedAttention(AttentionLayer):
    """Generalized attention of Zhu et al. (ICCV 2019), following mmcv's
    `GeneralizedAttention`.

    Per head, the attention logit of query position `i` (content `q_i`) for key position `j`
    (content `k_j`) at relative offset `(dy, dx) = (y_i - y_j, x_i - x_j)` is the sum of the
    terms switched on by the flags of `attention_type`:

    - E1 `q_i . k_j` (query content and key content);
    - E2 `q_i . r_ij` (query content and relative position);
    - E3 `u . k_j` (key content alone, a learned vector `u` per head);
    - E4 `v . r_ij` (relative position alone, a learned vector `v` per head);

    with `r_ij = (W_x emb(dx) + W_y emb(dy)) / sqrt(2)`, `emb` the sinusoidal embedding of
    `position_embedding_dim / 2` features (frequencies `1000 ** (-4 k / dim)`, sines then
    cosines) and `W_x`, `W_y` learned linear maps to the `heads * head_dim` query width.
    Query, key and value are bias-free 1x1 convolutions to `head_dim = C // num_heads`
    channels per head; the logits (no `1 / sqrt(d)` scaling, as in mmcv) are normalised by a
    softmax over the key positions in float32; the heads' outputs are concatenated and
    projected back to `C` channels by a 1x1 convolution with bias, and
    `outputs = gamma * projected + inputs` with a learned scalar `gamma` initialised to 0
    (as mmcv), so a fresh block is the identity.

    Initialisation follows mmcv: convolutions and position maps `lecun_uniform` (mmcv's
    Kaiming uniform with `a=1`), `u` and `v` uniform in `+-1 / sqrt(2 head_dim)`.
    mmcv's `kv_stride` (keys and values subsampled, `AvgPool2d(1, stride)`) is supported;
    its `q_stride` (query subsampling with bilinear upsampling of the result) and
    `spatial_range` (local window mask) are not.

    One deviation from mmcv, where it is wrong: when E2 is on and E4 off (`"0100"`,
    `"1100"`, ...), mmcv's `forward` (its `elif self.attention_type[1]` branch) multiplies
    the vertical position features by the query permuted to `(w, h)` order, which only its
    horizontal term undoes: the vertical term of position `(y, x)` takes the query of
    `(x, y)`, wrong on square maps and a shape error on non-square ones. This
    layer uses the formula above throughout, which is what mmcv computes whenever E2 and E4
    are both on.

    Args:
        num_heads: number of attention heads (8, as mmdetection's configurations; mmcv's
            default is 9). `head_dim = C // num_heads` (floored, as mmcv).
        attention_type: four `"0"`/`"1"` flags selecting E1, E2, E3, E4 (`"1111"`).
        position_embedding_dim: width of the sinusoidal embedding of each offset axis
            before the learned maps; a multiple of 4; `None` (default) uses the input
            channels, as mmcv's `-1`. Only used by E2 and E4.
        position_magnitude: factor on the offsets before the embedding (1).
        kv_stride: subsampling stride of keys and values (1: full attention; mmcv's default
            is 2).
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a `(batch, height, width, channels)` feature map; height and width may be
            unknown until called.
        training: unused (no normalisation inside); accepted like every layer here.
        return_attention: if `True`, also return the attention weights.

    Returns:
        `gamma * projected + inputs` (same shape and compute dtype as the input); with
        `return_attention=True`, a tuple `(outputs, attention)` with the softmax weights of
        shape `(batch, num_heads, height * width, height_kv * width_kv)` (row-major
        positions, rows sum to 1), where `height_kv = ceil(height / kv_stride)` and likewise
        for the width.
    """

    def __init__(
        self,
        num_heads=8,
        attention_type="1111",
        position_embedding_dim=None,
        position_magnitude=1.0,
        kv_stride=1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        U.check_positive_int("num_heads", num_heads)
        _check_attention_type(attention_type)
        U.check_positive_int("position_embedding_dim", position_embedding_dim, allow_none=True)
        if position_embedding_dim is not None and position_embedding_dim % 4:
            raise ValueError(
                "`position_embedding_dim` must be a multiple of 4, got "
                f"position_embedding_dim={position_embedding_dim!r}."
            )
        U.check_positive_number("position_magnitude", position_magnitude)
        U.check_positive_int("kv_stride", kv_stride)
        self.num_heads = num_heads
        self.attention_type = attention_type
        self.position_embedding_dim = position_embedding_dim
        self.position_magnitude = position_magnitude
        self.kv_stride = kv_stride
        self.use_e1, self.use_e2, self.use_e3, self.use_e4 = (f == "1" for f in attention_type)

    def build(self, input_shape):
        channels = U.feature_map_channels(self, input_shape)
        if channels < self.num_heads:
            raise ValueError(
                f"`num_heads` can be at most the number of input channels ({channels}); got "
                f"num_heads={self.num_heads}."
            )
        self.head_dim = channels // self.num_heads
        width = self.head_dim * self.num_heads
        kw = U.sublayer_kwargs(self)

        def conv(name, filters, in_channels=channels, use_bias=False):
            layer = layers.Conv2D(
                filters, 1, use_bias=use_bias, name=name, kernel_initializer="lecun_uniform", **kw
            )
            layer.build((None, None, None, in_channels))
            return layer

        self.query = conv("query", width) if self.use_e1 or self.use_e2 else None
        self.key = conv("key", width) if self.use_e1 or self.use_e3 else None
        self.value = conv("value", width)
        self.position_x = self.position_y = None
        if self.use_e2 or self.use_e4:
            dim = self.position_embedding_dim or channels
            if dim % 4:
                raise ValueError(
                    "`position_embedding_dim` must be a multiple of 4; it defaults to the "
                    f"input channels ({channels}): pass position_embedding_dim explicitly."
                )
            self.embedding_dim = dim
            self.position_x = layers.Dense(
                width, use_bias=False, name="position_x", kernel_initializer="lecun_uniform", **kw
            )
            self.position_x.build((None, dim // 2))
            self.position_y = layers.Dense(
                width, use_bias=False, name="position_y", kernel_initializer="lecun_uniform", **kw
            )
            self.position_y.build((None, dim // 2))
        bound = 1.0 / math.sqrt(2 * self.head_dim)
        uniform = keras.initializers.RandomUniform(-bound, bound)
        self.content_bias = (
            self.add_weight(name="content_bias", shape=(width,), initializer=uniform)
            if self.use_e3
            else None
        )
        self.position_bias = (
            self.add_weight(name="position_bias", shape=(width,), initializer=uniform)
            if self.use_e4
            else None
        )
        self.output_proj = conv("output", channels, in_channels=width, use_bias=True)
        self.gamma = self.add_weight(name="gamma", shape=(), initializer="zeros")

    def _position_embedding(self, queries, keys, stride):
        """`(queries, keys, dim / 2)` float32 sinusoidal embedding of the offsets
        `(i - stride * j) * position_magnitude` along one axis."""
        i = ops.cast(ops.arange(queries), "float32")
        j = ops.cast(ops.arange(keys), "float32") * stride
        offsets = (i[:, None] - j[None, :]) * self.position_magnitude
        frequencies = _WAVE_LENGTH ** (
            4.0 / self.embedding_dim * np.arange(self.embedding_dim // 4, dtype="float32")
        )
        angles = offsets[:, :, None] / ops.convert_to_tensor(frequencies, "float32")
        return ops.concatenate([ops.sin(angles), ops.cos(angles)], axis=-1)

    def _project_position(self, dense, embedding):
        features = ops.cast(dense(ops.cast(embedding, self.compute_dtype)), "float32")
        features = features / math.sqrt(2.0)
        shape = ops.shape(features)
        return ops.reshape(features, (shape[0], shape[1], self.num_heads, self.head_dim))

    def _heads(self, x):
        shape = ops.shape(x)
        x = ops.reshape(x, (-1, shape[1], shape[2], self.num_heads, self.head_dim))
        return ops.cast(x, "float32")

    def call(self, inputs, training=None, return_attention=False):
        stride = self.kv_stride
        x_kv = inputs if stride == 1 else inputs[:, ::stride, ::stride, :]
        shape, kv_shape = ops.shape(inputs), ops.shape(x_kv)
        h, w, hk, wk = shape[1], shape[2], kv_shape[1], kv_shape[2]

        if self.query is not None:
            q = self._heads(self.query(inputs))  # (B, H, W, heads, d)
        if self.key is not None:
            k = self._heads(self.key(x_kv))  # (B, Hk, Wk, heads, d)
        if self.position_x is not None:
            px = self._project_position(self.position_x, self._position_embedding(w, wk, stride))
            py = self._project_position(self.position_y, self._position_embedding(h, hk, stride))

        # Logits as (B, heads, H * W, Hk, Wk), each term broadcast over the axes it ignores
        # (at most rank 5: TensorFlow's grappler rejects rank-6 broadcasting additions).
        n = self.num_heads
        terms = []
        if self.use_e1:
            q_flat = ops.reshape(q, (-1, h * w, n, self.head_dim))
            terms.append(ops.einsum("bind,bcand->bnica", q_flat, k))
        if self.use_e2:
            ex = ops.reshape(ops.einsum("byxnd,xand->bnyxa", q, px), (-1, n, h * w, 1, wk))
            ey = ops.reshape(ops.einsum("byxnd,ycnd->bnyxc", q, py), (-1, n, h * w, hk, 1))
            terms += [ex, ey]
        if self.use_e3:
            u = ops.reshape(ops.cast(self.content_bias, "float32"), (n, self.head_dim))
            terms.append(ops.expand_dims(ops.einsum("bcand,nd->bnca", k, u), 2))
        if self.use_e4:
            v = ops.reshape(ops.cast(self.position_bias, "float32"), (n, self.head_dim))
            ex = ops.einsum("xand,nd->nxa", px, v)[:, None, :, None, :]
            ey = ops.einsum("ycnd,nd->nyc", py, v)[:, :, None, :, None]
            terms.append(ops.reshape(ex + ey, (1, n, h * w, hk, wk)))
        energy = terms[0]
        for term in terms[1:]:
            energy = energy + term
        if not (self.use_e1 or self.use_e2):
            # Only key- or position-dependent terms: broadcast over batch and query positions.
            zeros = ops.zeros_like(ops.cast(inputs[..., 0], "float32"))
            energy = energy + ops.reshape(zeros, (-1, 1, h * w, 1, 1))

        energy = ops.reshape(energy, (-1, self.num_heads, h * w, hk * wk))
        attention = ops.cast(ops.softmax(energy, axis=-1), self.compute_dtype)
        value = ops.reshape(self.value(x_kv), (-1, hk * wk, self.num_heads, self.head_dim))
        mixed = ops.einsum("bnij,bjnd->bind", attention, value)
        mixed = ops.reshape(mixed, (-1, h, w, self.num_heads * self.head_dim))
        outputs = ops.cast(self.gamma, inputs.dtype) * self.output_proj(mixed) + inputs
        return (outputs, attention) if return_attention else outputs

    def compute_attention_shape(self, input_shape):
        def product(*sizes):
            return None if any(s is None for s in sizes) else math.prod(sizes)

        h, w = input_shape[1], input_shape[2]
        s = self.kv_stride
        hk = None if h is None else -(-h // s)
        wk = None if w is None else -(-w // s)
        return (input_shape[0], self.num_heads, product(h, w), product(hk, wk))

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            attention_type=self.attention_type,
            position_embedding_dim=self.position_embedding_dim,
            position_magnitude=self.position_magnitude,
            kv_stride=self.kv_stride,
        )
        return config
