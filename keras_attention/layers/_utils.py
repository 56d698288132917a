"""Small helpers shared by the layers: channel rounding, validation, float32 statistics."""

import math

import keras
from keras import ops

from attention_zoo_common.checks import check_positive_int as check_positive_int
from attention_zoo_common.checks import is_positive_int as is_positive_int


def make_divisible(value, divisor=8, min_value=None, round_limit=0.9):
    """Round `value` to a multiple of `divisor` the way timm does (`timm.layers.make_divisible`)."""
    min_value = min_value or divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < round_limit * value:
        new_value += divisor
    return new_value


def reduced_channels(channels, reduction_ratio, divisor):
    """Width of a bottleneck of `channels * reduction_ratio`.

    `divisor=None` floors like the original papers' code (`C // r`); an integer rounds to
    a multiple of it like timm (`make_divisible(C * ratio, divisor, round_limit=0)`), so
    `divisor=1` rounds to the nearest integer.
    """
    if divisor is None:
        return max(1, int(channels * reduction_ratio))
    return make_divisible(channels * reduction_ratio, divisor, round_limit=0.0)


def channel_bottleneck(layer, channels, fixed_width, reduction_ratio, divisor, use_bias):
    """The `reduce` / `expand` pair of 1x1 convolutions of a channel gate (SE, CBAM's
    channel gate), built for `(1, 1, channels)` inputs: `channels` -> the bottleneck width
    (`fixed_width`, else `reduced_channels(channels, reduction_ratio, divisor)`) ->
    `channels`. Created in this order and with these names, which weight files rely on."""
    hidden = fixed_width or reduced_channels(channels, reduction_ratio, divisor)
    kw = sublayer_kwargs(layer)
    reduce = keras.layers.Conv2D(hidden, 1, use_bias=use_bias, name="reduce", **kw)
    reduce.build((None, 1, 1, channels))
    expand = keras.layers.Conv2D(channels, 1, use_bias=use_bias, name="expand", **kw)
    expand.build((None, 1, 1, hidden))
    return reduce, expand


def check_non_negative_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"`{name}` must be a non-negative integer, got {name}={value!r}.")


def check_ratio(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"`{name}` must be a number in (0, 1], got {name}={value!r}.")


def check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {sorted(choices)}, got {name}={value!r}.")


def check_divisor(name, value):
    if value is not None:
        check_positive_int(name, value)


def check_positive_number(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"`{name}` must be a positive number, got {name}={value!r}.")


def check_number(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"`{name}` must be a number, got {name}={value!r}.")


def feature_map_channels(layer, input_shape, rank=4):
    """Validate a channels-last feature map shape and return its channel count."""
    input_shape = tuple(input_shape)
    if len(input_shape) != rank:
        layout = {
            3: "(batch, length, channels)",
            4: "(batch, height, width, channels)",
            5: "(batch, time, height, width, channels)",
        }.get(rank, f"rank {rank}")
        raise ValueError(
            f"{type(layer).__name__} expects a {rank}D channels-last input {layout}; "
            f"got input_shape={input_shape}."
        )
    channels = input_shape[-1]
    if channels is None:
        raise ValueError(
            f"{type(layer).__name__} needs a known channel dimension; got "
            f"input_shape={input_shape}."
        )
    return int(channels)


def spatial_reduce(reduce_fn, x, keepdims=True):
    """`reduce_fn` (ops.mean, ops.max, ...) over the height and width axes of NHWC `x`.

    Done as two one-axis reductions: TensorFlow's CPU kernel for one reduction over axes
    (1, 2) ran about 2x slower than two one-axis ones on (8, 56, 56, 256) (same values);
    the other backends are indifferent.
    """
    y = reduce_fn(reduce_fn(x, axis=1, keepdims=True), axis=2, keepdims=True)
    return y if keepdims else ops.squeeze(y, axis=(1, 2))


def spatial_mean_float32(x, keepdims=True):
    """Mean over height and width computed in float32 (mixed precision), in x's dtype."""
    return ops.cast(spatial_reduce(ops.mean, ops.cast(x, "float32"), keepdims), x.dtype)


def mean_float32(x, axis, keepdims=True):
    """Mean of `x` computed in float32 (for mixed precision), returned in x's dtype."""
    return ops.cast(ops.mean(ops.cast(x, "float32"), axis=axis, keepdims=keepdims), x.dtype)


def single_head_attention(query, key, value, scale):
    """softmax(scale * q k^T) v for `(B, N, d)` queries and keys and `(B, M, d_v)` values,
    through `keras.ops.dot_product_attention`, so backends with a fused kernel never build
    the `(N, M)` matrix (O(N) memory on GPUs)."""
    depth, value_depth = query.shape[-1], value.shape[-1]
    padded = keras.backend.backend() == "jax" and depth != value_depth
    if padded:
        # jax.nn.dot_product_attention requires the value depth to equal the key depth:
        # zero channels change neither q.k nor the attended values (sliced off below).
        width = max(depth, value_depth)
        query, key = (ops.pad(t, ((0, 0), (0, 0), (0, width - depth))) for t in (query, key))
        value = ops.pad(value, ((0, 0), (0, 0), (0, width - value_depth)))
    out = ops.dot_product_attention(
        ops.expand_dims(query, 2),
        ops.expand_dims(key, 2),
        ops.expand_dims(value, 2),
        scale=scale,
    )
    # a slice, not ops.squeeze: TFLite's converter rejects this Squeeze when the token count
    # is dynamic ("'tfl.squeeze' op attribute 'squeeze_dims' failed to satisfy constraint")
    out = out[:, :, 0]
    return out[..., :value_depth] if padded else out


def softmax_float32(x, axis=-1):
    """Softmax computed in float32 whatever the compute dtype, returned in x's dtype."""
    return ops.cast(ops.softmax(ops.cast(x, "float32"), axis=axis), x.dtype)


def eca_kernel_size(channels, gamma=2, beta=1):
    """ECA-Net's adaptive kernel size: the odd number nearest |log2(C) + b| / gamma, at least 3."""
    t = int(abs(math.log(channels, 2) + beta) / gamma)
    return max(t if t % 2 else t + 1, 3)


def sublayer_kwargs(layer):
    """Keyword arguments every sublayer gets from its parent (dtype policy)."""
    return {"dtype": layer.dtype_policy}


def torch_batch_norm(name, kw):
    """BatchNormalization with PyTorch's defaults (eps 1e-5, momentum 0.1, which Keras writes
    as 0.9), as the reference implementations use."""
    return keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=name, **kw)


def get_activation(identifier):
    return keras.activations.get(identifier)


def serialize_activation(activation):
    return keras.activations.serialize(activation)
