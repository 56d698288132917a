"""Local self-attention of SAN (Zhao et al., "Exploring Self-attention for Image Recognition",
CVPR 2020): pairwise and patchwise."""

import keras
from keras import layers, ops

from keras_attention.layers import _utils as U
from keras_attention.layers.base import AttentionLayer

register = keras.saving.register_keras_serializable(package="keras_attention")


def _check_odd(name, value):
    U.check_positive_int(name, value)
    if value % 2 == 0:
        raise ValueError(f"`{name}` must be an odd positive integer, got {name}={value!r}.")


class _LocalSelfAttention(AttentionLayer):
    """Shared configuration, projections, footprint extraction and aggregation of SAN."""

    def __init__(
        self,
        kernel_size=7,
        dilation=1,
        share_planes=8,
        relation_channels=None,
        value_channels=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_odd("kernel_size", kernel_size)
        U.check_positive_int("dilation", dilation)
        U.check_positive_int("share_planes", share_planes)
        U.check_positive_int("relation_channels", relation_channels, allow_none=True)
        U.check_positive_int("value_channels", value_channels, allow_none=True)
        if value_channels is not None and value_channels % share_planes:
            raise ValueError(
                f"`value_channels` must be a multiple of `share_planes`, got "
                f"value_channels={value_channels!r} and share_planes={share_planes!r}."
            )
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.share_planes = share_planes
        self.relation_channels = relation_channels
        self.value_channels = value_channels
        self.padding = dilation * (kernel_size - 1) // 2
        self.taps = kernel_size * kernel_size

    def build(self, input_shape):
        channels = U.feature_map_channels(self, input_shape)
        for axis, size in (("height", input_shape[1]), ("width", input_shape[2])):
            if size is not None and size <= self.padding:
                raise ValueError(
                    f"Reflection padding of {self.padding} (from kernel_size="
                    f"{self.kernel_size}, dilation={self.dilation}) needs a {axis} above "
                    f"{self.padding}; got input_shape={tuple(input_shape)}."
                )
        self.relation_width = self.relation_channels or max(1, channels // 16)
        self.value_width = self.value_channels or channels
        if self.value_width % self.share_planes:
            raise ValueError(
                f"`share_planes` must divide the value channels ({self.value_width}, the "
                f"input channels unless value_channels is given); got "
                f"share_planes={self.share_planes}."
            )
        self.groups = self.value_width // self.share_planes
        kw = U.sublayer_kwargs(self)
        self.query = layers.Conv2D(self.relation_width, 1, name="query", **kw)  # phi
        self.key = layers.Conv2D(self.relation_width, 1, name="key", **kw)  # psi
        self.value = layers.Conv2D(self.value_width, 1, name="value", **kw)  # beta
        for conv in (self.query, self.key, self.value):
            conv.build((None, None, None, channels))
        self._build_weight_generator(kw)

    def _footprint(self, x):
        """`(B, H, W, kernel_size ** 2, C)`: the reflection-padded footprint of every
        position of the `(B, H, W, C)` map `x`."""
        p, d = self.padding, self.dilation
        padded = ops.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")
        taps = []
        for dy in range(0, 2 * p + 1, d):
            for dx in range(0, 2 * p + 1, d):
                # Negative stops keep the slices static when H and W are unknown.
                taps.append(padded[:, dy : (dy - 2 * p) or None, dx : (dx - 2 * p) or None, :])
        return ops.stack(taps, axis=3)

    def _aggregate(self, values, weights):
        """`sum_j w_ij[c % groups] * beta(x_j)[c]` over the footprint."""
        footprint = self._footprint(values)  # (B, H, W, K2, Cv)
        shape = ops.shape(values)
        footprint = ops.reshape(
            footprint, (-1, shape[1], shape[2], self.taps, self.share_planes, self.groups)
        )
        # (B, H, W) as one batch axis: LiteRT's batch matmul takes at most 5-D operands
        out = ops.einsum(
            "mkg,mksg->msg",
            ops.reshape(weights, (-1, self.taps, self.groups)),
            ops.reshape(footprint, (-1, self.taps, self.share_planes, self.groups)),
        )
        return ops.reshape(out, (-1, shape[1], shape[2], self.value_width))

    def compute_output_shape(self, input_shape):
        width = self.value_channels or input_shape[-1]
        return (*tuple(input_shape)[:3], width)

    def compute_attention_shape(self, input_shape):
        width = self.value_channels or input_shape[-1]
        return (*tuple(input_shape)[:3], self.taps, width // self.share_planes)

    def get_config(self):
        config = super().get_config()
        config.update(
            kernel_size=self.kernel_size,
            dilation=self.dilation,
            share_planes=self.share_planes,
            relation_channels=self.relation_channels,
            value_channels=self.value_channels,
        )
        return config


def _coordinates(height, width):
    """`(1, H, W, 2)` grid of `(x, y)` coordinates, each `linspace(-1, 1)` like SAN's
    `position()`."""

    def linspace(n):
        step = 2.0 / ops.cast(ops.maximum(n - 1, 1), "float32")
        return ops.cast(ops.arange(n), "float32") * step - 1.0

    xs, ys = ops.meshgrid(linspace(width), linspace(height), indexing="xy")
    return ops.expand_dims(ops.stack([xs, ys], axis=-1), 0)


@register
class PairwiseSelfAttention(_LocalSelfAttention):
    """Pairwise self-attention of SAN (Zhao et al., CVPR 2020), official `SAM(sa_type=0)`.

    Three 1x1 convolutions with biases map the input to `phi(x)` and `psi(x)`
    (`relation_channels` each) and to the values `beta(x)` (`value_channels`). Every
    position `i` attends to the `kernel_size x kernel_size` footprint `R(i)` around it
    (taps `dilation` apart; the input is reflection-padded, as the official CUDA kernels'
    `pad_mode=1`, so height and width must exceed `dilation * (kernel_size - 1) / 2`). The
    weights are computed per channel group: output channel `c` uses group
    `c % (value_channels // share_planes)`, as the official `Aggregation` kernel, and
    `y_i = sum_{j in R(i)} w_ij[group(c)] * beta(x_j)[c]`. The output has `value_channels`
    channels (default: the input's). Footprint taps are ordered row-major, top-left first.
    The official code's CUDA kernels are replaced by patch extraction with `keras.ops`
    (`kernel_size ** 2` shifted copies of the padded maps); its `stride` is not supported.
    Batch normalisations use PyTorch's defaults (epsilon 1e-5, momentum 0.1).

    Pairwise weights: the subtraction relation `phi(x_i) - psi(x_j)` for each `j` in the
    footprint, concatenated (with `position_encoding`) with `p_i - p_j`, where `p` is a
    bias-free 1x1 convolution (2 -> 2) of the `(x, y)` coordinates in `[-1, 1]` (the
    official `conv_p`; its bias cancels in the difference, so there is none), goes through
    `gamma`: BatchNorm -> ReLU -> 1x1 conv (no bias) to `relation_channels` -> BatchNorm ->
    ReLU -> 1x1 conv to `value_channels // share_planes` weights (the official conv's bias
    is dropped: the softmax over the footprint cancels it). The weights are normalised by
    a softmax over the footprint in float32.

    Args:
        kernel_size: odd side of the footprint (7, the paper's best).
        dilation: spacing of the footprint taps (1).
        share_planes: number of value channels sharing one weight (8, the paper's).
            `value_channels` must be a multiple of it.
        relation_channels: width of `phi` and `psi`; `None` (default) uses
            `max(1, C // 16)` (the official `rel_planes = planes // 16`).
        value_channels: width of `beta` and of the output; `None` (default) keeps the input
            channels (the official blocks use `planes // 4` inside their bottleneck).
        position_encoding: concatenate the relative coordinates to the relation (`True`,
            the paper and official code).
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a `(batch, height, width, channels)` feature map; height and width may be
            unknown until called.
        training: whether the batch normalisations use batch statistics (`True`) or their
            moving statistics.
        return_attention: if `True`, also return the attention weights.

    Returns:
        The aggregated map `(batch, height, width, value_channels)` in the compute dtype;
        with `return_attention=True`, a tuple `(outputs, attention)` with the softmax
        weights of shape `(batch, height, width, kernel_size ** 2, value_channels //
        share_planes)` (summing to 1 over the footprint axis).
    """

    def __init__(
        self,
        kernel_size=7,
        dilation=1,
        share_planes=8,
        relation_channels=None,
        value_channels=None,
        position_encoding=True,
        **kwargs,
    ):
        super().__init__(
            kernel_size=kernel_size,
            dilation=dilation,
            share_planes=share_planes,
            relation_channels=relation_channels,
            value_channels=value_channels,
            **kwargs,
        )
        self.position_encoding = bool(position_encoding)

    def _build_weight_generator(self, kw):
        relation = self.relation_width + (2 if self.position_encoding else 0)
        if self.position_encoding:
            self.position = layers.Dense(2, use_bias=False, name="position", **kw)
            self.position.build((None, 2))
        else:
            self.position = None
        footprint = (None, None, None, self.taps)  # per position and footprint tap
        self.weight_norm1 = U.torch_batch_norm("weight_norm1", kw)
        self.weight_norm1.build((*footprint, relation))
        self.weight_conv1 = layers.Dense(
            self.relation_width, use_bias=False, name="weight_conv1", **kw
        )
        self.weight_conv1.build((*footprint, relation))
        self.weight_norm2 = U.torch_batch_norm("weight_norm2", kw)
        self.weight_norm2.build((*footprint, self.relation_width))
        self.weight_conv2 = layers.Dense(self.groups, use_bias=False, name="weight_conv2", **kw)
        self.weight_conv2.build((*footprint, self.relation_width))

    def call(self, inputs, training=None, return_attention=False):
        phi, psi = self.query(inputs), self.key(inputs)
        relation = ops.expand_dims(phi, 3) - self._footprint(psi)  # (B, H, W, K2, r)
        if self.position is not None:
            shape = ops.shape(inputs)
            coords = ops.cast(_coordinates(shape[1], shape[2]), self.compute_dtype)
            p = self.position(coords)
            p_relation = ops.expand_dims(p, 3) - self._footprint(p)  # (1, H, W, K2, 2)
            p_relation = p_relation + ops.zeros_like(relation[..., :1])
            relation = ops.concatenate([relation, p_relation], axis=-1)
        w = ops.relu(self.weight_norm1(relation, training=training))
        w = ops.relu(self.weight_norm2(self.weight_conv1(w), training=training))
        attention = U.softmax_float32(self.weight_conv2(w), axis=3)  # (B, H, W, K2, G)
        outputs = self._aggregate(self.value(inputs), attention)
        return (outputs, attention) if return_attention else outputs

    def get_config(self):
        config = super().get_config()
        config.update(position_encoding=self.position_encoding)
        return config


@register
class PatchwiseSelfAttention(_LocalSelfAttention):
    """Patchwise self-attention of SAN (Zhao et al., CVPR 2020), official `SAM(sa_type=1)`.

    Three 1x1 convolutions with biases map the input to `phi(x)` and `psi(x)`
    (`relation_channels` each) and to the values `beta(x)` (`value_channels`). Every
    position `i` attends to the `kernel_size x kernel_size` footprint `R(i)` around it
    (taps `dilation` apart; the input is reflection-padded, as the official CUDA kernels'
    `pad_mode=1`, so height and width must exceed `dilation * (kernel_size - 1) / 2`). The
    weights are computed per channel group: output channel `c` uses group
    `c % (value_channels // share_planes)`, as the official `Aggregation` kernel, and
    `y_i = sum_{j in R(i)} w_ij[group(c)] * beta(x_j)[c]`. The output has `value_channels`
    channels (default: the input's). Footprint taps are ordered row-major, top-left first.
    The official code's CUDA kernels are replaced by patch extraction with `keras.ops`
    (`kernel_size ** 2` shifted copies of the padded maps); its `stride` is not supported.
    Batch normalisations use PyTorch's defaults (epsilon 1e-5, momentum 0.1).

    Patchwise weights: at each position, `phi(x_i)` concatenated with `psi(x_j)` of the whole
    footprint (channel-major, as `nn.Unfold`: `relation_channels * (kernel_size ** 2 + 1)`
    features) goes through `gamma`: BatchNorm -> ReLU -> 1x1 conv (no bias) to
    `G = value_channels // share_planes` -> BatchNorm -> ReLU -> 1x1 conv (bias) to
    `kernel_size ** 2 * G` weights (group-major), one per footprint tap and group, which a
    softmax over the footprint (float32) normalises. The footprint of `psi` is the square
    `kernel_size x kernel_size` one of the paper and of the official code (both versions of
    hszhao/SAN `model/san.py` unfold `psi` with `nn.Unfold(kernel_size=kernel_size)` after
    a `ReflectionPad2d(kernel_size // 2)`, which equals the padding here for `dilation=1`;
    for larger dilations the official padding does not match its unfold). Normalisation:
    the default `softmax=True` normalises the weights over the footprint like the pairwise
    form (whose official code has that softmax); the official patchwise module
    (`SAM(sa_type=1)`) applies none, and `softmax=False` reproduces it.

    Args:
        kernel_size: odd side of the footprint (7, the paper's best).
        dilation: spacing of the footprint taps (1).
        share_planes: number of value channels sharing one weight (8, the paper's).
            `value_channels` must be a multiple of it.
        relation_channels: width of `phi` and `psi`; `None` (default) uses
            `max(1, C // 16)` (the official `rel_planes = planes // 16`).
        value_channels: width of `beta` and of the output; `None` (default) keeps the input
            channels (the official blocks use `planes // 4` inside their bottleneck).
        softmax: normalise the weights by a softmax over the footprint (`True`, default,
            as the pairwise form; `False`: raw weights, as the official patchwise code).
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a `(batch, height, width, channels)` feature map; height and width may be
            unknown until called.
        training: whether the batch normalisations use batch statistics (`True`) or their
            moving statistics.
        return_attention: if `True`, also return the attention weights.

    Returns:
        The aggregated map `(batch, height, width, value_channels)` in the compute dtype;
        with `return_attention=True`, a tuple `(outputs, attention)` with the weights of
        shape `(batch, height, width, kernel_size ** 2, value_channels // share_planes)`
        (summing to 1 over the footprint axis with `softmax=True`).
    """

    def __init__(
        self,
        kernel_size=7,
        dilation=1,
        share_planes=8,
        relation_channels=None,
        value_channels=None,
        softmax=True,
        **kwargs,
    ):
        super().__init__(
            kernel_size=kernel_size,
            dilation=dilation,
            share_planes=share_planes,
            relation_channels=relation_channels,
            value_channels=value_channels,
            **kwargs,
        )
        self.softmax = bool(softmax)

    def _build_weight_generator(self, kw):
        features = self.relation_width * (self.taps + 1)
        self.weight_norm1 = U.torch_batch_norm("weight_norm1", kw)
        self.weight_norm1.build((None, None, None, features))
        self.weight_conv1 = layers.Conv2D(self.groups, 1, use_bias=False, name="weight_conv1", **kw)
        self.weight_conv1.build((None, None, None, features))
        self.weight_norm2 = U.torch_batch_norm("weight_norm2", kw)
        self.weight_norm2.build((None, None, None, self.groups))
        self.weight_conv2 = layers.Conv2D(self.taps * self.groups, 1, name="weight_conv2", **kw)
        self.weight_conv2.build((None, None, None, self.groups))

    def call(self, inputs, training=None, return_attention=False):
        shape = ops.shape(inputs)
        h, w = shape[1], shape[2]
        phi, psi = self.query(inputs), self.key(inputs)
        patch = ops.transpose(self._footprint(psi), (0, 1, 2, 4, 3))  # (B, H, W, r, K2)
        patch = ops.reshape(patch, (-1, h, w, self.relation_width * self.taps))
        x = ops.relu(self.weight_norm1(ops.concatenate([phi, patch], axis=-1), training=training))
        x = ops.relu(self.weight_norm2(self.weight_conv1(x), training=training))
        weights = ops.reshape(self.weight_conv2(x), (-1, h, w, self.groups, self.taps))
        weights = ops.transpose(weights, (0, 1, 2, 4, 3))  # (B, H, W, K2, G)
        if self.softmax:
            weights = U.softmax_float32(weights, axis=3)
        outputs = self._aggregate(self.value(inputs), weights)
        return (outputs, weights) if return_attention else outputs

    def get_config(self):
        config = super().get_config()
        config.update(softmax=self.softmax)
        return config
