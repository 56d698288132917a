"""Layer-domain attention of the Pyramid Attention Network (PAN, Li et al., BMVC 2018):
feature pyramid attention on the high-level map and global attention upsampling.

PAN has no official release. The layers follow `FPABlock` and `GAUBlock` of
segmentation_models.pytorch (smp, `segmentation_models_pytorch/decoders/pan/decoder.py`),
chosen over JaveyWang/Pyramid-Attention-Networks-pytorch because smp is the widely used,
maintained and tested reimplementation and keeps the paper's figure where the other departs
from it: its pyramid is one channel wide (the other's is `C / 4` wide, upsampled by
transposed convolutions back to `C` channels) and it accepts any map of at least 8 x 8
(the other's transposed convolutions need sizes divisible by 8). Every convolution is
followed by a BatchNorm (PyTorch's epsilon 1e-5, as the paper says of all its
convolutions) and, like smp's `ConvBnRelu`, has a bias unless `use_bias=False`; upsampling
is bilinear with aligned corners, as in smp.
"""

import keras
from keras import layers, ops

from keras_attention.layers import _utils as U
from keras_attention.layers.base import AttentionLayer
from keras_attention.layers.context_attention import _resize_bilinear_align_corners
from keras_attention.layers.spatial_transformer import multi_input_spec, split_inputs

register = keras.saving.register_keras_serializable(package="keras_attention")

PYRAMID_LEVELS = 3  # 2x2 max poolings of the pyramid: maps need at least 2 ** 3 positions
GAU_GATE_ACTIVATIONS = ("relu", "sigmoid")


class _ConvNormLayer(AttentionLayer):
    """Shared by both PAN layers: convolution + BatchNorm (+ ReLU) units."""

    def __init__(self, use_bias=True, **kwargs):
        super().__init__(**kwargs)
        self.use_bias = bool(use_bias)

    def _conv_norm(self, name, filters, kernel_size, in_channels, kw=None):
        kw = kw or U.sublayer_kwargs(self)
        conv = layers.Conv2D(
            filters, kernel_size, padding="same", use_bias=self.use_bias, name=f"{name}_conv", **kw
        )
        conv.build((None, None, None, in_channels))
        norm = U.torch_batch_norm(f"{name}_norm", kw)
        norm.build((None, None, None, filters))
        return conv, norm

    @staticmethod
    def _apply(unit, x, training, relu=True):
        conv, norm = unit
        y = norm(conv(x), training=training)
        return ops.relu(y) if relu else y

    def get_config(self):
        config = super().get_config()
        config.update(use_bias=self.use_bias)
        return config


