"""Self-attention with relative position logits: BoTNet, HaloNet, LambdaNetworks and
Attention Augmented Convolution."""

import keras
import numpy as np
from keras import layers, ops

from keras_attention.layers import _utils as U
from keras_attention.layers.base import AttentionLayer

register = keras.saving.register_keras_serializable(package="keras_attention")


# --------------------------------------------------------------------------------------
# Relative position logits (Bello et al. 2019, appendix; reused by BoTNet and HaloNet)


def rel_to_abs(x):
    """Relative logits `(N, L, R)` to absolute logits `(N, L, K)`, `K = (R + 1) // 2`.

    `out[n, i, j] = x[n, i, K - 1 + j - i]`: the pad-reshape-slice trick of the
    Attention Augmented Convolution paper (`L = K` there; HaloNet has `L` queries of a block
    against `K >= L` keys of its window). `L` and `R` must be static.
    """
    length, rel_size = x.shape[-2], x.shape[-1]
    keys = (rel_size + 1) // 2
    x = ops.pad(x, ((0, 0), (0, 0), (0, 1)))
    x = ops.reshape(x, (-1, length * (rel_size + 1)))
    x = ops.pad(x, ((0, 0), (0, rel_size - length)))
    x = ops.reshape(x, (-1, length + 1, rel_size))
    return x[:, :length, keys - 1 :]


