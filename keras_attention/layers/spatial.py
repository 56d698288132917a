"""Spatial-domain soft attention: CBAM's spatial gate."""

import keras
from keras import layers, ops

from keras_attention.layers import _utils as U
from keras_attention.layers.base import AttentionLayer

register = keras.saving.register_keras_serializable(package="keras_attention")

POOLING_ORDERS = ("max_mean", "mean_max")


def check_odd_kernel_size(name, value):
    """A positive odd integer: 'same' padding is then symmetric, as in the PyTorch code."""
    if not U.is_positive_int(value) or value % 2 == 0:
        raise ValueError(f"`{name}` must be a positive odd integer, got {name}={value!r}.")


@register
class SpatialGate(AttentionLayer):
    """CBAM's spatial attention (Woo et al., ECCV 2018).

    The channel-wise maximum and mean of the input (computed in float32) are stacked into a
    two-channel map, convolved by a `kernel_size x kernel_size` convolution without bias
    ('same' padding) down to one channel, batch-normalised and passed through a sigmoid;
    the input is scaled position by position with the result.

    Args:
        kernel_size: size of the (odd) square convolution kernel (7 in the paper).
        pooling_order: order of the two pooled maps fed to the convolution.
            `"max_mean"` (default) stacks `[max, mean]` like the official code
            (Jongchan/attention-module); `"mean_max"` stacks `[mean, max]` like timm's
            `SpatialAttn`. The order only permutes the convolution's input channels.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    The batch normalisation uses `epsilon=1e-5` and `momentum=0.9` (PyTorch's defaults,
    `momentum=0.1` there).

    Call arguments:
        inputs: a `(batch, height, width, channels)` feature map.
        training: whether the batch normalisation uses batch statistics (`True`) or its
            moving statistics.
        return_attention: if `True`, also return the spatial gate.

    Returns:
        The re-weighted feature map (same shape and compute dtype as the input); with
        `return_attention=True`, a tuple `(outputs, gate)` with the gate of shape
        `(batch, height, width, 1)`.
    """

    def __init__(self, kernel_size=7, pooling_order="max_mean", **kwargs):
        super().__init__(**kwargs)
        check_odd_kernel_size("kernel_size", kernel_size)
        U.check_choice("pooling_order", pooling_order, POOLING_ORDERS)
        self.kernel_size = kernel_size
        self.pooling_order = pooling_order

    def build(self, input_shape):
        U.feature_map_channels(self, input_shape)
        kw = U.sublayer_kwargs(self)
        # Under mixed precision the 2 -> 1 convolution (a tiny part of the work) runs in
        # float32: PyTorch's CPU bfloat16 convolution backward fails on C -> 1 kernels
        # ("slow_conv2d: grad_weight must be contiguous", torch 2.14 through Keras).
        self._gate_dtype = None
        if keras.backend.standardize_dtype(self.compute_dtype) in ("float16", "bfloat16"):
            self._gate_dtype = "float32"
            kw = {**kw, "dtype": "float32"}
        self.conv = layers.Conv2D(
            1, self.kernel_size, padding="same", use_bias=False, name="conv", **kw
        )
        self.conv.build((None, None, None, 2))
        self.norm = U.torch_batch_norm("norm", kw)
        self.norm.build((None, None, None, 1))

    def call(self, inputs, training=None, return_attention=False):
        mean = U.mean_float32(inputs, axis=-1)
        maximum = ops.max(inputs, axis=-1, keepdims=True)
        pooled = [maximum, mean] if self.pooling_order == "max_mean" else [mean, maximum]
        pooled = ops.concatenate(pooled, axis=-1)
        if self._gate_dtype is not None:
            pooled = ops.cast(pooled, self._gate_dtype)
        logits = self.norm(self.conv(pooled), training=training)
        gate = ops.cast(ops.sigmoid(logits), inputs.dtype)
        outputs = inputs * gate
        return (outputs, gate) if return_attention else outputs

    def compute_attention_shape(self, input_shape):
        return (*input_shape[:3], 1)

    def get_config(self):
        config = super().get_config()
        config.update(kernel_size=self.kernel_size, pooling_order=self.pooling_order)
        return config
