"""Mixed-domain soft attention: the Residual Attention Network's attention module.

Wang et al., "Residual Attention Network for Image Classification", CVPR 2017. The structure
follows the official Caffe prototxt (`Attention-56/92-deploy.prototxt`):

- every residual unit is a pre-activation bottleneck (BN-ReLU-1x1 conv to C/4, BN-ReLU-3x3
  conv, BN-ReLU-1x1 conv to C, identity shortcut), convolutions without bias;
- the soft mask branch max-pools (3x3, stride 2) `num_downsamples` times with `r` units after
  each pooling (`2r` at the deepest level), keeps one residual unit as a skip connection at
  every pooled level but the deepest, then upsamples bilinearly to the size of the level
  above (the prototxt's `Interp` with a reference blob), adds that level's skip and applies
  `r` units; the last upsampling returns to the input size and is followed by
  BN-ReLU-1x1 conv-BN-ReLU-1x1 conv and the mask activation;
- the module output is `(1 + M) * T` (attention residual learning), then `p` units.

Differences from the prototxt, both forced by dynamic shapes: max pooling uses `'same'`
padding (Caffe rounds up with no padding, which differs only for odd sizes), and the bilinear
upsampling uses half-pixel centres (Keras / TF / PyTorch convention) where Caffe's `Interp`
aligns corners.
"""

import keras
from keras import layers, ops

from keras_attention.layers import _utils as U
from keras_attention.layers.base import AttentionLayer

register = keras.saving.register_keras_serializable(package="keras_attention")

MASK_ACTIVATIONS = ("sigmoid", "channel", "spatial", "tanh")
# f2: x / max(||x||_2, 1e-12) over channels (as `torch.nn.functional.normalize`), written
# with the squared norm so the gradient stays finite at 0.
CHANNEL_NORM_EPSILON = 1e-12
# f3: (x - mean) / sqrt(var + 1e-5) over the spatial positions of each channel.
SPATIAL_NORM_EPSILON = 1e-5


def _check_spatial_size(layer, input_shape, num_downsamples):
    """Every max pool must halve a side of at least 2 pixels: H, W > 2**(num_downsamples-1)."""
    minimum = 2 ** (num_downsamples - 1) + 1
    for size in tuple(input_shape)[1:3]:
        if size is not None and size < minimum:
            raise ValueError(
                f"{type(layer).__name__} with num_downsamples={num_downsamples} needs a height "
                f"and width of at least {minimum} (each max pool must halve a side of at "
                f"least 2); got input_shape={tuple(input_shape)}. Lower `num_downsamples`."
            )


def _bilinear_resize_dynamic(x, height, width):
    """Half-pixel bilinear resize written with gathers, for symbolic (unknown) sizes.

    Same result as `ops.image.resize(..., interpolation="bilinear")` without antialiasing
    (TF `half_pixel_centers`, PyTorch `align_corners=False`), computed in float32.
    """
    dtype = x.dtype
    x = ops.cast(x, "float32")
    shape = ops.shape(x)
    for axis, (size_in, size_out) in ((1, (shape[1], height)), (2, (shape[2], width))):
        size_in_f = ops.cast(size_in, "float32")
        scale = size_in_f / ops.cast(size_out, "float32")
        source = (ops.cast(ops.arange(size_out), "float32") + 0.5) * scale - 0.5
        source = ops.maximum(source, 0.0)
        lower = ops.minimum(ops.floor(source), size_in_f - 1.0)
        weight = source - lower
        lower = ops.cast(lower, "int32")
        upper = ops.minimum(lower + 1, ops.cast(size_in, "int32") - 1)
        weight = ops.reshape(weight, (1, -1, 1, 1) if axis == 1 else (1, 1, -1, 1))
        x0 = ops.take(x, lower, axis=axis)
        x1 = ops.take(x, upper, axis=axis)
        x = x0 + (x1 - x0) * weight
    return ops.cast(x, dtype)


