"""DRAW's Gaussian attention (Gregor et al., ICML 2015): read and write through an
`N x N` grid of 2D Gaussian filters."""

import keras
from keras import layers, ops

from keras_attention.layers import _utils as U
from keras_attention.layers.base import AttentionLayer
from keras_attention.layers.spatial_transformer import (
    check_size_pair,
    check_vector_input,
    multi_input_spec,
    split_inputs,
)

register = keras.saving.register_keras_serializable(package="keras_attention")

MODES = ("read", "write")


def gaussian_filterbanks(params, glimpse_size, height, width, epsilon=1e-8):
    """DRAW's filterbanks from the 5 raw attention parameters (float32).

    `params`: `(B, 5)` = `(gx~, gy~, log sigma^2, log delta~, log gamma)`. Returns
    `fx (B, N, width)`, `fy (B, N, height)` (each row normalised to sum 1) and
    `gamma (B,)`.
    """
    params = ops.cast(params, "float32")
    gx_, gy_, log_var, log_delta, log_gamma = (params[:, i] for i in range(5))
    a = ops.cast(width, "float32")
    b = ops.cast(height, "float32")
    n = glimpse_size
    gx = (a + 1.0) / 2.0 * (gx_ + 1.0)
    gy = (b + 1.0) / 2.0 * (gy_ + 1.0)
    delta = (ops.maximum(a, b) - 1.0) / max(n - 1, 1) * ops.exp(log_delta)
    variance = ops.exp(log_var)
    gamma = ops.exp(log_gamma)
    offsets = ops.cast(ops.arange(n), "float32") - n / 2.0 + 0.5  # i - N/2 - 0.5, i = 1..N
    mu_x = gx[:, None] + offsets[None, :] * delta[:, None]
    mu_y = gy[:, None] + offsets[None, :] * delta[:, None]

    def bank(mu, size):
        coords = ops.cast(ops.arange(size), "float32")
        f = ops.exp(
            -ops.square(coords[None, None, :] - mu[:, :, None]) / (2.0 * variance[:, None, None])
        )
        return f / ops.maximum(ops.sum(f, axis=-1, keepdims=True), epsilon)

    return bank(mu_x, width), bank(mu_y, height), gamma


