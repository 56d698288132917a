"""Self-attention for scene context: DANet's position attention, CCNet's criss-cross
attention, OCNet's object context and CGNL's compact generalized non-local block."""

import math

import keras
from keras import layers, ops

from keras_attention.convolution import GroupedConv2D
from keras_attention.layers import _utils as U
from keras_attention.layers.base import AttentionLayer

register = keras.saving.register_keras_serializable(package="keras_attention")

OC_MODES = ("base", "pyramid", "asp")
OC_PRESETS = ("paper", "official")
OC_ACTIVATIONS = ("relu", "leaky_relu")
OC_LEAKY_SLOPE = 0.01  # InPlaceABNSync's default, the official blocks' normalisation
CGNL_KERNELS = ("dot", "gaussian")
CGNL_GAUSSIAN_FACTORS = ("exact", "constant")


def _flatten_positions(x):
    """`(B, H, W, C)` -> `(B, H * W, C)`; height and width may be unknown until called."""
    shape = ops.shape(x)
    return ops.reshape(x, (shape[0], -1, x.shape[-1]))


def _attention_map(query, key, scale, mask=None):
    """The `(B, N, N)` softmax(scale * q k^T) of `(B, N, d)` tensors, in float32 (a boolean
    `mask` keeps only its `True` entries)."""
    energy = ops.einsum("bnd,bmd->bnm", ops.cast(query, "float32"), ops.cast(key, "float32"))
    energy = energy * scale
    if mask is not None:
        energy = ops.where(mask, energy, float("-inf"))
    return ops.softmax(energy, axis=-1)


def _positions(shape):
    """`H * W`, or `None` when either is unknown."""
    return None if shape[1] is None or shape[2] is None else shape[1] * shape[2]


def _resize_bilinear_align_corners(x, size):
    """Bilinear resize of NHWC `x` to `size` with aligned corners (PyTorch's
    `interpolate(..., mode="bilinear", align_corners=True)`), as two interpolation matrices
    (hat functions of the source coordinate), so the sizes may be unknown until called."""

    def weights(out_size, in_size):
        step = ops.cast(in_size - 1, "float32") / ops.cast(ops.maximum(out_size - 1, 1), "float32")
        source = ops.cast(ops.arange(out_size), "float32") * step
        grid = ops.cast(ops.arange(in_size), "float32")
        return ops.relu(1.0 - ops.abs(source[:, None] - grid[None, :]))  # (out, in)

    shape = ops.shape(x)
    rows = ops.cast(weights(size[0], shape[1]), x.dtype)
    cols = ops.cast(weights(size[1], shape[2]), x.dtype)
    return ops.einsum("ip,bpqc,jq->bijc", rows, x, cols)