def bilinear_resize_like(x, reference):
    """Resize `x` bilinearly to the height and width of `reference` (both channels-last).

    `ops.image.resize` when the target size is static (always on JAX and PyTorch, and on
    TensorFlow whenever the shapes are known); a gather-based equivalent when it is a
    symbolic tensor (TensorFlow graphs with unknown height / width), which
    `ops.image.resize` does not accept.
    """
    shape = ops.shape(reference)
    height, width = shape[1], shape[2]
    if isinstance(height, int) and isinstance(width, int):
        return ops.image.resize(x, (height, width), interpolation="bilinear")
    return _bilinear_resize_dynamic(x, height, width)


class _PreActBottleneck(layers.Layer):
    """Pre-activation bottleneck residual unit (He et al. 2016), as in the official prototxt.

    `x + conv1x1_C(relu(bn(conv3x3(relu(bn(conv1x1_{C/4}(relu(bn(x)))))))))`, no biases.
    Private: created by the layers below in their `build()`.
    """

    def build(self, input_shape):
        channels = int(input_shape[-1])
        hidden = max(1, channels // 4)
        kw = U.sublayer_kwargs(self)
        spec = ((hidden, 1, channels), (hidden, 3, hidden), (channels, 1, hidden))
        self.norms, self.convs = [], []
        for i, (filters, kernel, fan_in) in enumerate(spec):
            norm = U.torch_batch_norm(f"bn_{i}", kw)
            norm.build((None, None, None, fan_in))
            conv = layers.Conv2D(
                filters, kernel, padding="same", use_bias=False, name=f"conv_{i}", **kw
            )
            conv.build((None, None, None, fan_in))
            self.norms.append(norm)
            self.convs.append(conv)

    def call(self, inputs, training=None):
        x = inputs
        for norm, conv in zip(self.norms, self.convs):
            x = conv(ops.relu(norm(x, training=training)))
        return inputs + x

    def compute_output_shape(self, input_shape):
        return input_shape


class _ResizeLike(layers.Layer):
    """Bilinear upsampling of `inputs` to the spatial size of `reference` (Caffe `Interp`)."""

    def call(self, inputs, reference):
        return bilinear_resize_like(inputs, reference)

    def compute_output_shape(self, input_shape, reference_shape):
        return (input_shape[0], reference_shape[1], reference_shape[2], input_shape[3])


def _units(prefix, count, channels, kw):
    units = []
    for i in range(count):
        unit = _PreActBottleneck(name=f"{prefix}_{i}", **kw)
        unit.build((None, None, None, channels))
        units.append(unit)
    return units


def _apply(units, x, training):
    for unit in units:
        x = unit(x, training=training)
    return x


@register
class SoftMaskBranch(AttentionLayer):
    """Bottom-up top-down soft mask branch of the Residual Attention Network (Wang et al. 2017).

    Bottom-up: `num_downsamples` times a 3x3 max pool with stride 2 (`'same'` padding)
    followed by `units_per_level` (`r`) pre-activation bottleneck units; `2r` units at the
    deepest level. Every pooled level except the deepest keeps a skip connection (one
    residual unit on that level's output), so there are `num_downsamples - 1` of them.
    Top-down: bilinear upsampling to exactly the size of the level above, plus that level's
    skip and `r` units, up to the input size (no units there), then
    BN-ReLU-1x1 conv-BN-ReLU-1x1 conv (C channels, no biases) and the mask activation:

    - `"sigmoid"` (paper f1, mixed attention): `sigmoid(z)`;
    - `"channel"` (f2): `z / max(||z||_2, 1e-12)` over the channels of each position;
    - `"spatial"` (f3): `sigmoid((z - mean) / sqrt(var + 1e-5))` with mean and variance over
      the spatial positions of each channel and sample;
    - `"tanh"`: `tanh(z)`, what the official Attention-92 prototxt ends its masks with (so
      `(1 + M) * T` ranges over (0, 2T)); Attention-56's prototxt uses the sigmoid.

    The activation is computed in float32. The paper uses 3, 2 and 1 poolings in stages 1, 2
    and 3 (56, 28 and 14 pixels at 224x224 input).

    Args:
        num_downsamples: number of max poolings (depth of the hourglass), at least 1.
        units_per_level: `r`, residual units between adjacent pooling layers.
        mask_activation: `"sigmoid"`, `"channel"`, `"spatial"` or `"tanh"` (see above).
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a `(batch, height, width, channels)` feature map; height and width must
            exceed `2 ** (num_downsamples - 1)`.
        training: whether the batch normalisations use batch statistics.
        return_attention: if `True`, return `(mask, mask)`: the branch's output *is* the
            attention map; the tuple keeps the call signature of every other layer.

    Returns:
        The mask `M`, same shape and compute dtype as the input; with `return_attention=True`,
        the tuple `(M, M)`.
    """

    def __init__(self, num_downsamples=1, units_per_level=1, mask_activation="sigmoid", **kwargs):
        super().__init__(**kwargs)
        U.check_positive_int("num_downsamples", num_downsamples)
        U.check_positive_int("units_per_level", units_per_level)
        U.check_choice("mask_activation", mask_activation, MASK_ACTIVATIONS)
        self.num_downsamples = num_downsamples
        self.units_per_level = units_per_level
        self.mask_activation = mask_activation

    def build(self, input_shape):
        channels = U.feature_map_channels(self, input_shape)
        _check_spatial_size(self, input_shape, self.num_downsamples)
        kw = U.sublayer_kwargs(self)
        depth, r = self.num_downsamples, self.units_per_level
        self.pools, self.down_blocks, self.skip_blocks = [], [], []
        for level in range(1, depth + 1):
            pool = layers.MaxPooling2D(3, strides=2, padding="same", name=f"pool_{level}", **kw)
            pool.build((None, None, None, channels))
            self.pools.append(pool)
            count = 2 * r if level == depth else r
            self.down_blocks.append(_units(f"down_{level}", count, channels, kw))
            if level < depth:
                skip = _PreActBottleneck(name=f"skip_{level}", **kw)
                skip.build((None, None, None, channels))
                self.skip_blocks.append(skip)
        # Top-down, from the deepest level: upsample to level `level - 1`, for level = depth..1.
        self.upsamples, self.up_blocks = [], []
        for level in range(depth, 0, -1):
            self.upsamples.append(_ResizeLike(name=f"upsample_{level}", **kw))
            if level > 1:
                self.up_blocks.append(_units(f"up_{level - 1}", r, channels, kw))
        self.head_norms, self.head_convs = [], []
        for i in range(2):
            norm = U.torch_batch_norm(f"head_bn_{i}", kw)
            norm.build((None, None, None, channels))
            conv = layers.Conv2D(channels, 1, use_bias=False, name=f"head_conv_{i}", **kw)
            conv.build((None, None, None, channels))
            self.head_norms.append(norm)
            self.head_convs.append(conv)

    def compute_logits(self, inputs, training=None):
        """The mask before its activation (output of the last 1x1 convolution)."""
        levels = [inputs]  # level 0: input resolution
        skips = []
        x = inputs
        for level, (pool, units) in enumerate(zip(self.pools, self.down_blocks), start=1):
            x = _apply(units, pool(x), training)
            levels.append(x)
            if level < self.num_downsamples:
                skips.append(self.skip_blocks[level - 1](x, training=training))
        for i, upsample in enumerate(self.upsamples):
            target = self.num_downsamples - 1 - i  # level we upsample to
            x = upsample(x, levels[target])
            if target > 0:
                x = _apply(self.up_blocks[i], x + skips[target - 1], training)
        for norm, conv in zip(self.head_norms, self.head_convs):
            x = conv(ops.relu(norm(x, training=training)))
        return x

    def activate(self, logits):
        """Apply the mask activation to `logits` (in float32; result in the logits' dtype)."""
        z = ops.cast(logits, "float32")
        if self.mask_activation == "sigmoid":
            mask = ops.sigmoid(z)
        elif self.mask_activation == "tanh":
            mask = ops.tanh(z)
        elif self.mask_activation == "channel":
            squared = ops.sum(ops.square(z), axis=-1, keepdims=True)
            mask = z * ops.rsqrt(ops.maximum(squared, CHANNEL_NORM_EPSILON**2))
        else:
            mean = ops.mean(z, axis=(1, 2), keepdims=True)
            variance = ops.mean(ops.square(z - mean), axis=(1, 2), keepdims=True)
            mask = ops.sigmoid((z - mean) * ops.rsqrt(variance + SPATIAL_NORM_EPSILON))
        return ops.cast(mask, logits.dtype)

    def call(self, inputs, training=None, return_attention=False):
        mask = self.activate(self.compute_logits(inputs, training=training))
        return (mask, mask) if return_attention else mask

    def compute_attention_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_downsamples=self.num_downsamples,
            units_per_level=self.units_per_level,
            mask_activation=self.mask_activation,
        )
        return config