@register
class FeaturePyramidAttention(_ConvNormLayer):
    """Feature pyramid attention (FPA) of PAN (Li et al., BMVC 2018), after smp's `FPABlock`.

    On a high-level feature map `x` of size `H x W`:

    - a U-shaped pyramid one channel wide: `2x2` max pooling then a 7x7 convolution to one
      channel (`H / 2`), `2x2` max pooling then a 5x5 convolution (`H / 4`), `2x2` max
      pooling then two 3x3 convolutions (`H / 8`); on the way up, each level's map is
      convolved once more with its kernel (7x7 at `H / 2`, 5x5 at `H / 4`) and the coarser
      sum is upsampled (bilinear, corners aligned) and added to it; the result, upsampled to
      `H x W`, is the attention map `a` (one channel);
    - the features: a 1x1 convolution of `x` to `out_channels`;
    - a global pooling branch: global average pooling, 1x1 convolution to `out_channels`;

    `out = a * features + global` (the map multiplies every channel; the pooled branch is
    broadcast over positions). Every convolution is followed by BatchNorm and ReLU. Pooling
    floors like PyTorch's `MaxPool2d` and the levels are `H // 2`, `H // 4`, `H // 8`, so any
    height and width of at least 8 work, as in smp. Under a `float16` / `bfloat16` compute
    dtype the one-channel pyramid runs in float32 and its map is cast back.

    Args:
        out_channels: width of the features and of the output (default: the input's).
        use_bias: whether the convolutions have biases (`True`, as smp's `ConvBnRelu`, so
            its state dicts load; redundant before BatchNorm otherwise).
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a `(batch, height, width, channels)` feature map, height and width at least
            8; they may be unknown until called.
        training: whether the batch normalisations use batch statistics.
        return_attention: if `True`, also return the pyramid attention map.

    Returns:
        The feature map `(batch, height, width, out_channels)` in the compute dtype; with
        `return_attention=True`, a tuple `(outputs, attention)` with the pyramid attention
        map `a` of shape `(batch, height, width, 1)`.
    """

    def __init__(self, out_channels=None, use_bias=True, **kwargs):
        super().__init__(use_bias=use_bias, **kwargs)
        U.check_positive_int("out_channels", out_channels, allow_none=True)
        self.out_channels = out_channels

    def build(self, input_shape):
        channels = U.feature_map_channels(self, input_shape)
        smallest = 2**PYRAMID_LEVELS
        for axis, name in ((1, "height"), (2, "width")):
            if input_shape[axis] is not None and input_shape[axis] < smallest:
                raise ValueError(
                    f"FeaturePyramidAttention halves the map {PYRAMID_LEVELS} times (2x2 max "
                    f"pooling) and needs {name} >= {smallest}; got "
                    f"input_shape={tuple(input_shape)}."
                )
        out_channels = self.out_channels or channels
        # Under mixed precision the one-channel pyramid (a small part of the work) runs in
        # float32: PyTorch's CPU bfloat16 convolution backward fails on its C -> 1 kernel
        # ("slow_conv2d: grad_weight must be contiguous", torch 2.x through Keras).
        half = keras.backend.standardize_dtype(self.compute_dtype) in ("float16", "bfloat16")
        self.pyramid_dtype = "float32" if half else self.compute_dtype
        pyramid_kw = {"dtype": "float32"} if half else None
        self.global_branch = self._conv_norm("global", out_channels, 1, channels)
        self.features = self._conv_norm("features", out_channels, 1, channels)
        self.down1 = self._conv_norm("down1", 1, 7, channels, pyramid_kw)
        self.down2 = self._conv_norm("down2", 1, 5, 1, pyramid_kw)
        self.down3a = self._conv_norm("down3a", 1, 3, 1, pyramid_kw)
        self.down3b = self._conv_norm("down3b", 1, 3, 1, pyramid_kw)
        self.up2 = self._conv_norm("up2", 1, 5, 1, pyramid_kw)
        self.up1 = self._conv_norm("up1", 1, 7, 1, pyramid_kw)

    def call(self, inputs, training=None, return_attention=False):
        shape = ops.shape(inputs)
        height, width = shape[1], shape[2]

        def pool(x):
            return ops.max_pool(x, 2, strides=2, padding="valid", data_format="channels_last")

        level1 = self._apply(self.down1, pool(ops.cast(inputs, self.pyramid_dtype)), training)
        level2 = self._apply(self.down2, pool(level1), training)
        level3 = self._apply(self.down3a, pool(level2), training)
        level3 = self._apply(self.down3b, level3, training)
        x = self._apply(self.up2, level2, training) + _resize_bilinear_align_corners(
            level3, (height // 4, width // 4)
        )
        x = self._apply(self.up1, level1, training) + _resize_bilinear_align_corners(
            x, (height // 2, width // 2)
        )
        attention = ops.cast(_resize_bilinear_align_corners(x, (height, width)), inputs.dtype)

        pooled = U.spatial_mean_float32(inputs)
        outputs = attention * self._apply(self.features, inputs, training) + self._apply(
            self.global_branch, pooled, training
        )
        return (outputs, attention) if return_attention else outputs

    def compute_output_shape(self, input_shape):
        return (*input_shape[:3], self.out_channels or input_shape[-1])

    def compute_attention_shape(self, input_shape):
        return (*input_shape[:3], 1)

    def get_config(self):
        config = super().get_config()
        config.update(out_channels=self.out_channels)
        return config


@register
class GlobalAttentionUpsample(_ConvNormLayer):
    """Global attention upsample (GAU) of PAN (Li et al., BMVC 2018), after smp's `GAUBlock`.

    Takes a low-level map (large, `C_low` channels) and a high-level map (small, `C_high`
    channels). The high-level map is globally average-pooled and a 1x1 convolution +
    BatchNorm + `gate_activation` turns it into per-channel weights `g` (`C_high` of them);
    the low-level map goes through a 3x3 convolution + BatchNorm + ReLU to `C_high`
    channels, is weighted by `g`, and the high-level map, upsampled to the low-level size
    (bilinear, corners aligned), is added:
    `out = g * relu(BN(conv3x3(low))) + upsample(high)`.

    Paper and smp. The paper's gate is 1x1 convolution, BatchNorm and ReLU
    (`gate_activation="relu"`, the default); smp's `GAUBlock` ends its gate with a sigmoid
    instead of the ReLU (`gate_activation="sigmoid"` reproduces it).

    Args:
        gate_activation: `"relu"` (paper) or `"sigmoid"` (smp) after the gate's BatchNorm.
        use_bias: whether the convolutions have biases (`True`, as smp's `ConvBnRelu`).
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a list `[low, high]` of two feature maps `(batch, height_low, width_low,
            C_low)` and `(batch, height_high, width_high, C_high)`; heights and widths may
            be unknown until called.
        training: whether the batch normalisations use batch statistics.
        return_attention: if `True`, also return the channel weights.

    Returns:
        The feature map `(batch, height_low, width_low, C_high)` in the compute dtype; with
        `return_attention=True`, a tuple `(outputs, weights)` with the channel weights `g`
        of shape `(batch, 1, 1, C_high)`.
    """

    def __init__(self, gate_activation="relu", use_bias=True, **kwargs):
        super().__init__(use_bias=use_bias, **kwargs)
        U.check_choice("gate_activation", gate_activation, GAU_GATE_ACTIVATIONS)
        self.gate_activation = gate_activation

    def build(self, input_shape):
        low_shape, high_shape = split_inputs(self, input_shape, ("low", "high"))
        low_channels = U.feature_map_channels(self, low_shape)
        high_channels = U.feature_map_channels(self, high_shape)
        self.gate = self._conv_norm("gate", high_channels, 1, high_channels)
        self.low = self._conv_norm("low", high_channels, 3, low_channels)

    def call(self, inputs, training=None, return_attention=False):
        low, high = inputs
        weights = self._apply(self.gate, U.spatial_mean_float32(high), training, relu=False)
        weights = ops.relu(weights) if self.gate_activation == "relu" else ops.sigmoid(weights)
        upsampled = _resize_bilinear_align_corners(high, ops.shape(low)[1:3])
        outputs = weights * self._apply(self.low, low, training) + upsampled
        return (outputs, weights) if return_attention else outputs

    def compute_output_shape(self, input_shape):
        low_shape, high_shape = split_inputs(self, input_shape, ("low", "high"))
        return (*low_shape[:3], high_shape[-1])

    def compute_attention_shape(self, input_shape):
        _, high_shape = split_inputs(self, input_shape, ("low", "high"))
        return (high_shape[0], 1, 1, high_shape[-1])

    def compute_output_spec(self, inputs, training=None, return_attention=False):
        return multi_input_spec(self, inputs, return_attention)

    def get_config(self):
        config = super().get_config()
        config.update(gate_activation=self.gate_activation)
        return config
