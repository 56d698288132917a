"""Self-attention over positions: multi-head self-attention on feature maps and Non-local blocks."""

import math

import keras
from keras import layers, ops

from keras_attention.layers import _utils as U
from keras_attention.layers.base import AttentionLayer

register = keras.saving.register_keras_serializable(package="keras_attention")

PAIRWISE = ("embedded_gaussian", "gaussian", "dot_product", "concatenation")
SCALES = ("auto", "inner", "input", None)


def _tokens(x, batch):
    """`(B, *spatial, C)` -> `(B, N, C)`; the spatial sizes may be unknown until called."""
    return ops.reshape(x, (batch, -1, x.shape[-1]))


def _num_positions(sizes):
    if any(size is None for size in sizes):
        return None
    return math.prod(sizes)


def _check_scale(scale):
    if scale is not None:
        U.check_positive_number("scale", scale)


@register
class MultiHeadSelfAttention2D(AttentionLayer):
    """Multi-head self-attention over the positions of a feature map (Vaswani et al., 2017).

    The `H * W` positions are the tokens: Dense projections to `num_heads` queries and
    `num_key_value_heads` keys and values of `key_dim` channels each, scaled dot-product
    attention through `keras.ops.dot_product_attention` (fused kernels on JAX / PyTorch
    GPUs), concatenation of the heads and a Dense projection to `output_dim` channels.
    With fewer key/value heads than query heads (grouped-query attention), query head `n`
    reads key/value head `n // (num_heads // num_key_value_heads)`. No residual connection.

    Args:
        num_heads: number of query heads (8).
        key_dim: channels per head of queries, keys and values; `None` (default) gives
            `C // num_heads`.
        num_key_value_heads: number of key/value heads; must divide `num_heads`. `None`
            (default) is `num_heads` (plain multi-head attention), `1` multi-query attention.
        output_dim: channels of the output; `None` (default) keeps the input's `C`.
        use_bias: whether the four projections have biases.
        scale: multiplier of the logits; `None` (default) is `key_dim ** -0.5`.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a `(batch, height, width, channels)` feature map; height and width may be
            unknown until called.
        training: unused (no dropout or normalisation inside); accepted like every layer here.
        return_attention: if `True`, also return the attention weights (computed explicitly
            in float32 for that purpose only).

    Returns:
        A `(batch, height, width, output_dim)` feature map in the compute dtype; with
        `return_attention=True`, a tuple `(outputs, attention)` with the attention of shape
        `(batch, num_heads, H * W, H * W)` (row-major positions; each row sums to 1 over the
        key positions).
    """

    def __init__(
        self,
        num_heads=8,
        key_dim=None,
        num_key_value_heads=None,
        output_dim=None,
        use_bias=True,
        scale=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        U.check_positive_int("num_heads", num_heads)
        U.check_positive_int("key_dim", key_dim, allow_none=True)
        U.check_positive_int("num_key_value_heads", num_key_value_heads, allow_none=True)
        if num_key_value_heads is not None and num_heads % num_key_value_heads:
            raise ValueError(
                f"`num_key_value_heads` must divide num_heads={num_heads}, got "
                f"num_key_value_heads={num_key_value_heads!r}."
            )
        U.check_positive_int("output_dim", output_dim, allow_none=True)
        _check_scale(scale)
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.num_key_value_heads = num_key_value_heads
        self.output_dim = output_dim
        self.use_bias = bool(use_bias)
        self.scale = scale

    def build(self, input_shape):
        channels = U.feature_map_channels(self, input_shape)
        head_dim = self.key_dim or channels // self.num_heads
        if head_dim < 1:
            raise ValueError(
                f"`key_dim` defaults to channels // num_heads, which is 0 for {channels} "
                f"channels and num_heads={self.num_heads}; pass key_dim or fewer heads "
                f"(input_shape={tuple(input_shape)})."
            )
        self.head_dim = head_dim
        self.kv_heads = self.num_key_value_heads or self.num_heads
        self.scale_value = self.scale if self.scale is not None else head_dim**-0.5
        kw = dict(use_bias=self.use_bias, **U.sublayer_kwargs(self))
        self.query = layers.Dense(self.num_heads * head_dim, name="query", **kw)
        self.key = layers.Dense(self.kv_heads * head_dim, name="key", **kw)
        self.value = layers.Dense(self.kv_heads * head_dim, name="value", **kw)
        for projection in (self.query, self.key, self.value):
            projection.build((None, None, channels))
        self.out = layers.Dense(self.output_dim or channels, name="out", **kw)
        self.out.build((None, None, self.num_heads * head_dim))

    def _heads(self, x, batch, heads):
        return ops.reshape(x, (batch, -1, heads, self.head_dim))

    def call(self, inputs, training=None, return_attention=False):
        shape = ops.shape(inputs)
        batch = shape[0]
        tokens = _tokens(inputs, batch)
        query = self._heads(self.query(tokens), batch, self.num_heads)
        key = self._heads(self.key(tokens), batch, self.kv_heads)
        value = self._heads(self.value(tokens), batch, self.kv_heads)
        groups = self.num_heads // self.kv_heads
        if groups > 1 and keras.backend.backend() == "tensorflow":
            # Keras' TensorFlow dot_product_attention repeats k/v heads only when there are
            # more than one: with a single one (multi-query) its einsum fails on the head axis.
            key = ops.repeat(key, groups, axis=2)
            value = ops.repeat(value, groups, axis=2)
        mixed = ops.dot_product_attention(query, key, value, scale=self.scale_value)
        mixed = ops.reshape(mixed, (batch, -1, self.num_heads * self.head_dim))
        outputs = ops.reshape(self.out(mixed), (*shape[:-1], self.out.units))
        if not return_attention:
            return outputs
        if key.shape[2] != self.num_heads:
            key = ops.repeat(key, groups, axis=2)  # query head n reads key head n // groups
        logits = ops.einsum("bqhd,bkhd->bhqk", ops.cast(query, "float32"), ops.cast(key, "float32"))
        attention = ops.softmax(logits * self.scale_value, axis=-1)
        return outputs, ops.cast(attention, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.output_dim or input_shape[-1])

    def compute_attention_shape(self, input_shape):
        n = _num_positions(input_shape[1:3])
        return (input_shape[0], self.num_heads, n, n)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            key_dim=self.key_dim,
            num_key_value_heads=self.num_key_value_heads,
            output_dim=self.output_dim,
            use_bias=self.use_bias,
            scale=self.scale,
        )
        return config