@register
class ResidualAttention(AttentionLayer):
    """Attention Module of the Residual Attention Network (Wang et al., CVPR 2017).

    `pre_units` (`p`) pre-activation bottleneck units, then a trunk branch of `trunk_units`
    (`t`) units and a `SoftMaskBranch` `M` on the same tensor, combined by attention residual
    learning `H = (1 + M) * T`, then `p` post-processing units. Channels are preserved; the
    defaults are the paper's ImageNet setting `p=1, t=2, r=1`.

    Sublayers (for inspection and weight surgery): `pre_0..`, `trunk_0..`, `soft_mask`
    (a `SoftMaskBranch`), `post_0..`.

    Args:
        pre_units: `p`, units before the split and after the fusion (0 allowed).
        trunk_units: `t`, units of the trunk branch (0 allowed: identity trunk).
        units_per_level: `r`, units between adjacent poolings of the mask branch.
        num_downsamples: poolings of the mask branch; the paper uses 3, 2, 1 in stages 1-3.
        mask_activation: `"sigmoid"` (f1, mixed, default), `"channel"` (f2), `"spatial"`
            (f3) or `"tanh"` (official Attention-92); see `SoftMaskBranch`.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a `(batch, height, width, channels)` feature map; height and width must
            exceed `2 ** (num_downsamples - 1)`.
        training: whether the batch normalisations use batch statistics.
        return_attention: if `True`, also return the mask `M`.

    Returns:
        The module output (same shape and compute dtype as the input); with
        `return_attention=True`, a tuple `(outputs, mask)` with the mask of shape
        `(batch, height, width, channels)`.
    """

    def __init__(
        self,
        pre_units=1,
        trunk_units=2,
        units_per_level=1,
        num_downsamples=1,
        mask_activation="sigmoid",
        **kwargs,
    ):
        super().__init__(**kwargs)
        U.check_non_negative_int("pre_units", pre_units)
        U.check_non_negative_int("trunk_units", trunk_units)
        U.check_positive_int("units_per_level", units_per_level)
        U.check_positive_int("num_downsamples", num_downsamples)
        U.check_choice("mask_activation", mask_activation, MASK_ACTIVATIONS)
        self.pre_units = pre_units
        self.trunk_units = trunk_units
        self.units_per_level = units_per_level
        self.num_downsamples = num_downsamples
        self.mask_activation = mask_activation

    def build(self, input_shape):
        channels = U.feature_map_channels(self, input_shape)
        _check_spatial_size(self, input_shape, self.num_downsamples)
        kw = U.sublayer_kwargs(self)
        self.pre_blocks = _units("pre", self.pre_units, channels, kw)
        self.trunk_blocks = _units("trunk", self.trunk_units, channels, kw)
        self.soft_mask = SoftMaskBranch(
            num_downsamples=self.num_downsamples,
            units_per_level=self.units_per_level,
            mask_activation=self.mask_activation,
            name="soft_mask",
            **kw,
        )
        self.soft_mask.build((None, None, None, channels))
        self.post_blocks = _units("post", self.pre_units, channels, kw)

    def call(self, inputs, training=None, return_attention=False):
        x = _apply(self.pre_blocks, inputs, training)
        trunk = _apply(self.trunk_blocks, x, training)
        mask = self.soft_mask(x, training=training)
        outputs = _apply(self.post_blocks, (1 + mask) * trunk, training)
        return (outputs, mask) if return_attention else outputs

    def compute_attention_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            pre_units=self.pre_units,
            trunk_units=self.trunk_units,
            units_per_level=self.units_per_level,
            num_downsamples=self.num_downsamples,
            mask_activation=self.mask_activation,
        )
        return config
