"""Mixed-domain soft attention (channel and spatial): CBAM and BAM."""

import keras
from keras import layers, ops

from keras_attention.layers import _utils as U
from keras_attention.layers.base import AttentionLayer
from keras_attention.layers.spatial import POOLING_ORDERS, SpatialGate, check_odd_kernel_size

register = keras.saving.register_keras_serializable(package="keras_attention")

BAM_COMBINES = ("product", "sum")


@register
class ChannelGate(AttentionLayer):
    """CBAM's channel attention (Woo et al., ECCV 2018).

    The input is average-pooled (in float32) and max-pooled over its spatial positions; both
    `(1, 1, C)` vectors go through the same MLP (a 1x1 convolution down to `C *
    reduction_ratio` channels, ReLU, a 1x1 convolution back to `C` channels); the two
    results are summed and passed through a sigmoid, and the input is scaled channel by
    channel with the gate. Matches timm's `ChannelAttn`.

    Args:
        reduction_ratio: bottleneck width as a fraction of the input channels (1/16).
        reduced_channels: explicit bottleneck width; overrides `reduction_ratio`.
        divisor: rounding of the bottleneck width. `1` (default) rounds to the nearest
            integer like timm (`rd_divisor=1`); `None` floors like the official code
            (`C // 16`).
        use_bias: whether the two 1x1 convolutions have biases: `True` like the official
            code (`nn.Linear`), `False` like timm (`mlp_bias=False`).
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a `(batch, height, width, channels)` feature map.
        training: unused (no normalisation inside); accepted like every layer here.
        return_attention: if `True`, also return the gate.

    Returns:
        The re-weighted feature map (same shape and compute dtype as the input); with
        `return_attention=True`, a tuple `(outputs, gate)` with the gate of shape
        `(batch, 1, 1, channels)`.
    """

    def __init__(
        self, reduction_ratio=1 / 16, reduced_channels=None, divisor=1, use_bias=True, **kwargs
    ):
        super().__init__(**kwargs)
        U.check_ratio("reduction_ratio", reduction_ratio)
        U.check_positive_int("reduced_channels", reduced_channels, allow_none=True)
        U.check_divisor("divisor", divisor)
        self.reduction_ratio = reduction_ratio
        self.reduced_channels = reduced_channels
        self.divisor = divisor
        self.use_bias = use_bias

    def build(self, input_shape):
        channels = U.feature_map_channels(self, input_shape)
        self.reduce, self.expand = U.channel_bottleneck(
            self, channels, self.reduced_channels, self.reduction_ratio, self.divisor, self.use_bias
        )

    def _mlp(self, pooled):
        return self.expand(ops.relu(self.reduce(pooled)))

    def call(self, inputs, training=None, return_attention=False):
        average = U.spatial_mean_float32(inputs)
        maximum = U.spatial_reduce(ops.max, inputs)
        gate = ops.sigmoid(self._mlp(average) + self._mlp(maximum))
        outputs = inputs * gate
        return (outputs, gate) if return_attention else outputs

    def compute_attention_shape(self, input_shape):
        return (input_shape[0], 1, 1, input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            reduction_ratio=self.reduction_ratio,
            reduced_channels=self.reduced_channels,
            divisor=self.divisor,
            use_bias=self.use_bias,
        )
        return config


