"""Channel-domain soft attention: SENet, ECA-Net, GCNet and DANet's channel attention."""

import keras
from keras import layers, ops

from keras_attention.layers import _utils as U

register = keras.saving.register_keras_serializable(package="keras_attention")


@register
class SqueezeExcite(layers.Layer):
    """Squeeze-and-Excitation (Hu et al., CVPR 2018).

    Global average pooling, a 1x1 convolution down to `C * reduction_ratio` channels,
    `activation`, a 1x1 convolution back to `C` channels and `gate_activation`; the input is
    scaled channel by channel with the result. Matches timm's `SEModule`.

    Args:
        reduction_ratio: bottleneck width as a fraction of the input channels (1/16).
        reduced_channels: explicit bottleneck width; overrides `reduction_ratio`.
        divisor: rounding of the bottleneck width. `8` (default) rounds like timm
            (`make_divisible(C / 16, 8)`); `None` floors like the paper's code (`C // 16`).
        use_bias: whether the two 1x1 convolutions have biases.
        activation: activation between the two convolutions.
        gate_activation: activation of the channel gate.
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

    def __init__(self, reduction_ratio=1 / 16, reduced_channels=None, divisor=8, use_bias=True,
                 activation="relu", gate_activation="sigmoid", **kwargs):
        super().__init__(**kwargs)
        U.check_ratio("reduction_ratio", reduction_ratio)
        U.check_positive_int("reduced_channels", reduced_channels, allow_none=True)
        U.check_divisor("divisor", divisor)
        self.reduction_ratio = reduction_ratio
        self.reduced_channels = reduced_channels
        self.divisor = divisor
        self.use_bias = use_bias
        self.activation = U.get_activation(activation)
        self.gate_activation = U.get_activation(gate_activation)

    def build(self, input_shape):
        channels = U.feature_map_channels(self, input_shape)
        hidden = self.reduced_channels or U.reduced_channels(
            channels, self.reduction_ratio, self.divisor
        )
        kw = U.sublayer_kwargs(self)
        self.reduce = layers.Conv2D(hidden, 1, use_bias=self.use_bias, name="reduce", **kw)
        self.reduce.build((None, 1, 1, channels))
        self.expand = layers.Conv2D(channels, 1, use_bias=self.use_bias, name="expand", **kw)
        self.expand.build((None, 1, 1, hidden))

    def call(self, inputs, training=None, return_attention=False):
        pooled = U.mean_float32(inputs, axis=(1, 2))
        gate = self.gate_activation(self.expand(self.activation(self.reduce(pooled))))
        outputs = inputs * gate
        return (outputs, gate) if return_attention else outputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            reduction_ratio=self.reduction_ratio,
            reduced_channels=self.reduced_channels,
            divisor=self.divisor,
            use_bias=self.use_bias,
            activation=U.serialize_activation(self.activation),
            gate_activation=U.serialize_activation(self.gate_activation),
        )
        return config