class _ReducedQueryKeyValue(AttentionLayer):
    """DANet / CCNet projections: query and key 1x1 convolutions (with bias) to
    `C // reduction` channels, value to `C`, and a residual scale `gamma` initialised to 0."""

    def __init__(self, reduction=8, **kwargs):
        super().__init__(**kwargs)
        U.check_positive_int("reduction", reduction)
        self.reduction = reduction

    def build(self, input_shape):
        channels = U.feature_map_channels(self, input_shape)
        hidden = max(1, channels // self.reduction)
        kw = U.sublayer_kwargs(self)
        self.query = layers.Conv2D(hidden, 1, name="query", **kw)
        self.query.build((None, None, None, channels))
        self.key = layers.Conv2D(hidden, 1, name="key", **kw)
        self.key.build((None, None, None, channels))
        self.value = layers.Conv2D(channels, 1, name="value", **kw)
        self.value.build((None, None, None, channels))
        self.gamma = self.add_weight(name="gamma", shape=(), initializer="zeros", trainable=True)

    def get_config(self):
        config = super().get_config()
        config.update(reduction=self.reduction)
        return config


@register
class PositionAttention(_ReducedQueryKeyValue):
    """Position attention module of DANet (PAM, Fu et al., CVPR 2019).

    Query `B` and key `C` are 1x1 convolutions (with bias) to `C_in // reduction` channels,
    value `D` a 1x1 convolution to `C_in` channels; over the `N = H * W` positions the
    attention is `S = softmax(B^T C)` (softmax over the key positions, *no* `1/sqrt(d)`
    scaling, as in the paper and junfu1115/DANet), and `out = gamma * (D S^T) + x` with a
    learned scalar `gamma` initialised to 0 (a fresh block is the identity). The output goes
    through `keras.ops.dot_product_attention` (scale 1), so GPU backends use their fused
    kernel and memory stays O(N); the `(N, N)` map is only built for `return_attention`.

    Args:
        reduction: query / key width divisor (8): `C_in // reduction` channels, at least 1.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a `(batch, height, width, channels)` feature map; height and width may be
            unknown until called.
        training: unused; accepted like every layer here.
        return_attention: if `True`, also return the position attention.

    Returns:
        The feature map `gamma * attended + inputs` (same shape and compute dtype as the
        input); with `return_attention=True`, a tuple `(outputs, attention)` with the
        attention of shape `(batch, H * W, H * W)` (row-major positions; row `i` sums to 1
        and weighs the positions aggregated into position `i`).
    """

    def call(self, inputs, training=None, return_attention=False):
        q = _flatten_positions(self.query(inputs))
        k = _flatten_positions(self.key(inputs))
        v = _flatten_positions(self.value(inputs))
        attended = ops.reshape(U.single_head_attention(q, k, v, 1.0), ops.shape(inputs))
        outputs = ops.cast(self.gamma, inputs.dtype) * attended + inputs
        if not return_attention:
            return outputs
        return outputs, ops.cast(_attention_map(q, k, 1.0), inputs.dtype)

    def compute_attention_shape(self, input_shape):
        n = _positions(input_shape)
        return (input_shape[0], n, n)


@register
class CrissCrossAttention(_ReducedQueryKeyValue):
    """Criss-cross attention (CCNet, Huang et al., ICCV 2019).

    Query and key are 1x1 convolutions (with bias) to `C // reduction` channels, value a 1x1
    convolution to `C`. Each position `(h, w)` attends to the `H + W - 1` positions of its
    column and row: the energies along the column (`H` values) and along the row (`W`
    values) are concatenated and go through one softmax (float32); the position itself is
    masked with `-inf` in the column part so it counts once. `out = gamma * aggregation + x`
    with `gamma` initialised to 0. `recurrence` applies the module (same weights) that many
    times (`2`: the paper's RCCA), which connects every pair of positions. Memory is
    O(HW (H + W)): energies are einsums over rows and columns, no `(HW, HW)` tensor.
    Matches the official pure-PyTorch `CrissCrossAttention` (speedinghzl/CCNet).

    Args:
        reduction: query / key width divisor (8): `C // reduction` channels, at least 1.
        recurrence: number of applications of the module with shared weights (2).
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a `(batch, height, width, channels)` feature map; height and width may be
            unknown until called.
        training: unused; accepted like every layer here.
        return_attention: if `True`, also return the criss-cross weights.

    Returns:
        The feature map after `recurrence` applications (same shape and compute dtype as the
        input); with `return_attention=True`, a tuple `(outputs, attention)` with the last
        application's weights of shape `(batch, height, width, height + width)`: entry
        `[b, h, w, k]` weighs position `(k, w)` for `k < H` (column; 0 at `k = h`) and
        position `(h, k - H)` otherwise (row); each `(b, h, w)` sums to 1.
    """

    def __init__(self, reduction=8, recurrence=2, **kwargs):
        super().__init__(reduction=reduction, **kwargs)
        U.check_positive_int("recurrence", recurrence)
        self.recurrence = recurrence

    def _step(self, x):
        q = ops.cast(self.query(x), "float32")
        k = ops.cast(self.key(x), "float32")
        v = self.value(x)
        height = ops.shape(x)[1]
        energy_column = ops.einsum("bhwc,bkwc->bhwk", q, k)  # (B, H, W, H)
        rows = ops.arange(height)
        self_mask = ops.expand_dims(ops.expand_dims(rows, 1) == ops.expand_dims(rows, 0), 1)
        energy_column = ops.where(self_mask, float("-inf"), energy_column)
        energy_row = ops.einsum("bhwc,bhkc->bhwk", q, k)  # (B, H, W, W)
        weights = ops.softmax(ops.concatenate([energy_column, energy_row], axis=-1), axis=-1)
        weights = ops.cast(weights, x.dtype)
        aggregated = ops.einsum("bhwk,bkwc->bhwc", weights[..., :height], v) + ops.einsum(
            "bhwk,bhkc->bhwc", weights[..., height:], v
        )
        return ops.cast(self.gamma, x.dtype) * aggregated + x, weights

    def call(self, inputs, training=None, return_attention=False):
        x = inputs
        for _ in range(self.recurrence):
            x, weights = self._step(x)
        return (x, weights) if return_attention else x

    def compute_attention_shape(self, input_shape):
        h, w = input_shape[1], input_shape[2]
        return (*input_shape[:3], None if h is None or w is None else h + w)

    def get_config(self):
        config = super().get_config()
        config.update(recurrence=self.recurrence)
        return config


def _region_bounds(size, parts):
    """OCNet's partition of `size` into `parts` regions: `size // parts` each, the last one
    taking the remainder (the official `_PyramidSelfAttentionBlock`)."""
    step = size // parts
    starts = [i * step for i in range(parts)]
    ends = starts[1:] + [size]
    return list(zip(starts, ends))


def _region_ids(size, parts):
    """Region index of each of `size` positions under `_region_bounds`."""
    return ops.minimum(ops.arange(size) // (size // parts), parts - 1)


@register
class ObjectContext(AttentionLayer):
    """Object context module (OCNet, Yuan et al., 2018), after openseg-group/OCNet.pytorch.

    The object context is self-attention with one transform shared by query and key (a 1x1
    convolution + BatchNorm + activation to `key_channels`), a value 1x1 convolution to
    `value_channels`, scale `key_channels ** -0.5`, a softmax over positions and an output
    1x1 convolution `W` (zero-initialised, so a fresh context is 0) back to the channels
    the branch works on. All convolutions have biases except the ASPP ones and the ASP-OC
    fusion (as in the official code).

    - `mode="base"` (Base-OC): `fuse(concat(context, x))`, with `fuse` a 1x1 convolution +
      BatchNorm + activation (+ spatial dropout) to `out_channels`.
    - `mode="pyramid"` (Pyramid-OC): for each `s` in `pyramid_sizes`, a separate attention
      (own weights, `value_channels` defaulting to `C` here) runs inside each region of an
      `s x s` partition (region size `H // s`, the last row / column of regions taking the
      remainder, as the official code); the input is widened by a 1x1 convolution +
      BatchNorm + activation to `C * len(pyramid_sizes)` channels (official `up_dr`) and
      concatenated with the contexts before `fuse`. Height and width must be at least
      `max(pyramid_sizes)`.
    - `mode="asp"` (ASP-OC): ASPP branches on the input (1x1 convolution and 3x3
      convolutions with `dilations`, each + BatchNorm + activation, to `branch_channels`)
      plus a context branch (3x3 convolution + BatchNorm + activation to `branch_channels`,
      the object context, a 1x1 convolution + BatchNorm + activation), concatenated and
      fused to `out_channels`.

    Paper and official code. `preset="paper"` (default) keeps the paper's description:
    ReLU after every BatchNorm, attention at full resolution, ASP-OC branches as wide as the
    output and its value width `branch_channels // 2`. `preset="official"` reproduces the
    official modules (`BaseOC_Module`, `Pyramid_OC_Module`, `ASP_OC_Module`): leaky ReLU
    (slope 0.01, the default of the `InPlaceABNSync` they use) after every BatchNorm, and in
    ASP-OC a context branch that max-pools 2x2 before the attention and upsamples
    (bilinear, corners aligned) after it (`context_pooling=2`, official `sizes=[2]`),
    branches of `out_channels // 2` channels (the official output is `2 * out_features`,
    so `ASP_OC_Module(C, F)` is `ObjectContext(mode="asp", preset="official",
    out_channels=2 * F)`) and value width `branch_channels`. Explicit arguments override
    either preset. The official dropout rates (0.05 Base-OC, 0.1 ASP-OC) only matter in
    training; `dropout` is 0 unless given.

    Args:
        mode: `"base"`, `"pyramid"` or `"asp"`.
        key_channels: query / key width; default half the channels the attention sees
            (`C // 2`, `branch_channels // 2` for `"asp"`).
        value_channels: value width; default `C // 2` (`"base"`), `C` (`"pyramid"`, as the
            official code), for `"asp"` `branch_channels // 2` (paper preset) or
            `branch_channels` (official preset).
        out_channels: output channels (default `C`).
        pyramid_sizes: partitions of `"pyramid"` mode (`(1, 2, 3, 6)`).
        dilations: dilations of the 3x3 ASPP branches of `"asp"` mode (`(12, 24, 36)`).
        dropout: spatial dropout rate after the fusion (0).
        activation: `"relu"` or `"leaky_relu"` (slope 0.01) after every BatchNorm; default
            from `preset` (`"relu"` paper, `"leaky_relu"` official).
        context_pooling: max-pool window and stride applied before the object context's
            attention (`"base"` and `"asp"`; must be 1 for `"pyramid"`), whose output is
            upsampled back bilinearly with aligned corners; sizes not divisible are floored
            like PyTorch's `MaxPool2d`. Default 1, or 2 for `"asp"` with the official
            preset.
        branch_channels: width of each ASP-OC branch (`"asp"` only); default `out_channels`
            (paper preset) or `out_channels // 2` (official preset).
        preset: `"paper"` (default) or `"official"`: where the defaults above come from.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a `(batch, height, width, channels)` feature map; height and width may be
            unknown until called.
        training: whether the batch normalisations use batch statistics and dropout is on.
        return_attention: if `True`, also return the attention.

    Returns:
        The fused feature map `(batch, height, width, out_channels)` in the compute dtype;
        with `return_attention=True`, a tuple `(outputs, attention)`: for `"base"` and
        `"asp"` the context attention `(batch, N, N)` over the `N = (H // p) * (W // p)`
        positions it attends (`p = context_pooling`; rows sum to 1); for `"pyramid"` one
        map per partition, `(batch, len(pyramid_sizes), H * W, H * W)`, block-diagonal up
        to the ordering (zero between positions of different regions).
    """

    def __init__(
        self,
        mode="base",
        key_channels=None,
        value_channels=None,
        out_channels=None,
        pyramid_sizes=(1, 2, 3, 6),
        dilations=(12, 24, 36),
        dropout=0.0,
        activation=None,
        context_pooling=None,
        branch_channels=None,
        preset="paper",
        **kwargs,
    ):
        super().__init__(**kwargs)
        U.check_choice("mode", mode, OC_MODES)
        U.check_positive_int("key_channels", key_channels, allow_none=True)
        U.check_positive_int("value_channels", value_channels, allow_none=True)
        U.check_positive_int("out_channels", out_channels, allow_none=True)
        U.check_choice("preset", preset, OC_PRESETS)
        if activation is not None:
            U.check_choice("activation", activation, OC_ACTIVATIONS)
        U.check_positive_int("context_pooling", context_pooling, allow_none=True)
        if mode == "pyramid" and context_pooling not in (None, 1):
            raise ValueError(
                "`context_pooling` applies to modes 'base' and 'asp'; mode='pyramid' attends "
                f"inside regions at full resolution, got context_pooling={context_pooling!r}."
            )
        U.check_positive_int("branch_channels", branch_channels, allow_none=True)
        if mode != "asp" and branch_channels is not None:
            raise ValueError(
                f"`branch_channels` applies to mode='asp' only; got mode={mode!r} and "
                f"branch_channels={branch_channels!r}."
            )
        pyramid_sizes = tuple(pyramid_sizes) if isinstance(pyramid_sizes, (list, tuple)) else ()
        if not pyramid_sizes or not all(U.is_positive_int(s) for s in pyramid_sizes):
            raise ValueError(
                f"`pyramid_sizes` must be a non-empty sequence of positive integers, got "
                f"pyramid_sizes={pyramid_sizes!r}."
            )
        dilations = tuple(dilations) if isinstance(dilations, (list, tuple)) else ()
        if not all(U.is_positive_int(d) for d in dilations):
            raise ValueError(
                f"`dilations` must be a sequence of positive integers, got dilations={dilations!r}."
            )
        if (
            isinstance(dropout, bool)
            or not isinstance(dropout, (int, float))
            or not (0 <= dropout < 1)
        ):
            raise ValueError(f"`dropout` must be a number in [0, 1), got dropout={dropout!r}.")
        self.mode = mode
        self.key_channels = key_channels
        self.value_channels = value_channels
        self.out_channels = out_channels
        self.pyramid_sizes = pyramid_sizes
        self.dilations = dilations
        self.dropout = dropout
        self.activation = activation
        self.context_pooling = context_pooling
        self.branch_channels = branch_channels
        self.preset = preset

    def _resolved_context_pooling(self):
        if self.context_pooling is not None:
            return self.context_pooling
        return 2 if self.preset == "official" and self.mode == "asp" else 1

    # -- sublayers

    def _conv(
        self,
        filters,
        in_channels,
        name,
        kernel_size=1,
        dilation_rate=1,
        use_bias=True,
        kernel_initializer="glorot_uniform",
    ):
        conv = layers.Conv2D(
            filters,
            kernel_size,
            padding="same",
            dilation_rate=dilation_rate,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            name=name,
            **U.sublayer_kwargs(self),
        )
        conv.build((None, None, None, in_channels))
        return conv

    def _norm(self, channels, name):
        norm = U.torch_batch_norm(name, U.sublayer_kwargs(self))
        norm.build((None, None, None, channels))
        return norm

    def _attention_block(self, prefix, in_channels, key_channels, value_channels):
        """(shared query/key conv, its BatchNorm, value conv, W) of one object context."""
        return (
            self._conv(key_channels, in_channels, f"{prefix}key"),
            self._norm(key_channels, f"{prefix}key_norm"),
            self._conv(value_channels, in_channels, f"{prefix}value"),
            self._conv(in_channels, value_channels, f"{prefix}out", kernel_initializer="zeros"),
        )

    def build(self, input_shape):
        channels = U.feature_map_channels(self, input_shape)
        official = self.preset == "official"
        out_channels = self.out_channels or channels
        self.activation_name = self.activation or ("leaky_relu" if official else "relu")
        self.pool = self._resolved_context_pooling()
        if self.pool > 1:
            for axis, name in ((1, "height"), (2, "width")):
                if input_shape[axis] is not None and input_shape[axis] < self.pool:
                    raise ValueError(
                        f"`context_pooling` max-pools by {self.pool}, which needs {name} >= "
                        f"{self.pool}; got context_pooling={self.pool} for "
                        f"input_shape={tuple(input_shape)}."
                    )
        branch = self.branch_channels or (max(1, out_channels // 2) if official else out_channels)
        attention_channels = branch if self.mode == "asp" else channels
        key_channels = self.key_channels or max(1, attention_channels // 2)
        if self.mode == "pyramid" or (self.mode == "asp" and official):
            default_value = attention_channels
        else:
            default_value = attention_channels // 2
        value_channels = self.value_channels or max(1, default_value)
        self.scale = float(key_channels) ** -0.5
        if self.mode == "pyramid":
            largest = max(self.pyramid_sizes)
            for axis, name in ((1, "height"), (2, "width")):
                if input_shape[axis] is not None and input_shape[axis] < largest:
                    raise ValueError(
                        f"ObjectContext(mode='pyramid') needs {name} >= max(pyramid_sizes) = "
                        f"{largest}; got pyramid_sizes={self.pyramid_sizes} for "
                        f"input_shape={tuple(input_shape)}."
                    )
            self.stages = [
                self._attention_block(f"stage{s}_", channels, key_channels, value_channels)
                for s in self.pyramid_sizes
            ]
            widened = channels * len(self.pyramid_sizes)
            self.widen = self._conv(widened, channels, "widen")
            self.widen_norm = self._norm(widened, "widen_norm")
            fuse_in = 2 * widened
        elif self.mode == "base":
            self.stages = [self._attention_block("", channels, key_channels, value_channels)]
            fuse_in = 2 * channels
        else:
            self.context_conv = self._conv(branch, channels, "context_conv", 3)
            self.context_norm = self._norm(branch, "context_norm")
            self.stages = [self._attention_block("", branch, key_channels, value_channels)]
            self.context_project = self._conv(branch, branch, "context_project")
            self.context_project_norm = self._norm(branch, "context_project_norm")
            self.aspp_convs = [self._conv(branch, channels, "aspp_conv_0", use_bias=False)]
            self.aspp_convs += [
                self._conv(
                    branch, channels, f"aspp_conv_{i + 1}", 3, dilation_rate=d, use_bias=False
                )
                for i, d in enumerate(self.dilations)
            ]
            self.aspp_norms = [
                self._norm(branch, f"aspp_norm_{i}") for i in range(len(self.aspp_convs))
            ]
            fuse_in = branch * (2 + len(self.dilations))
        self.fuse = self._conv(out_channels, fuse_in, "fuse", use_bias=self.mode != "asp")
        self.fuse_norm = self._norm(out_channels, "fuse_norm")
        self.fuse_dropout = (
            layers.SpatialDropout2D(self.dropout, name="fuse_dropout", **U.sublayer_kwargs(self))
            if self.dropout > 0
            else None
        )

    # -- computation

    def _act(self, x):
        if self.activation_name == "leaky_relu":
            return ops.leaky_relu(x, negative_slope=OC_LEAKY_SLOPE)
        return ops.relu(x)

    def _conv_bn_act(self, conv, norm, x, training):
        return self._act(norm(conv(x), training=training))

    def _qkv(self, stage, x, training):
        key, key_norm, value, _ = stage
        return self._conv_bn_act(key, key_norm, x, training), value(x)

    def _context(self, stage, x, training, return_attention):
        """Object context over all positions of `x` (max-pooled by `context_pooling`, the
        result upsampled back): `(W(context), map or None)`."""
        full = x
        if self.pool > 1:
            x = ops.max_pool(
                x, self.pool, strides=self.pool, padding="valid", data_format="channels_last"
            )
        qk, v = self._qkv(stage, x, training)
        q = _flatten_positions(qk)
        values = _flatten_positions(v)
        context = U.single_head_attention(q, q, values, self.scale)
        shape = ops.shape(v)
        context = stage[3](ops.reshape(context, (shape[0], shape[1], shape[2], v.shape[-1])))
        if self.pool > 1:
            context = _resize_bilinear_align_corners(context, ops.shape(full)[1:3])
        attention = _attention_map(q, q, self.scale) if return_attention else None
        return context, attention

    def _pyramid_context(self, stage, size, x, training, return_attention):
        """Object context inside each region of a `size x size` partition of `x`."""
        qk, v = self._qkv(stage, x, training)
        shape = ops.shape(x)
        height, width = shape[1], shape[2]
        rows = []
        for h0, h1 in _region_bounds(height, size):
            row = []
            for w0, w1 in _region_bounds(width, size):
                q = qk[:, h0:h1, w0:w1, :]
                values = v[:, h0:h1, w0:w1, :]
                region = U.single_head_attention(
                    _flatten_positions(q),
                    _flatten_positions(q),
                    _flatten_positions(values),
                    self.scale,
                )
                row.append(ops.reshape(region, ops.shape(values)))
            rows.append(ops.concatenate(row, axis=2))
        context = stage[3](ops.concatenate(rows, axis=1))
        if not return_attention:
            return context, None
        # The map of the whole partition: dense attention restricted to same-region pairs.
        row_ids = _region_ids(height, size)
        col_ids = _region_ids(width, size)
        ids = ops.reshape(ops.expand_dims(row_ids, 1) * size + ops.expand_dims(col_ids, 0), (-1,))
        mask = ops.expand_dims(ops.expand_dims(ids, 1) == ops.expand_dims(ids, 0), 0)
        q = _flatten_positions(qk)
        return context, _attention_map(q, q, self.scale, mask)

    def call(self, inputs, training=None, return_attention=False):
        if self.mode == "base":
            context, attention = self._context(self.stages[0], inputs, training, return_attention)
            features = [context, inputs]
        elif self.mode == "pyramid":
            contexts, maps = [], []
            for stage, size in zip(self.stages, self.pyramid_sizes):
                context, attention = self._pyramid_context(
                    stage, size, inputs, training, return_attention
                )
                contexts.append(context)
                maps.append(attention)
            widened = self._conv_bn_act(self.widen, self.widen_norm, inputs, training)
            features = [widened, *contexts]
            attention = ops.stack(maps, axis=1) if return_attention else None
        else:
            x = self._conv_bn_act(self.context_conv, self.context_norm, inputs, training)
            context, attention = self._context(self.stages[0], x, training, return_attention)
            context = self._conv_bn_act(
                self.context_project, self.context_project_norm, context, training
            )
            features = [context] + [
                self._conv_bn_act(conv, norm, inputs, training)
                for conv, norm in zip(self.aspp_convs, self.aspp_norms)
            ]
        outputs = self._conv_bn_act(
            self.fuse, self.fuse_norm, ops.concatenate(features, axis=-1), training
        )
        if self.fuse_dropout is not None:
            outputs = self.fuse_dropout(outputs, training=training)
        if not return_attention:
            return outputs
        return outputs, ops.cast(attention, outputs.dtype)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:3], self.out_channels or input_shape[-1])

    def compute_attention_shape(self, input_shape):
        n = _positions(input_shape)
        pool = self._resolved_context_pooling()
        if pool > 1 and n is not None:
            n = (input_shape[1] // pool) * (input_shape[2] // pool)
        if self.mode == "pyramid":
            return (input_shape[0], len(self.pyramid_sizes), n, n)
        return (input_shape[0], n, n)

    def get_config(self):
        config = super().get_config()
        config.update(
            mode=self.mode,
            key_channels=self.key_channels,
            value_channels=self.value_channels,
            out_channels=self.out_channels,
            pyramid_sizes=list(self.pyramid_sizes),
            dilations=list(self.dilations),
            dropout=self.dropout,
            activation=self.activation,
            context_pooling=self.context_pooling,
            branch_channels=self.branch_channels,
            preset=self.preset,
        )
        return config


@register
class CompactGeneralizedNonLocal(AttentionLayer):
    """Compact generalized non-local block (CGNL, Yue et al., NeurIPS 2018).

    `theta`, `phi` and `g` are 1x1 convolutions (no bias) to `inner_channels`, split into
    `groups` groups of `C_g` channels. Within a group, every one of the `C_g * H * W`
    entries attends to all of them with a kernel `f` and no normalisation:
    `y_i = sum_j f(theta_i, phi_j) g_j`, computed compactly:

    - `kernel="dot"`: `f = theta_i phi_j`, so `y = theta * s` with the per-group scalar
      `s = sum_j phi_j g_j` (associativity; no `(C_g HW)^2` kernel);
    - `kernel="gaussian"`: the RBF `f = exp(-gamma (theta_i - phi_j)^2)
      = exp(-gamma theta_i^2) exp(-gamma phi_j^2) exp(2 gamma theta_i phi_j)` through the
      paper's Taylor expansion of `exp(2 gamma theta_i phi_j)` to `order`:
      `y_i = b(theta_i) sum_p theta_i^p a_p` with
      `a_p = (2 gamma)^p / p! * sum_j b(phi_j) phi_j^p g_j`. With
      `gaussian_factors="exact"` (default) `b(t) = exp(-gamma t^2)`, the RBF the paper
      defines; with `"constant"`, the official code's (`SpatialCGNLx`) approximation:
      `b = exp(-gamma)` on both sides, whose product is its constant `beta = exp(-2 gamma)`,
      exact only for unit-magnitude features (its comment: the per-entry factors made
      training hard). The exact factors are the default because they are the kernel the
      layer is named for; the two kernels differ by the factor
      `exp(-gamma (theta_i^2 + phi_j^2 - 2))`, close to 1 at the default `gamma` (1e-4) for
      moderate features. Choose `"constant"` to reproduce the official code and its
      checkpoints (the official default `order` is 2).

    With `use_scale` the scalars are divided by `sqrt(C_g * H * W)` (official `use_scale`).
    Then a grouped 1x1 convolution (no bias) back to `C`, GroupNorm (`groups` groups,
    epsilon 1e-5) and the residual: `out = GN(z(y)) + x`. The sums run in float32.

    Args:
        inner_channels: width of theta / phi / g (default `C // 2`).
        groups: channel groups (1); must divide `inner_channels` and `C`.
        kernel: `"dot"` or `"gaussian"`.
        order: Taylor order of the Gaussian kernel (3).
        gamma: RBF coefficient of the Gaussian kernel (1e-4).
        gaussian_factors: `"exact"` (default, the paper: `exp(-gamma theta_i^2)` and
            `exp(-gamma phi_j^2)`) or `"constant"` (the official code: `exp(-gamma)` each,
            `beta = exp(-2 gamma)` in all).
        use_scale: divide the kernel sums by `sqrt(C_g * H * W)`.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a `(batch, height, width, channels)` feature map; height and width may be
            unknown until called.
        training: unused (GroupNorm has no batch statistics); accepted like every layer.
        return_attention: if `True`, also return the per-group kernel scalars.

    Returns:
        The feature map `GN(z(y)) + inputs` (same shape and compute dtype as the input); with
        `return_attention=True`, a tuple `(outputs, attention)` with the scalars that carry
        all the attention: `(batch, groups, 1)` (`s`) for `"dot"`, `(batch, groups,
        order + 1)` (`a_0 ... a_order`) for `"gaussian"`.
    """

    def __init__(
        self,
        inner_channels=None,
        groups=1,
        kernel="dot",
        order=3,
        gamma=1e-4,
        use_scale=False,
        gaussian_factors="exact",
        **kwargs,
    ):
        super().__init__(**kwargs)
        U.check_positive_int("inner_channels", inner_channels, allow_none=True)
        U.check_positive_int("groups", groups)
        U.check_choice("kernel", kernel, CGNL_KERNELS)
        U.check_non_negative_int("order", order)
        U.check_positive_number("gamma", gamma)
        U.check_choice("gaussian_factors", gaussian_factors, CGNL_GAUSSIAN_FACTORS)
        self.inner_channels = inner_channels
        self.groups = groups
        self.kernel = kernel
        self.order = order
        self.gamma = gamma
        self.use_scale = bool(use_scale)
        self.gaussian_factors = gaussian_factors

    def build(self, input_shape):
        channels = U.feature_map_channels(self, input_shape)
        inner = self.inner_channels or max(1, channels // 2)
        if inner % self.groups or channels % self.groups:
            raise ValueError(
                f"`groups` must divide inner_channels={inner} and the input channels "
                f"{channels}; got groups={self.groups}."
            )
        self.inner = inner
        kw = U.sublayer_kwargs(self)
        for name in ("theta", "phi", "g"):
            conv = layers.Conv2D(inner, 1, use_bias=False, name=name, **kw)
            conv.build((None, None, None, channels))
            setattr(self, name, conv)
        self.z = GroupedConv2D(channels, 1, groups=self.groups, use_bias=False, name="z", **kw)
        self.z.build((None, None, None, inner))
        self.norm = layers.GroupNormalization(self.groups, epsilon=1e-5, name="norm", **kw)
        self.norm.build((None, None, None, channels))

    def _group_sum(self, x):
        """`(B, H, W, inner)` -> `(B, groups)`: sum over each group's `C_g * H * W` entries."""
        per_channel = U.spatial_reduce(ops.sum, x, keepdims=False)
        return ops.sum(
            ops.reshape(per_channel, (-1, self.groups, self.inner // self.groups)), axis=-1
        )

    def _per_channel(self, scalars):
        """`(B, groups)` -> `(B, 1, 1, inner)`, each group's scalar on its channels."""
        expanded = ops.repeat(scalars, self.inner // self.groups, axis=-1)
        return ops.expand_dims(ops.expand_dims(expanded, 1), 1)

    def call(self, inputs, training=None, return_attention=False):
        theta = ops.cast(self.theta(inputs), "float32")
        phi = ops.cast(self.phi(inputs), "float32")
        g = ops.cast(self.g(inputs), "float32")
        if self.use_scale:
            shape = ops.shape(inputs)
            entries = ops.cast(shape[1] * shape[2] * (self.inner // self.groups), "float32")
            norm = ops.sqrt(entries)
        else:
            norm = 1.0
        if self.kernel == "dot":
            scalars = ops.expand_dims(self._group_sum(phi * g) / norm, -1)  # (B, G, 1)
            y = theta * self._per_channel(scalars[..., 0])
        else:
            exact = self.gaussian_factors == "exact"
            if exact:
                weighted = ops.exp(-self.gamma * ops.square(phi)) * g
            else:
                weighted = math.exp(-self.gamma) * g
            terms = []
            for p in range(self.order + 1):
                coefficient = (2 * self.gamma) ** p / math.factorial(p)
                terms.append(coefficient * self._group_sum(weighted) / norm)
                weighted = weighted * phi
            scalars = ops.stack(terms, axis=-1)  # (B, G, order + 1)
            # Horner: sum_p a_p theta^p, without powers (x ** 0 has NaN gradients at 0).
            y = self._per_channel(scalars[..., self.order])
            for p in range(self.order - 1, -1, -1):
                y = y * theta + self._per_channel(scalars[..., p])
            if exact:
                y = ops.exp(-self.gamma * ops.square(theta)) * y
            else:
                y = math.exp(-self.gamma) * y
        outputs = self.norm(self.z(ops.cast(y, inputs.dtype))) + inputs
        return (outputs, ops.cast(scalars, inputs.dtype)) if return_attention else outputs

    def compute_attention_shape(self, input_shape):
        return (input_shape[0], self.groups, 1 if self.kernel == "dot" else self.order + 1)

    def get_config(self):
        config = super().get_config()
        config.update(
            inner_channels=self.inner_channels,
            groups=self.groups,
            kernel=self.kernel,
            order=self.order,
            gamma=self.gamma,
            use_scale=self.use_scale,
            gaussian_factors=self.gaussian_factors,
        )
        return config