@register
class CBAM(AttentionLayer):
    """Convolutional Block Attention Module (Woo et al., ECCV 2018).

    A `ChannelGate` followed by a `SpatialGate` applied to its output. The defaults follow
    the official code (Jongchan/attention-module) except for the bottleneck rounding;
    timm's `CbamModule` is `CBAM(use_bias=False, pooling_order="mean_max")` (the factory's
    `"cbam"`).

    Args:
        reduction_ratio: channel-gate bottleneck width as a fraction of the channels (1/16).
        reduced_channels: explicit channel-gate bottleneck width; overrides `reduction_ratio`.
        divisor: rounding of the bottleneck width: `1` (default) rounds to the nearest
            integer like timm; `None` floors like the official code (`C // 16`).
        use_bias: whether the channel gate's MLP has biases (`True` official, `False` timm).
        kernel_size: spatial gate convolution size (7).
        pooling_order: spatial gate input order, `"max_mean"` (official, default) or
            `"mean_max"` (timm); see `SpatialGate`.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Sublayers (after `build`): `channel_gate` (`ChannelGate`) and `spatial_gate`
    (`SpatialGate`).

    Call arguments:
        inputs: a `(batch, height, width, channels)` feature map.
        training: whether the spatial gate's batch normalisation uses batch statistics.
        return_attention: if `True`, also return the spatial gate's map.

    Returns:
        The re-weighted feature map (same shape and compute dtype as the input); with
        `return_attention=True`, a tuple `(outputs, gate)` where `gate` is the *spatial*
        map, of shape `(batch, height, width, 1)`. The channel map is obtained from
        `layer.channel_gate(inputs, return_attention=True)`.
    """

    def __init__(
        self,
        reduction_ratio=1 / 16,
        reduced_channels=None,
        divisor=1,
        use_bias=True,
        kernel_size=7,
        pooling_order="max_mean",
        **kwargs,
    ):
        super().__init__(**kwargs)
        U.check_ratio("reduction_ratio", reduction_ratio)
        U.check_positive_int("reduced_channels", reduced_channels, allow_none=True)
        U.check_divisor("divisor", divisor)
        check_odd_kernel_size("kernel_size", kernel_size)
        U.check_choice("pooling_order", pooling_order, POOLING_ORDERS)
        self.reduction_ratio = reduction_ratio
        self.reduced_channels = reduced_channels
        self.divisor = divisor
        self.use_bias = use_bias
        self.kernel_size = kernel_size
        self.pooling_order = pooling_order

    def build(self, input_shape):
        U.feature_map_channels(self, input_shape)
        kw = U.sublayer_kwargs(self)
        self.channel_gate = ChannelGate(
            reduction_ratio=self.reduction_ratio,
            reduced_channels=self.reduced_channels,
            divisor=self.divisor,
            use_bias=self.use_bias,
            name="channel_gate",
            **kw,
        )
        self.channel_gate.build(input_shape)
        self.spatial_gate = SpatialGate(
            kernel_size=self.kernel_size,
            pooling_order=self.pooling_order,
            name="spatial_gate",
            **kw,
        )
        self.spatial_gate.build(input_shape)

    def call(self, inputs, training=None, return_attention=False):
        x = self.channel_gate(inputs, training=training)
        return self.spatial_gate(x, training=training, return_attention=return_attention)

    def compute_attention_shape(self, input_shape):
        return (*input_shape[:3], 1)

    def get_config(self):
        config = super().get_config()
        config.update(
            reduction_ratio=self.reduction_ratio,
            reduced_channels=self.reduced_channels,
            divisor=self.divisor,
            use_bias=self.use_bias,
            kernel_size=self.kernel_size,
            pooling_order=self.pooling_order,
        )
        return config