def relative_logits_1d(q, rel):
    """`q` `(N, A, L, d)` against the table `rel` `(R, d)`: `(N, A, L, K)` absolute logits
    along the last spatial axis (`K = (R + 1) // 2`)."""
    _, a, length, _ = q.shape
    logits = ops.einsum("nald,rd->nalr", q, ops.cast(rel, q.dtype))
    logits = rel_to_abs(ops.reshape(logits, (-1, length, rel.shape[0])))
    return ops.reshape(logits, (-1, a, length, (rel.shape[0] + 1) // 2))


def relative_logits_2d(q, rel_h, rel_w):
    """2D relative logits of queries `q` `(N, h, w, d)` over a `(kh, kw)` key grid.

    Returns `(N, h * w, kh * kw)` with `out[n, (y, x), (y', x')] = q[n, y, x] . rel_h[kh - 1
    + y' - y] + q[n, y, x] . rel_w[kw - 1 + x' - x]`; `kh = (len(rel_h) + 1) // 2`, likewise
    `kw`. Positions are flattened row-major.
    """
    _, h, w, _ = q.shape
    kh, kw = (rel_h.shape[0] + 1) // 2, (rel_w.shape[0] + 1) // 2
    logits_w = relative_logits_1d(q, rel_w)  # (N, h, w, kw)
    logits_h = relative_logits_1d(ops.transpose(q, (0, 2, 1, 3)), rel_h)  # (N, w, h, kh)
    logits_h = ops.transpose(logits_h, (0, 2, 1, 3))  # (N, h, w, kh)
    logits = ops.expand_dims(logits_h, -1) + ops.expand_dims(logits_w, -2)
    return ops.reshape(logits, (-1, h * w, kh * kw))


# --------------------------------------------------------------------------------------
# Shared configuration helpers


def _pair(name, value, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(U.is_positive_int(v) for v in value)
    ):
        raise ValueError(
            f"`{name}` must be a positive integer or a pair of them, got {name}={value!r}."
        )
    return tuple(value)


def _qk_head_dim(dim_out, num_heads, dim_head, qk_ratio):
    """timm's width of a query / key head: `dim_head`, or
    `make_divisible(dim_out * qk_ratio, 8) // num_heads`."""
    return dim_head or U.make_divisible(dim_out * qk_ratio, divisor=8) // num_heads


def _check_heads(layer, dim_out, num_heads):
    if dim_out % num_heads:
        raise ValueError(
            f"{type(layer).__name__}: the output width ({dim_out}) must be divisible by "
            f"`num_heads`, got num_heads={num_heads} (set `dim_out` or `num_heads`)."
        )


def _check_stride(stride):
    if stride not in (1, 2) or isinstance(stride, bool):
        raise ValueError(f"`stride` must be 1 or 2, got stride={stride!r}.")


def _pooled(size, stride):
    return None if size is None else size // stride


def _trunc_normal(stddev):
    return keras.initializers.TruncatedNormal(stddev=stddev)


# --------------------------------------------------------------------------------------
# BoTNet


def _resolve_feat_size(layer, input_shape, condition=""):
    """The (height, width) that `layer`'s relative position tables are sized for: its
    `feat_size`, or the input's static size when `feat_size` is None."""
    spatial = tuple(input_shape[1:3])
    name = type(layer).__name__
    if layer.feat_size is None:
        if None in spatial:
            raise ValueError(
                f"{name} {condition}needs `feat_size` when the input's height and width are "
                f"unknown; got feat_size=None and input_shape={tuple(input_shape)}."
            )
        return tuple(int(s) for s in spatial)
    if any(s is not None and s != f for s, f in zip(spatial, layer.feat_size)):
        raise ValueError(
            f"{name} was configured with feat_size={layer.feat_size} but got "
            f"input_shape={tuple(input_shape)}."
        )
    return layer.feat_size


@register
class BottleneckAttention(AttentionLayer):
    """Multi-head self-attention with 2D relative position logits over the whole feature
    map (BoTNet, Srinivas et al., CVPR 2021). Matches timm's `BottleneckAttn`.

    One 1x1 convolution (no bias by default) gives `[q | k | v]`, each with the heads
    contiguous; `q` and `k` heads have `dim_head` channels, `v` heads `dim_out / num_heads`.
    Logits are `q . k` plus relative logits `q . height_rel[y_k - y_q + H - 1] + q .
    width_rel[x_k - x_q + W - 1]`, scaled by `dim_head ** -0.5` (content only, or content
    and position with `scale_pos_embed=True`); softmax over the keys (float32); the heads'
    outputs are concatenated and, with `stride=2`, average-pooled 2x2.

    Args:
        feat_size: `(height, width)` (or one integer) of the input, which the relative
            tables `(2 * height - 1, dim_head)` and `(2 * width - 1, dim_head)` are sized
            for; `None` takes it from the input shape at build time.
        dim_out: output channels (the input's by default); must be divisible by `num_heads`.
        stride: 1, or 2 to average-pool the output 2x2.
        num_heads: number of heads (4).
        dim_head: width of a query / key head; by default `make_divisible(dim_out *
            qk_ratio, 8) // num_heads` like timm.
        qk_ratio: query / key width relative to `dim_out` when `dim_head` is not given.
        qkv_bias: whether the qkv convolution has a bias.
        scale_pos_embed: scale the relative logits by `dim_head ** -0.5` too.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a `(batch, height, width, channels)` feature map of size `feat_size`.
        training: unused; accepted like every layer here.
        return_attention: if `True`, also return the attention weights.

    Returns:
        The `(batch, height / stride, width / stride, dim_out)` attention output; with
        `return_attention=True`, a tuple `(outputs, attention)` with the attention of shape
        `(batch, num_heads, height * width, height * width)` (rows: queries, columns: keys,
        positions flattened row-major; rows sum to 1).
    """

    def __init__(
        self,
        feat_size=None,
        dim_out=None,
        stride=1,
        num_heads=4,
        dim_head=None,
        qk_ratio=1.0,
        qkv_bias=False,
        scale_pos_embed=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        feat_size = _pair("feat_size", feat_size, allow_none=True)
        U.check_positive_int("dim_out", dim_out, allow_none=True)
        _check_stride(stride)
        U.check_positive_int("num_heads", num_heads)
        U.check_positive_int("dim_head", dim_head, allow_none=True)
        U.check_positive_number("qk_ratio", qk_ratio)
        self.feat_size = feat_size
        self.dim_out = dim_out
        self.stride = stride
        self.num_heads = num_heads
        self.dim_head = dim_head
        self.qk_ratio = qk_ratio
        self.qkv_bias = bool(qkv_bias)
        self.scale_pos_embed = bool(scale_pos_embed)

    def build(self, input_shape):
        channels = U.feature_map_channels(self, input_shape)
        self._feat_size = _resolve_feat_size(self, input_shape)
        dim_out = self.dim_out or channels
        _check_heads(self, dim_out, self.num_heads)
        self.dim_head_qk = _qk_head_dim(dim_out, self.num_heads, self.dim_head, self.qk_ratio)
        self.dim_head_v = dim_out // self.num_heads
        self.dim_out_qk = self.num_heads * self.dim_head_qk
        self.scale = self.dim_head_qk**-0.5
        kw = U.sublayer_kwargs(self)
        self.qkv = layers.Conv2D(
            2 * self.dim_out_qk + dim_out,
            1,
            use_bias=self.qkv_bias,
            kernel_initializer="lecun_normal",
            name="qkv",
            **kw,
        )
        self.qkv.build((None, None, None, channels))
        height, width = self._feat_size
        self.height_rel = self.add_weight(
            name="height_rel",
            shape=(2 * height - 1, self.dim_head_qk),
            initializer=_trunc_normal(self.scale),
        )
        self.width_rel = self.add_weight(
            name="width_rel",
            shape=(2 * width - 1, self.dim_head_qk),
            initializer=_trunc_normal(self.scale),
        )
        self.pool = layers.AveragePooling2D(2, name="pool", **kw) if self.stride == 2 else None

    def call(self, inputs, training=None, return_attention=False):
        height, width = self._feat_size
        n, dqk, dv = self.num_heads, self.dim_head_qk, self.dim_head_v
        qkv = self.qkv(inputs)
        q = qkv[..., : self.dim_out_qk]
        k = qkv[..., self.dim_out_qk : 2 * self.dim_out_qk]
        v = qkv[..., 2 * self.dim_out_qk :]
        q = ops.transpose(ops.reshape(q, (-1, height * width, n, dqk)), (0, 2, 1, 3))
        k = ops.transpose(ops.reshape(k, (-1, height * width, n, dqk)), (0, 2, 1, 3))
        v = ops.transpose(ops.reshape(v, (-1, height * width, n, dv)), (0, 2, 1, 3))
        content = ops.einsum("bnid,bnjd->bnij", q, k)
        position = relative_logits_2d(
            ops.reshape(q, (-1, height, width, dqk)), self.height_rel, self.width_rel
        )
        position = ops.reshape(position, (-1, n, height * width, height * width))
        if self.scale_pos_embed:
            logits = (content + position) * self.scale
        else:
            logits = content * self.scale + position
        attention = U.softmax_float32(logits)
        outputs = ops.einsum("bnij,bnjd->bind", attention, v)
        outputs = ops.reshape(outputs, (-1, height, width, n * dv))
        if self.pool is not None:
            outputs = self.pool(outputs)
        return (outputs, attention) if return_attention else outputs

    def compute_output_shape(self, input_shape):
        dim_out = self.dim_out or input_shape[-1]
        return (
            input_shape[0],
            _pooled(input_shape[1], self.stride),
            _pooled(input_shape[2], self.stride),
            dim_out,
        )

    def compute_attention_shape(self, input_shape):
        height, width = self.feat_size or input_shape[1:3]
        return (input_shape[0], self.num_heads, height * width, height * width)

    def get_config(self):
        config = super().get_config()
        config.update(
            feat_size=self.feat_size,
            dim_out=self.dim_out,
            stride=self.stride,
            num_heads=self.num_heads,
            dim_head=self.dim_head,
            qk_ratio=self.qk_ratio,
            qkv_bias=self.qkv_bias,
            scale_pos_embed=self.scale_pos_embed,
        )
        return config


# --------------------------------------------------------------------------------------
# HaloNet


@register
class HaloAttention(AttentionLayer):
    """Blocked local self-attention with halos and 2D relative position logits (HaloNet,
    Vaswani et al., CVPR 2021). Matches timm's `HaloAttn`.

    The feature map is cut into non-overlapping `block_size` x `block_size` query blocks;
    each attends to its window of `block_size + 2 * halo_size` keys per side (the block and
    a halo around it; outside the map the keys and values are zeros, attended to like any
    other, as in timm). Queries come from a 1x1 convolution (strided by `stride` unless
    average pooling is used), keys and values from another one whose channels are
    interleaved per head (`[k_head0 | v_head0 | k_head1 | ...]`). Relative logits use
    `height_rel` / `width_rel` tables of `(2 * window - 1, dim_head)` rows, the query's row
    index in its block against the key's in the window (timm's convention).

    Export: converts to ONNX; not to LiteRT's builtin ops (the block-and-window rearrangement
    is a transpose of more than 6 axes, which LiteRT's TRANSPOSE does not take):
    `zoo.export(..., format="litert")` fails naming this layer and the op
    (benchmarks/results/export_matrix.md).

    Args:
        block_size: side of the query blocks (8); the input's height and width must be
            multiples of it.
        halo_size: halo width around each block (3).
        dim_out: output channels (the input's by default); divisible by `num_heads`.
        stride: 1, or 2 to halve the output: queries are strided (blocks of
            `block_size / 2`) when `block_size` is even, else (or with `avg_down=True`)
            the output is average-pooled 2x2.
        num_heads: number of heads (8).
        dim_head: width of a query / key head; by default `make_divisible(dim_out *
            qk_ratio, 8) // num_heads` like timm.
        qk_ratio: query / key width relative to `dim_out` when `dim_head` is not given.
        qkv_bias: whether the q and kv convolutions have biases.
        avg_down: with `stride=2`, average-pool the output instead of striding the queries.
        scale_pos_embed: scale the relative logits by `dim_head ** -0.5` too.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a `(batch, height, width, channels)` feature map; height and width may be
            unknown until called.
        training: unused; accepted like every layer here.
        return_attention: if `True`, also return the attention weights.

    Returns:
        The `(batch, height / stride, width / stride, dim_out)` attention output; with
        `return_attention=True`, a tuple `(outputs, attention)` with the attention of shape
        `(batch, num_heads, num_blocks, query_block ** 2, window ** 2)`: blocks row-major,
        `query_block` is `block_size` (or `block_size / 2` for strided queries), `window =
        block_size + 2 * halo_size`; rows sum to 1.
    """

    def __init__(
        self,
        block_size=8,
        halo_size=3,
        dim_out=None,
        stride=1,
        num_heads=8,
        dim_head=None,
        qk_ratio=1.0,
        qkv_bias=False,
        avg_down=False,
        scale_pos_embed=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        U.check_positive_int("block_size", block_size)
        U.check_non_negative_int("halo_size", halo_size)
        U.check_positive_int("dim_out", dim_out, allow_none=True)
        _check_stride(stride)
        U.check_positive_int("num_heads", num_heads)
        U.check_positive_int("dim_head", dim_head, allow_none=True)
        U.check_positive_number("qk_ratio", qk_ratio)
        self.block_size = block_size
        self.halo_size = halo_size
        self.dim_out = dim_out
        self.stride = stride
        self.num_heads = num_heads
        self.dim_head = dim_head
        self.qk_ratio = qk_ratio
        self.qkv_bias = bool(qkv_bias)
        self.avg_down = bool(avg_down)
        self.scale_pos_embed = bool(scale_pos_embed)
        self.win_size = block_size + 2 * halo_size
        use_avg_pool = stride > 1 and (self.avg_down or block_size % stride != 0)
        self.block_stride = stride if stride > 1 and not use_avg_pool else 1
        self.query_block = block_size // self.block_stride
        self.use_avg_pool = use_avg_pool

    def build(self, input_shape):
        channels = U.feature_map_channels(self, input_shape)
        for size in input_shape[1:3]:
            if size is not None and size % self.block_size:
                raise ValueError(
                    f"HaloAttention needs height and width divisible by `block_size`; got "
                    f"block_size={self.block_size} and input_shape={tuple(input_shape)}."
                )
        dim_out = self.dim_out or channels
        _check_heads(self, dim_out, self.num_heads)
        self.dim_head_qk = _qk_head_dim(dim_out, self.num_heads, self.dim_head, self.qk_ratio)
        self.dim_head_v = dim_out // self.num_heads
        self.scale = self.dim_head_qk**-0.5
        kw = U.sublayer_kwargs(self)
        self.q = layers.Conv2D(
            self.num_heads * self.dim_head_qk,
            1,
            strides=self.block_stride,
            use_bias=self.qkv_bias,
            kernel_initializer="lecun_normal",
            name="q",
            **kw,
        )
        self.q.build((None, None, None, channels))
        self.kv = layers.Conv2D(
            self.num_heads * (self.dim_head_qk + self.dim_head_v),
            1,
            use_bias=self.qkv_bias,
            kernel_initializer="lecun_normal",
            name="kv",
            **kw,
        )
        self.kv.build((None, None, None, channels))
        rel_size = 2 * self.win_size - 1
        self.height_rel = self.add_weight(
            name="height_rel",
            shape=(rel_size, self.dim_head_qk),
            initializer=_trunc_normal(self.scale),
        )
        self.width_rel = self.add_weight(
            name="width_rel",
            shape=(rel_size, self.dim_head_qk),
            initializer=_trunc_normal(self.scale),
        )
        self.pool = layers.AveragePooling2D(2, name="pool", **kw) if self.use_avg_pool else None

    def _windows(self, kv, num_h, num_w):
        """`(B, Hp, Wp, C)` zero-padded keys / values -> `(B, nh, win, nw, win, C)`."""
        win, block = self.win_size, self.block_size
        offsets = ops.arange(win, dtype="int32")
        rows = ops.reshape(ops.arange(num_h, dtype="int32")[:, None] * block + offsets, (-1,))
        cols = ops.reshape(ops.arange(num_w, dtype="int32")[:, None] * block + offsets, (-1,))
        kv = ops.take(ops.take(kv, rows, axis=1), cols, axis=2)  # (B, nh*win, nw*win, C)
        channels = kv.shape[-1]
        return ops.reshape(kv, (-1, num_h, win, num_w, win, channels))

    def call(self, inputs, training=None, return_attention=False):
        n, dqk, dv = self.num_heads, self.dim_head_qk, self.dim_head_v
        qb, win, halo = self.query_block, self.win_size, self.halo_size
        shape = ops.shape(inputs)
        num_h, num_w = shape[1] // self.block_size, shape[2] // self.block_size
        q = ops.reshape(self.q(inputs), (-1, num_h, qb, num_w, qb, n, dqk))
        q = ops.transpose(q, (0, 5, 1, 3, 2, 4, 6))  # (B, n, nh, nw, qb, qb, d)
        q = ops.reshape(q, (-1, n, num_h * num_w, qb * qb, dqk))
        kv = ops.pad(self.kv(inputs), ((0, 0), (halo, halo), (halo, halo), (0, 0)))
        kv = ops.reshape(self._windows(kv, num_h, num_w), (-1, num_h, win, num_w, win, n, dqk + dv))
        kv = ops.transpose(kv, (0, 5, 1, 3, 2, 4, 6))  # (B, n, nh, nw, win, win, d)
        kv = ops.reshape(kv, (-1, n, num_h * num_w, win * win, dqk + dv))
        k, v = kv[..., :dqk], kv[..., dqk:]
        content = ops.einsum("bnpid,bnpjd->bnpij", q, k)
        position = relative_logits_2d(
            ops.reshape(q, (-1, qb, qb, dqk)), self.height_rel, self.width_rel
        )
        position = ops.reshape(position, (-1, n, num_h * num_w, qb * qb, win * win))
        if self.scale_pos_embed:
            logits = (content + position) * self.scale
        else:
            logits = content * self.scale + position
        attention = U.softmax_float32(logits)
        outputs = ops.einsum("bnpij,bnpjd->bnpid", attention, v)
        outputs = ops.reshape(outputs, (-1, n, num_h, num_w, qb, qb, dv))
        outputs = ops.transpose(outputs, (0, 2, 4, 3, 5, 1, 6))  # (B, nh, qb, nw, qb, n, d)
        outputs = ops.reshape(outputs, (-1, num_h * qb, num_w * qb, n * dv))
        if self.pool is not None:
            outputs = self.pool(outputs)
        return (outputs, attention) if return_attention else outputs

    def compute_output_shape(self, input_shape):
        dim_out = self.dim_out or input_shape[-1]
        return (
            input_shape[0],
            _pooled(input_shape[1], self.stride),
            _pooled(input_shape[2], self.stride),
            dim_out,
        )

    def compute_attention_shape(self, input_shape):
        height, width = input_shape[1:3]
        blocks = None
        if height is not None and width is not None:
            blocks = (height // self.block_size) * (width // self.block_size)
        return (input_shape[0], self.num_heads, blocks, self.query_block**2, self.win_size**2)

    def get_config(self):
        config = super().get_config()
        config.update(
            block_size=self.block_size,
            halo_size=self.halo_size,
            dim_out=self.dim_out,
            stride=self.stride,
            num_heads=self.num_heads,
            dim_head=self.dim_head,
            qk_ratio=self.qk_ratio,
            qkv_bias=self.qkv_bias,
            avg_down=self.avg_down,
            scale_pos_embed=self.scale_pos_embed,
        )
        return config


# --------------------------------------------------------------------------------------
# LambdaNetworks


def relative_position_index(height, width):
    """`(H * W, H * W)` indices into a flattened `(2H - 1, 2W - 1)` table: entry `[a, b]`
    points at the offset of key position `b` from query position `a` (row-major)."""
    ys, xs = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    dy = ys[None, :] - ys[:, None] + height - 1
    dx = xs[None, :] - xs[:, None] + width - 1
    return (dy * (2 * width - 1) + dx).astype("int32")


@register
class LambdaLayer(AttentionLayer):
    """Lambda layer (LambdaNetworks, Bello, ICLR 2021), intra-depth 1. Matches timm's
    `LambdaLayer`.

    A 1x1 convolution gives queries (`num_heads * dim_head` channels, BatchNorm), keys
    (`dim_head`) and values (`dim_out / num_heads`, BatchNorm). Keys are normalised by a
    softmax over positions (float32) and summarise the context as the content lambda
    `softmax(k)^T v` (`dim_head x dim_v`), shared by all positions. Position lambdas are
    either local, `r x r` convolutions of each value channel into `dim_head` channels
    (`r` given; timm's `conv_lambda`), or global, `E_nm^T v` with relative embeddings
    `pos_emb` `(2H - 1, 2W - 1, dim_head)` of the offset between positions (`r=None`,
    static size). Each query head is applied to the sum of both lambdas; heads are
    concatenated and, with `stride=2`, average-pooled 2x2.

    Args:
        dim_out: output channels (the input's by default); divisible by `num_heads`.
        feat_size: `(height, width)` (or one integer) of the input for the global relative
            embeddings (`r=None`); `None` takes it from the input shape. Unused with `r`.
        stride: 1, or 2 to average-pool the output 2x2.
        num_heads: number of query heads (4).
        dim_head: width of queries and keys (16); `None` gives `make_divisible(dim_out *
            qk_ratio, 8) // num_heads` like timm.
        r: odd size of the local position lambda convolution (9), or `None` for global
            relative position embeddings.
        qk_ratio: query / key width relative to `dim_out` when `dim_head` is `None`.
        qkv_bias: whether the qkv convolution has a bias.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a `(batch, height, width, channels)` feature map; height and width may be
            unknown until called when `r` is set.
        training: whether the BatchNorms use batch statistics.
        return_attention: if `True`, also return the normalised keys.

    Returns:
        The `(batch, height / stride, width / stride, dim_out)` output; with
        `return_attention=True`, a tuple `(outputs, keys)` with the softmax-normalised keys
        of shape `(batch, height, width, dim_head)` (each key channel sums to 1 over the
        positions: the weights of the content lambda).
    """

    def __init__(
        self,
        dim_out=None,
        feat_size=None,
        stride=1,
        num_heads=4,
        dim_head=16,
        r=9,
        qk_ratio=1.0,
        qkv_bias=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        U.check_positive_int("dim_out", dim_out, allow_none=True)
        feat_size = _pair("feat_size", feat_size, allow_none=True)
        _check_stride(stride)
        U.check_positive_int("num_heads", num_heads)
        U.check_positive_int("dim_head", dim_head, allow_none=True)
        U.check_positive_int("r", r, allow_none=True)
        if r is not None and r % 2 == 0:
            raise ValueError(f"`r` must be an odd positive integer or None, got r={r!r}.")
        U.check_positive_number("qk_ratio", qk_ratio)
        self.dim_out = dim_out
        self.feat_size = feat_size
        self.stride = stride
        self.num_heads = num_heads
        self.dim_head = dim_head
        self.r = r
        self.qk_ratio = qk_ratio
        self.qkv_bias = bool(qkv_bias)

    def build(self, input_shape):
        channels = U.feature_map_channels(self, input_shape)
        dim_out = self.dim_out or channels
        _check_heads(self, dim_out, self.num_heads)
        self.dim_qk = _qk_head_dim(dim_out, self.num_heads, self.dim_head, self.qk_ratio)
        self.dim_v = dim_out // self.num_heads
        kw = U.sublayer_kwargs(self)
        q_width = self.num_heads * self.dim_qk
        self.qkv = layers.Conv2D(
            q_width + self.dim_qk + self.dim_v,
            1,
            use_bias=self.qkv_bias,
            kernel_initializer="lecun_normal",
            name="qkv",
            **kw,
        )
        self.qkv.build((None, None, None, channels))
        self.norm_q = U.torch_batch_norm("norm_q", kw)
        self.norm_q.build((None, None, None, q_width))
        self.norm_v = U.torch_batch_norm("norm_v", kw)
        self.norm_v.build((None, None, None, self.dim_v))
        if self.r is not None:
            self.conv_lambda = layers.Conv3D(
                self.dim_qk,
                (self.r, self.r, 1),
                padding="same",
                kernel_initializer=_trunc_normal(self.dim_qk**-0.5),
                name="conv_lambda",
                **kw,
            )
            self.conv_lambda.build((None, None, None, self.dim_v, 1))
        else:
            self._feat_size = _resolve_feat_size(self, input_shape, "with r=None ")
            height, width = self._feat_size
            self.pos_emb = self.add_weight(
                name="pos_emb",
                shape=(2 * height - 1, 2 * width - 1, self.dim_qk),
                initializer=_trunc_normal(0.02),
            )
            self._rel_index = relative_position_index(height, width)
        self.pool = layers.AveragePooling2D(2, name="pool", **kw) if self.stride == 2 else None

    def call(self, inputs, training=None, return_attention=False):
        n, dk, dv = self.num_heads, self.dim_qk, self.dim_v
        shape = ops.shape(inputs)
        height, width = shape[1], shape[2]
        qkv = self.qkv(inputs)
        q = self.norm_q(qkv[..., : n * dk], training=training)
        k = qkv[..., n * dk : (n + 1) * dk]
        v = self.norm_v(qkv[..., (n + 1) * dk :], training=training)
        q = ops.reshape(q, (-1, height, width, n, dk))
        keys = U.softmax_float32(ops.reshape(k, (shape[0], -1, dk)), axis=1)  # (B, M, K)
        v_flat = ops.reshape(v, (shape[0], -1, dv))
        content_lambda = ops.einsum("bmk,bmv->bkv", keys, v_flat)
        outputs = ops.einsum("bhwnk,bkv->bhwnv", q, content_lambda)
        if self.r is not None:
            position_lambda = self.conv_lambda(ops.expand_dims(v, -1))  # (B, H, W, V, K)
            outputs = outputs + ops.einsum("bhwnk,bhwvk->bhwnv", q, position_lambda)
        else:
            embeddings = ops.take(
                ops.reshape(ops.cast(self.pos_emb, v.dtype), (-1, dk)),
                ops.convert_to_tensor(self._rel_index),
                axis=0,
            )  # (M, M, K)
            position_lambda = ops.einsum("abk,zbv->zakv", embeddings, v_flat)
            q_flat = ops.reshape(q, (shape[0], -1, n, dk))
            position = ops.einsum("zank,zakv->zanv", q_flat, position_lambda)
            outputs = outputs + ops.reshape(position, ops.shape(outputs))
        outputs = ops.reshape(outputs, (-1, height, width, n * dv))
        if self.pool is not None:
            outputs = self.pool(outputs)
        if not return_attention:
            return outputs
        return outputs, ops.reshape(keys, (-1, height, width, dk))

    def compute_output_shape(self, input_shape):
        dim_out = self.dim_out or input_shape[-1]
        return (
            input_shape[0],
            _pooled(input_shape[1], self.stride),
            _pooled(input_shape[2], self.stride),
            dim_out,
        )

    def compute_attention_shape(self, input_shape):
        dim_qk = self.dim_head or _qk_head_dim(
            self.dim_out or input_shape[-1], self.num_heads, None, self.qk_ratio
        )
        return (*input_shape[:3], dim_qk)

    def get_config(self):
        config = super().get_config()
        config.update(
            dim_out=self.dim_out,
            feat_size=self.feat_size,
            stride=self.stride,
            num_heads=self.num_heads,
            dim_head=self.dim_head,
            r=self.r,
            qk_ratio=self.qk_ratio,
            qkv_bias=self.qkv_bias,
        )
        return config


# --------------------------------------------------------------------------------------
# Attention Augmented Convolution


def resize_relative_table(table, length):
    """Linearly interpolate a `(2S - 1, d)` relative table to `(length, d)` rows, the end
    rows (the largest offsets either way) kept in place."""
    table = np.asarray(table, dtype="float64")
    if table.shape[0] == length:
        return table
    if table.shape[0] == 1:
        return np.repeat(table, length, axis=0)
    old = np.linspace(0.0, 1.0, table.shape[0])
    new = np.linspace(0.0, 1.0, length)
    return np.stack([np.interp(new, old, column) for column in table.T], axis=1)


@register
class AttentionAugmentedConv2D(AttentionLayer):
    """Attention Augmented Convolution (Bello et al., ICCV 2019), the paper's appendix code.

    A 1x1 convolution gives `[q | k | v]` (`dk`, `dk`, `dv` channels, heads contiguous in
    each); `q` is scaled by `(dk / num_heads) ** -0.5` and multi-head attention runs over
    all positions, with logits `q_i . k_j + q_i . key_rel_w[x_j - x_i + W - 1] + q_i .
    key_rel_h[y_j - y_i + H - 1]` (`relative=True`; both tables `(2W - 1, dk / num_heads)`
    and `(2H - 1, dk / num_heads)` shared by the heads, turned into absolute logits by the
    paper's pad-reshape-slice `rel_to_abs`). The heads' outputs are concatenated and
    projected by a 1x1 convolution to `dv` channels, and concatenated after a `kernel_size`
    'same' convolution with `filters - dv` channels. All convolutions have biases.

    Weights saved for another height and width load anyway: `key_rel_w` / `key_rel_h` are
    resized by linear interpolation (`resize_relative_table`) in `load_own_variables`.

    Args:
        filters: output channels `F_out`; `None` keeps the input's.
        kernel_size: kernel size of the convolution branch.
        dk: total query / key depth; divisible by `num_heads`.
        dv: total value depth, the attention branch's share of the output; divisible by
            `num_heads` and smaller than `filters`.
        num_heads: number of heads `Nh`.
        relative: add the 2D relative position logits (static height and width).
        feat_size: `(height, width)` (or one integer) the relative tables are sized for;
            `None` takes it from the input shape at build time.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a `(batch, height, width, channels)` feature map; height and width may be
            unknown until called when `relative=False`.
        training: unused; accepted like every layer here.
        return_attention: if `True`, also return the attention weights.

    Returns:
        The `(batch, height, width, filters)` output `[conv | attention]`; with
        `return_attention=True`, a tuple `(outputs, attention)` with the attention of shape
        `(batch, num_heads, height * width, height * width)` (rows: queries, columns: keys,
        positions row-major; rows sum to 1).
    """

    def __init__(
        self, filters, kernel_size, dk, dv, num_heads, relative=True, feat_size=None, **kwargs
    ):
        super().__init__(**kwargs)
        U.check_positive_int("filters", filters, allow_none=True)
        U.check_positive_int("kernel_size", kernel_size)
        U.check_positive_int("dk", dk)
        U.check_positive_int("dv", dv)
        U.check_positive_int("num_heads", num_heads)
        for name, value in (("dk", dk), ("dv", dv)):
            if value % num_heads:
                raise ValueError(
                    f"`{name}` must be divisible by `num_heads`, got {name}={value} and "
                    f"num_heads={num_heads}."
                )
        if filters is not None and dv >= filters:
            raise ValueError(
                f"`dv` must be smaller than `filters` (the convolution branch keeps "
                f"filters - dv channels), got dv={dv} and filters={filters}."
            )
        self.filters = filters
        self.kernel_size = kernel_size
        self.dk = dk
        self.dv = dv
        self.num_heads = num_heads
        self.relative = bool(relative)
        self.feat_size = _pair("feat_size", feat_size, allow_none=True)

    def build(self, input_shape):
        channels = U.feature_map_channels(self, input_shape)
        filters = self.filters or channels
        if self.dv >= filters:
            raise ValueError(
                f"`dv` must be smaller than `filters` (the input's {channels} channels when "
                f"filters=None), got dv={self.dv}."
            )
        self.dkh, self.dvh = self.dk // self.num_heads, self.dv // self.num_heads
        kw = U.sublayer_kwargs(self)
        self.conv = layers.Conv2D(
            filters - self.dv, self.kernel_size, padding="same", name="conv", **kw
        )
        self.conv.build((None, None, None, channels))
        self.qkv = layers.Conv2D(2 * self.dk + self.dv, 1, name="qkv", **kw)
        self.qkv.build((None, None, None, channels))
        self.attn_out = layers.Conv2D(self.dv, 1, name="attn_out", **kw)
        self.attn_out.build((None, None, None, self.dv))
        if self.relative:
            self._feat_size = _resolve_feat_size(self, input_shape, "with relative=True ")
            height, width = self._feat_size
            init = keras.initializers.RandomNormal(stddev=self.dkh**-0.5)
            self.key_rel_w = self.add_weight(
                name="key_rel_w", shape=(2 * width - 1, self.dkh), initializer=init
            )
            self.key_rel_h = self.add_weight(
                name="key_rel_h", shape=(2 * height - 1, self.dkh), initializer=init
            )

    def call(self, inputs, training=None, return_attention=False):
        n, dkh, dvh = self.num_heads, self.dkh, self.dvh
        shape = ops.shape(inputs)
        qkv = self.qkv(inputs)
        q = qkv[..., : self.dk] * (dkh**-0.5)
        k = qkv[..., self.dk : 2 * self.dk]
        v = qkv[..., 2 * self.dk :]
        q = ops.transpose(ops.reshape(q, (shape[0], -1, n, dkh)), (0, 2, 1, 3))
        k = ops.transpose(ops.reshape(k, (shape[0], -1, n, dkh)), (0, 2, 1, 3))
        v = ops.transpose(ops.reshape(v, (shape[0], -1, n, dvh)), (0, 2, 1, 3))
        logits = ops.einsum("bnid,bnjd->bnij", q, k)
        if self.relative:
            height, width = self._feat_size
            position = relative_logits_2d(
                ops.reshape(q, (-1, height, width, dkh)), self.key_rel_h, self.key_rel_w
            )
            logits = logits + ops.reshape(position, (-1, n, height * width, height * width))
        attention = U.softmax_float32(logits)
        attended = ops.einsum("bnij,bnjd->bind", attention, v)
        attended = ops.reshape(attended, (shape[0], shape[1], shape[2], self.dv))
        outputs = ops.concatenate([self.conv(inputs), self.attn_out(attended)], axis=-1)
        return (outputs, attention) if return_attention else outputs

    def load_own_variables(self, store):
        self._check_load_own_variables(store)
        own = self._trainable_variables + self._non_trainable_variables
        for i, variable in enumerate(own):
            value = np.asarray(store[f"{i}"])
            if (
                self.relative
                and variable.path.split("/")[-1] in ("key_rel_w", "key_rel_h")
                and value.ndim == 2
                and value.shape[1] == variable.shape[1]
            ):
                value = resize_relative_table(value, variable.shape[0])
            variable.assign(value.astype(variable.dtype))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:3], self.filters or input_shape[-1])

    def compute_attention_shape(self, input_shape):
        height, width = input_shape[1:3]
        positions = None if height is None or width is None else height * width
        return (input_shape[0], self.num_heads, positions, positions)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            dk=self.dk,
            dv=self.dv,
            num_heads=self.num_heads,
            relative=self.relative,
            feat_size=self.feat_size,
        )
        return config