@register
class GaussianAttention(AttentionLayer):
    """DRAW's selective attention (Gregor et al., ICML 2015): an `N x N` grid of 2D Gaussian
    filters placed by a linear layer over a conditioning vector (e.g. the decoder state).

    A `Dense(5)` maps the conditioning vector to `(gx~, gy~, log sigma^2, log delta~,
    log gamma)`, turned into the grid centre, stride, filter variance and intensity with
    DRAW's parameterisation (for an `A`-wide, `B`-high image):

    - `gx = (A + 1) / 2 * (gx~ + 1)`, `gy = (B + 1) / 2 * (gy~ + 1)`;
    - `delta = (max(A, B) - 1) / (N - 1) * exp(log delta~)`;
    - `sigma^2 = exp(log sigma^2)`, `gamma = exp(log gamma)`;
    - filter `i` (1..N) is centred at `mu_x_i = gx + (i - N/2 - 0.5) delta` (same for y);
    - `Fx[i, a] = exp(-(a - mu_x_i)^2 / (2 sigma^2)) / max(sum_a' ..., epsilon)` over the
      pixel columns `a = 0 .. A-1` (0-based pixel coordinates, as the common reference
      implementations), likewise `Fy` over rows.

    Read: `glimpse = gamma * Fy x Fx^T` (per channel; `(B, N, N, C)`). Write:
    `canvas = (1 / gamma) * Fy^T w Fx`, the transposed filterbanks, scaled by the inverse
    intensity as in DRAW's `write`. A fresh layer (zero bias, random kernel) starts near the
    centred grid spanning the whole image, sigma = gamma = 1.

    Args:
        glimpse_size: `N` (>= 1), the glimpse's side.
        mode: `"read"` (default) or `"write"`.
        output_size: `(height, width)` of the written canvas (required for `"write"`,
            must be `None` for `"read"`).
        epsilon: floor of each filter row's sum before normalisation (1e-8).
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `[images, conditioning]` for `"read"` (`(B, H, W, C)` images, any H and
            W) or `[patch, conditioning]` for `"write"` (`(B, N, N, C)` patch), with a
            `(B, D)` conditioning vector.
        training: unused.
        return_attention: if `True`, also return the footprint.

    Returns:
        Read: `(B, N, N, C)` glimpse; write: `(B, height, width, C)` canvas (compute dtype).
        With `return_attention=True`, a tuple `(outputs, footprint)` where the
        `(B, H, W, 1)` footprint `(sum_i Fy[i, y]) (sum_j Fx[j, x])` shows how much each
        image pixel contributes (read) or receives (write).
    """

    def __init__(self, glimpse_size, mode="read", output_size=None, epsilon=1e-8, **kwargs):
        super().__init__(**kwargs)
        U.check_positive_int("glimpse_size", glimpse_size)
        U.check_choice("mode", mode, MODES)
        if mode == "write" and output_size is None:
            raise ValueError("`output_size` is required with mode='write', got output_size=None.")
        if mode == "read" and output_size is not None:
            raise ValueError(
                f"`output_size` applies to mode='write' only, got output_size={output_size!r}."
            )
        self.output_size = check_size_pair("output_size", output_size, allow_none=True)
        U.check_positive_number("epsilon", epsilon)
        self.glimpse_size = glimpse_size
        self.mode = mode
        self.epsilon = epsilon

    def build(self, input_shape):
        images, conditioning = split_inputs(
            self, input_shape, ("images" if self.mode == "read" else "patch", "conditioning")
        )
        U.feature_map_channels(self, images)
        check_vector_input(self, "conditioning", conditioning)
        if self.mode == "write" and tuple(images[1:3]) != (self.glimpse_size,) * 2:
            raise ValueError(
                f"GaussianAttention(mode='write') expects a (batch, {self.glimpse_size}, "
                f"{self.glimpse_size}, channels) patch; got input_shape={images}."
            )
        self.params = layers.Dense(5, name="params", **U.sublayer_kwargs(self))
        self.params.build(conditioning)

    def filterbanks(self, conditioning, height, width):
        """`(fx (B, N, width), fy (B, N, height), gamma (B,))` in float32."""
        return gaussian_filterbanks(
            self.params(conditioning), self.glimpse_size, height, width, self.epsilon
        )

    def call(self, inputs, training=None, return_attention=False):
        x, conditioning = inputs
        if self.mode == "read":
            shape = ops.shape(x)
            height, width = shape[1], shape[2]
        else:
            height, width = self.output_size
        fx, fy, gamma = self.filterbanks(conditioning, height, width)
        xf = ops.cast(x, "float32")
        if self.mode == "read":
            outputs = ops.einsum("bih,bhwc,bjw->bijc", fy, xf, fx) * gamma[:, None, None, None]
        else:
            outputs = ops.einsum("bih,bijc,bjw->bhwc", fy, xf, fx) / gamma[:, None, None, None]
        outputs = ops.cast(outputs, self.compute_dtype)
        if not return_attention:
            return outputs
        footprint = ops.sum(fy, axis=1)[:, :, None, None] * ops.sum(fx, axis=1)[:, None, :, None]
        return outputs, ops.cast(footprint, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        images, _ = split_inputs(self, input_shape, ("images", "conditioning"))
        if self.mode == "read":
            return (images[0], self.glimpse_size, self.glimpse_size, images[-1])
        return (images[0], *self.output_size, images[-1])

    def compute_attention_shape(self, input_shape):
        images, _ = split_inputs(self, input_shape, ("images", "conditioning"))
        size = tuple(images[1:3]) if self.mode == "read" else self.output_size
        return (images[0], *size, 1)

    def compute_output_spec(self, inputs, training=None, return_attention=False):
        return multi_input_spec(self, inputs, return_attention)

    def get_config(self):
        config = super().get_config()
        config.update(
            glimpse_size=self.glimpse_size,
            mode=self.mode,
            output_size=self.output_size,
            epsilon=self.epsilon,
        )
        return config