@register
class BAM(AttentionLayer):
    """Bottleneck Attention Module (Park et al., BMVC 2018).

    `outputs = x * (1 + sigmoid(combine(Mc(x), Ms(x))))` with

    - channel branch `Mc`: global average pooling (float32) -> Dense(`C * r`) -> BatchNorm
      -> ReLU -> Dense(`C`), a `(batch, 1, 1, C)` map;
    - spatial branch `Ms`: 1x1 convolution to `C * r` channels -> BatchNorm -> ReLU ->
      `num_dilated_convs` x (3x3 convolution with `dilation_rate`, 'same' padding ->
      BatchNorm -> ReLU) -> 1x1 convolution to one channel, a `(batch, H, W, 1)` map.

    Dense layers and convolutions have biases and the batch normalisations use
    `epsilon=1e-5`, `momentum=0.9` (PyTorch's defaults), as in the official code
    (Jongchan/attention-module, `bam.py`), whose layout this follows (the paper's equations
    instead place a BatchNorm at the end of each branch).

    One deviation from the official code, where it is wrong: its channel gate pools with
    `F.avg_pool2d(x, H, stride=H)`, a square `H x H` window, which is the global average
    only on square maps: for `H < W < 2H` it silently averages the first `H` columns only,
    for `W >= 2H` the flattened `C * (W // H)` features no longer fit its first Linear
    layer (an error) and for `W < H` the window exceeds the map (an error). This layer takes the
    global average over all positions, as the paper, and equals the official code on
    square maps.

    Args:
        reduction_ratio: bottleneck width of both branches as a fraction of the channels
            (1/16).
        reduced_channels: explicit bottleneck width; overrides `reduction_ratio`.
        divisor: rounding of the bottleneck width. `None` (default) floors like the
            official code (`C // 16`); an integer rounds like timm's `make_divisible`.
        num_dilated_convs: number of dilated 3x3 convolutions in the spatial branch (2).
        dilation_rate: their dilation (4).
        combine: how the two branches are combined before the sigmoid: `"product"`
            (default, the official code) or `"sum"` (the paper, Eq. 2).
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a `(batch, height, width, channels)` feature map.
        training: whether the batch normalisations use batch statistics (`True`) or their
            moving statistics.
        return_attention: if `True`, also return the attention map.

    Returns:
        The re-weighted feature map (same shape and compute dtype as the input); with
        `return_attention=True`, a tuple `(outputs, attention)` with the sigmoid map
        `sigmoid(combine(Mc, Ms))` of shape `(batch, height, width, channels)` (the output
        is `inputs * (1 + attention)`).
    """

    def __init__(
        self,
        reduction_ratio=1 / 16,
        reduced_channels=None,
        divisor=None,
        num_dilated_convs=2,
        dilation_rate=4,
        combine="product",
        **kwargs,
    ):
        super().__init__(**kwargs)
        U.check_ratio("reduction_ratio", reduction_ratio)
        U.check_positive_int("reduced_channels", reduced_channels, allow_none=True)
        U.check_divisor("divisor", divisor)
        U.check_non_negative_int("num_dilated_convs", num_dilated_convs)
        U.check_positive_int("dilation_rate", dilation_rate)
        U.check_choice("combine", combine, BAM_COMBINES)
        self.reduction_ratio = reduction_ratio
        self.reduced_channels = reduced_channels
        self.divisor = divisor
        self.num_dilated_convs = num_dilated_convs
        self.dilation_rate = dilation_rate
        self.combine = combine

    def build(self, input_shape):
        channels = U.feature_map_channels(self, input_shape)
        hidden = self.reduced_channels or U.reduced_channels(
            channels, self.reduction_ratio, self.divisor
        )
        kw = U.sublayer_kwargs(self)
        # channel branch
        self.channel_reduce = layers.Dense(hidden, name="channel_reduce", **kw)
        self.channel_reduce.build((None, channels))
        self.channel_norm = U.torch_batch_norm("channel_norm", kw)
        self.channel_norm.build((None, hidden))
        self.channel_expand = layers.Dense(channels, name="channel_expand", **kw)
        self.channel_expand.build((None, hidden))
        # spatial branch
        self.spatial_reduce = layers.Conv2D(hidden, 1, name="spatial_reduce", **kw)
        self.spatial_reduce.build((None, None, None, channels))
        self.spatial_reduce_norm = U.torch_batch_norm("spatial_reduce_norm", kw)
        self.spatial_reduce_norm.build((None, None, None, hidden))
        self.dilated_convs = []
        self.dilated_norms = []
        for i in range(self.num_dilated_convs):
            conv = layers.Conv2D(
                hidden,
                3,
                padding="same",
                dilation_rate=self.dilation_rate,
                name=f"dilated_conv_{i}",
                **kw,
            )
            conv.build((None, None, None, hidden))
            norm = U.torch_batch_norm(f"dilated_norm_{i}", kw)
            norm.build((None, None, None, hidden))
            self.dilated_convs.append(conv)
            self.dilated_norms.append(norm)
        self.spatial_final = layers.Conv2D(1, 1, name="spatial_final", **kw)
        self.spatial_final.build((None, None, None, hidden))

    def call(self, inputs, training=None, return_attention=False):
        pooled = U.spatial_mean_float32(inputs, keepdims=False)
        mc = self.channel_reduce(pooled)
        mc = self.channel_expand(ops.relu(self.channel_norm(mc, training=training)))
        mc = ops.expand_dims(ops.expand_dims(mc, 1), 1)

        ms = ops.relu(self.spatial_reduce_norm(self.spatial_reduce(inputs), training=training))
        for conv, norm in zip(self.dilated_convs, self.dilated_norms):
            ms = ops.relu(norm(conv(ms), training=training))
        ms = self.spatial_final(ms)

        combined = mc * ms if self.combine == "product" else mc + ms
        attention = ops.sigmoid(combined)
        outputs = inputs * (1 + attention)
        return (outputs, attention) if return_attention else outputs

    def compute_attention_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            reduction_ratio=self.reduction_ratio,
            reduced_channels=self.reduced_channels,
            divisor=self.divisor,
            num_dilated_convs=self.num_dilated_convs,
            dilation_rate=self.dilation_rate,
            combine=self.combine,
        )
        return config