@register
class NonLocal(AttentionLayer):
    """Non-local block (Wang et al., CVPR 2018) for 1D, 2D and 3D (video) inputs.

    Every position `i` gathers `y_i = sum_j f(x_i, x_j) g(x_j) / C(x)` over all positions
    `j`, then `z = BN(W_z y) + x`. `theta`, `phi` and `g` are pointwise (1x1) projections
    with bias to `inner_channels`; `W_z` (`out`) is a pointwise projection with bias back to
    `C`, followed by a BatchNorm (`out_norm`, PyTorch defaults) whose gamma starts at 0, so
    a fresh block is the identity. The input rank decides the kind: `(B, L, C)`,
    `(B, H, W, C)` or `(B, T, H, W, C)`.

    Pairwise functions (`pairwise`):

    - `"embedded_gaussian"`: `softmax_j(scale * theta_i . phi_j)`, through
      `keras.ops.dot_product_attention` (fused, O(N) memory on GPUs).
    - `"gaussian"`: `softmax_j(scale * x_i . x_j)` on the raw inputs (no `theta` / `phi`),
      also through `dot_product_attention`.
    - `"dot_product"`: `theta_i . phi_j / N'`; computed as `theta (phi^T g) / N'`, which never
      forms the `(N, N')` matrix.
    - `"concatenation"`: `ReLU(w_f . [theta_i, phi_j]) / N'` with `w_f` a learned bias-free
      projection (`concat_project`, kernel `(2 * inner_channels, 1)`); evaluated as
      `theta_i . w_f[:inner] + phi_j . w_f[inner:]` broadcast over pairs, without building
      the concatenation.

    `N'` is the number of positions of `phi` / `g` (after subsampling). `scale` is the
    softmax temperature of the two Gaussian forms; the normalised dot-product and
    concatenation forms divide by `N'` only (paper and official code alike). The default,
    `scale="auto"`, follows the official code (mmcv's `NonLocalNd` with its default
    `use_scale=True`; the Caffe2 original scales its embedded Gaussian alike) per mode:
    `inner_channels ** -0.5` for `"embedded_gaussian"`, 1 for `"gaussian"` (mmcv applies
    `use_scale` to the embedded form only). The paper scales neither (`scale=None`);
    timm's `NonLocalAttn` (embedded Gaussian only) uses `C ** -0.5` (`scale="input"`).

    Args:
        pairwise: one of `"embedded_gaussian"` (default), `"gaussian"`, `"dot_product"`,
            `"concatenation"`.
        inner_channels: width of `theta`, `phi` and `g`; overrides `reduction_ratio`.
        reduction_ratio: inner width as a fraction of the input channels (1/2, the paper).
        divisor: rounding of the inner width: `None` (default) floors (`C // 2`); an integer
            rounds like timm's `NonLocalAttn` (`make_divisible(C * ratio, divisor)`, which
            uses `rd_ratio=1/8, rd_divisor=8`).
        subsample: if `True`, `phi` and `g` (for `"gaussian"`, the raw input in place of
            `phi`) are max-pooled 2x over the spatial axes after their projection (as
            mmcv's and the common PyTorch re-implementations; the Caffe2 original pools the
            input before projecting): window and stride 2 for 1D, `(2, 2)` for 2D,
            `(1, 2, 2)` for 3D (time untouched). Odd sizes are floored (`"valid"`
            pooling, like PyTorch's `MaxPool`), so pooled axes need at least 2 positions.
            timm has no subsampling. Export: 3D subsampling is a `MaxPool3D`, which is not
            among LiteRT's builtin ops, so `zoo.export(..., format="litert")` of a model with
            it fails naming this layer and the op (ONNX and SavedModel convert).
        scale: logit multiplier of the Gaussian forms: `"auto"` (default, the official code
            per mode: `inner_channels ** -0.5` for `"embedded_gaussian"`, 1 for
            `"gaussian"`), `"inner"` (`inner_channels ** -0.5` in both), `"input"` (timm:
            `C ** -0.5`) or `None` (1, the paper). Unused by `"dot_product"` and
            `"concatenation"`.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a `(batch, length, C)`, `(batch, height, width, C)` or
            `(batch, time, height, width, C)` tensor; spatial sizes may be unknown until
            called.
        training: whether the BatchNorm uses batch statistics.
        return_attention: if `True`, also return the pairwise weights `f / C(x)` (formed
            explicitly, in float32, for that purpose only).

    Returns:
        `z`, of the input's shape in the compute dtype; with `return_attention=True`, a tuple
        `(outputs, attention)` with the attention of shape `(batch, N, N')`: `N` positions
        (row-major over the spatial axes), `N'` positions of `phi` after subsampling. Rows
        sum to 1 for the Gaussian forms.
    """

    def __init__(
        self,
        pairwise="embedded_gaussian",
        inner_channels=None,
        reduction_ratio=1 / 2,
        divisor=None,
        subsample=False,
        scale="auto",
        **kwargs,
    ):
        super().__init__(**kwargs)
        U.check_choice("pairwise", pairwise, set(PAIRWISE))
        U.check_positive_int("inner_channels", inner_channels, allow_none=True)
        U.check_ratio("reduction_ratio", reduction_ratio)
        U.check_divisor("divisor", divisor)
        if scale not in SCALES:
            raise ValueError(
                f"`scale` must be one of 'auto', 'inner', 'input' or None, got scale={scale!r}."
            )
        self.pairwise = pairwise
        self.inner_channels = inner_channels
        self.reduction_ratio = reduction_ratio
        self.divisor = divisor
        self.subsample = bool(subsample)
        self.scale = scale

    def _inner_width(self, channels):
        if self.inner_channels is not None:
            return self.inner_channels
        if self.divisor is None:
            return max(1, int(channels * self.reduction_ratio))
        # timm's NonLocalAttn rounds with make_divisible's default round_limit (0.9).
        return U.make_divisible(channels * self.reduction_ratio, self.divisor)

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) not in (3, 4, 5):
            raise ValueError(
                "NonLocal expects a channels-last input of rank 3 (batch, length, channels), "
                "4 (batch, height, width, channels) or 5 (batch, time, height, width, "
                f"channels); got input_shape={input_shape}."
            )
        channels = U.feature_map_channels(self, input_shape, rank=len(input_shape))
        spatial = input_shape[1:-1]
        self.pool_size = {1: (2,), 2: (2, 2), 3: (1, 2, 2)}[len(spatial)]
        if self.subsample:
            for size, window in zip(spatial, self.pool_size):
                if window == 2 and size is not None and size < 2:
                    raise ValueError(
                        "`subsample=True` max-pools the spatial axes by 2, which needs at least "
                        f"2 positions per pooled axis; got input_shape={input_shape}."
                    )
        inner = self._inner_width(channels)
        self.inner = inner
        scale = self.scale
        if scale == "auto":
            scale = "inner" if self.pairwise == "embedded_gaussian" else None
        self.scale_value = {"inner": inner**-0.5, "input": channels**-0.5, None: 1.0}[scale]
        kw = U.sublayer_kwargs(self)
        if self.pairwise == "gaussian":
            self.theta = self.phi = None
        else:
            self.theta = layers.Dense(inner, name="theta", **kw)
            self.theta.build((None, channels))
            self.phi = layers.Dense(inner, name="phi", **kw)
            self.phi.build((None, channels))
        self.g = layers.Dense(inner, name="g", **kw)
        self.g.build((None, channels))
        if self.pairwise == "concatenation":
            self.concat_project = layers.Dense(1, use_bias=False, name="concat_project", **kw)
            self.concat_project.build((None, 2 * inner))
        else:
            self.concat_project = None
        self.out = layers.Dense(channels, name="out", **kw)
        self.out.build((None, inner))
        self.out_norm = U.torch_batch_norm("out_norm", dict(kw, gamma_initializer="zeros"))
        self.out_norm.build((None, None, channels))

    def _pool(self, x):
        if not self.subsample:
            return x
        return ops.max_pool(
            x, self.pool_size, strides=self.pool_size, padding="valid", data_format="channels_last"
        )

    def _pairwise_terms(self, inputs, batch):
        """Queries and keys of the pairwise function, as `(B, N, D)` and `(B, N', D)`."""
        if self.pairwise == "gaussian":
            return _tokens(inputs, batch), _tokens(self._pool(inputs), batch)
        return (_tokens(self.theta(inputs), batch), _tokens(self._pool(self.phi(inputs)), batch))

    def _concat_logits(self, query, key):
        """`ReLU(theta_i . w1 + phi_j . w2) / N'` in float32, `(B, N, N')`."""
        kernel = ops.cast(self.concat_project.kernel, "float32")
        left = ops.matmul(ops.cast(query, "float32"), kernel[: self.inner])  # (B, N, 1)
        right = ops.matmul(ops.cast(key, "float32"), kernel[self.inner :])  # (B, N', 1)
        pairs = ops.relu(left + ops.transpose(right, (0, 2, 1)))
        return pairs / ops.cast(ops.shape(key)[1], "float32")

    def _attention_map(self, query, key):
        """The `(B, N, N')` weights `f(x_i, x_j) / C(x)`, in float32."""
        if self.pairwise == "concatenation":
            return self._concat_logits(query, key)
        logits = ops.einsum("bnd,bmd->bnm", ops.cast(query, "float32"), ops.cast(key, "float32"))
        if self.pairwise == "dot_product":
            return logits / ops.cast(ops.shape(key)[1], "float32")
        return ops.softmax(logits * self.scale_value, axis=-1)

    def call(self, inputs, training=None, return_attention=False):
        shape = ops.shape(inputs)
        batch = shape[0]
        query, key = self._pairwise_terms(inputs, batch)
        value = _tokens(self._pool(self.g(inputs)), batch)  # (B, N', inner)
        if self.pairwise in ("embedded_gaussian", "gaussian"):
            mixed = U.single_head_attention(query, key, value, self.scale_value)
        elif self.pairwise == "dot_product":
            # Associativity: theta (phi^T g) / N' costs O(N) memory instead of O(N N').
            context = ops.einsum(
                "bmd,bme->bde", ops.cast(key, "float32"), ops.cast(value, "float32")
            )
            context = context / ops.cast(ops.shape(key)[1], "float32")
            mixed = ops.cast(ops.matmul(ops.cast(query, "float32"), context), inputs.dtype)
        else:
            weights = ops.cast(self._concat_logits(query, key), inputs.dtype)
            mixed = ops.matmul(weights, value)
        z = self.out_norm(self.out(mixed), training=training)
        outputs = ops.reshape(z, shape) + inputs
        if not return_attention:
            return outputs
        return outputs, ops.cast(self._attention_map(query, key), inputs.dtype)

    def compute_attention_shape(self, input_shape):
        spatial = tuple(input_shape[1:-1])
        pooled = spatial
        if self.subsample:
            windows = {1: (2,), 2: (2, 2), 3: (1, 2, 2)}[len(spatial)]
            pooled = tuple(
                None if size is None else size // window for size, window in zip(spatial, windows)
            )
        return (input_shape[0], _num_positions(spatial), _num_positions(pooled))

    def get_config(self):
        config = super().get_config()
        config.update(
            pairwise=self.pairwise,
            inner_channels=self.inner_channels,
            reduction_ratio=self.reduction_ratio,
            divisor=self.divisor,
            subsample=self.subsample,
            scale=self.scale,
        )
        return config
