"""Spatial transformer networks (Jaderberg et al., NIPS 2015): affine and thin-plate-spline
sampling grids, a bilinear sampler written with gathers, and the full layer.

Coordinates follow PyTorch's `F.affine_grid` / `F.grid_sample`: a sampling grid holds
normalised `(x, y)` pairs in `[-1, 1]` (x along the width, last axis first), and
`align_corners` decides whether -1 and 1 are the centres (`True`) or the outer edges
(`False`) of the corner pixels. Samples falling outside the image read zeros
(`padding_mode="zeros"`).

The sampler gathers the four neighbours of every sample from the flattened image
(`keras.ops.take`), so the output is differentiable with respect to the image and to the
sampling positions (hence to the transform) on every backend;
`keras.ops.image.affine_transform` is not used because TensorFlow gives it no gradient with
respect to the transform.
"""

import keras
import numpy as np
from keras import layers, ops

from keras_attention.layers import _utils as U
from keras_attention.layers.base import AttentionLayer

register = keras.saving.register_keras_serializable(package="keras_attention")

TRANSFORMS = ("affine", "tps")
IDENTITY_THETA = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
LOC_INPUT_SIZE = (16, 16)  # the default localisation network sees the input at this size


def check_size_pair(name, value, allow_none=False):
    """`(height, width)`: two positive integers (or None where allowed)."""
    if value is None and allow_none:
        return None
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not all(U.is_positive_int(v) for v in value)
    ):
        raise ValueError(
            f"`{name}` must be a pair (height, width) of positive integers, got {name}={value!r}."
        )
    return tuple(value)


def multi_input_spec(layer, inputs, return_attention):
    """`compute_output_spec` of an `AttentionLayer` called on a list of tensors."""
    shapes = [tuple(x.shape) for x in inputs]
    outputs = keras.KerasTensor(layer.compute_output_shape(shapes), dtype=layer.compute_dtype)
    if not return_attention:
        return outputs
    attention = keras.KerasTensor(layer.compute_attention_shape(shapes), dtype=layer.compute_dtype)
    return outputs, attention


def split_inputs(layer, input_shape, names):
    """Validate `inputs = [a, b]` (given by their shapes) and return the two shapes."""
    if (
        not isinstance(input_shape, (list, tuple))
        or len(input_shape) != 2
        or not all(isinstance(s, (list, tuple)) for s in input_shape)
    ):
        raise ValueError(
            f"{type(layer).__name__} expects `inputs` = [{names[0]}, {names[1]}]; got "
            f"input_shape={input_shape}."
        )
    return tuple(input_shape[0]), tuple(input_shape[1])


def check_vector_input(layer, name, shape, size=None):
    """A `(batch, size)` input (`size=None`: any known size)."""
    shape = tuple(shape)
    if len(shape) != 2 or (size is not None and shape[-1] not in (None, size)):
        expected = f"(batch, {size})" if size is not None else "(batch, features)"
        raise ValueError(
            f"{type(layer).__name__} expects `{name}` of shape {expected}; got input_shape={shape}."
        )


# --------------------------------------------------------------------------------------
# Functional core (keras.ops only; float32 coordinates)


def normalized_coordinates(size, align_corners):
    """The `size` normalised coordinates of pixel centres along one axis, as torch.

    `align_corners=True`: `-1 + 2 j / (size - 1)`; `False`: `(2 j + 1) / size - 1`. A size
    of 1 gives the single coordinate 0 in both cases (as `torch.linspace` does).
    """
    j = ops.cast(ops.arange(size), "float32")
    n = ops.cast(size, "float32")
    if align_corners:
        coords = 2.0 * j / ops.maximum(n - 1.0, 1.0) - 1.0
        return ops.where(n > 1.0, coords, ops.zeros_like(coords))
    return (2.0 * j + 1.0) / n - 1.0


def _np_coordinates(size, align_corners):
    """`normalized_coordinates` in float64 NumPy for a static size."""
    j = np.arange(size, dtype="float64")
    if align_corners:
        return 2.0 * j / (size - 1) - 1.0 if size > 1 else np.zeros(1)
    return (2.0 * j + 1.0) / size - 1.0


def unnormalize(coords, size, align_corners):
    """Normalised coordinates -> pixel index coordinates (0 = centre of the first pixel)."""
    n = ops.cast(size, "float32")
    if align_corners:
        return (coords + 1.0) * 0.5 * (n - 1.0)
    return ((coords + 1.0) * n - 1.0) * 0.5


def affine_grid(theta, height, width, align_corners=False):
    """`(B, height, width, 2)` grid of `theta @ [x, y, 1]` over the output pixel centres.

    `theta`: `(B, 2, 3)` (or `(B, 6)`, row-major) float affine matrices mapping output
    coordinates to input coordinates, as `torch.nn.functional.affine_grid`.
    """
    theta = ops.reshape(ops.cast(theta, "float32"), (-1, 2, 3))
    xs = normalized_coordinates(width, align_corners)
    ys = normalized_coordinates(height, align_corners)
    gx = ops.broadcast_to(xs[None, :], (height, width))
    gy = ops.broadcast_to(ys[:, None], (height, width))
    base = ops.stack([gx, gy, ops.ones_like(gx)], axis=-1)  # (H, W, 3)
    return ops.einsum("hwk,bik->bhwi", base, theta)


def _flat_batch_offsets(batch, pixels):
    return ops.cast(ops.arange(batch), "int32") * ops.cast(pixels, "int32")


def bilinear_sample(images, x, y):
    """Bilinear interpolation of NHWC `images` at pixel coordinates `x`, `y` of shape
    `(B, h, w)` (0 = centre of the first pixel); neighbours outside the image read zeros.

    Differentiable with respect to `images`, `x` and `y` (the interpolation weights are
    linear in the position inside each cell, as in `grid_sample`'s backward pass).
    """
    shape = ops.shape(images)
    batch, height, width, channels = shape[0], shape[1], shape[2], images.shape[-1]
    out_shape = ops.shape(x)
    x = ops.cast(x, "float32")
    y = ops.cast(y, "float32")
    x0 = ops.stop_gradient(ops.floor(x))
    y0 = ops.stop_gradient(ops.floor(y))
    fx, fy = x - x0, y - y0
    x0 = ops.cast(x0, "int32")
    y0 = ops.cast(y0, "int32")
    flat = ops.reshape(images, (-1, channels))
    offsets = ops.reshape(_flat_batch_offsets(batch, height * width), (-1, 1, 1))
    h_max, w_max = ops.cast(height, "int32") - 1, ops.cast(width, "int32") - 1
    output = None
    for dy, wy in ((0, 1.0 - fy), (1, fy)):
        yi = y0 + dy
        y_ok = ops.logical_and(yi >= 0, yi <= h_max)
        row = ops.clip(yi, 0, h_max) * ops.cast(width, "int32")
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            xi = x0 + dx
            valid = ops.logical_and(y_ok, ops.logical_and(xi >= 0, xi <= w_max))
            index = offsets + row + ops.clip(xi, 0, w_max)
            weight = wy * wx * ops.cast(valid, "float32")
            values = ops.take(flat, ops.reshape(index, (-1,)), axis=0)
            term = values * ops.cast(ops.reshape(weight, (-1, 1)), images.dtype)
            output = term if output is None else output + term
    return ops.reshape(output, (out_shape[0], out_shape[1], out_shape[2], channels))


def grid_sample(images, grid, align_corners=False):
    """`torch.nn.functional.grid_sample(mode="bilinear", padding_mode="zeros")` for NHWC
    `images` and a `(B, h, w, 2)` grid of normalised `(x, y)`; returns `(B, h, w, C)`."""
    shape = ops.shape(images)
    grid = ops.cast(grid, "float32")
    x = unnormalize(grid[..., 0], shape[2], align_corners)
    y = unnormalize(grid[..., 1], shape[1], align_corners)
    return bilinear_sample(images, x, y)


def tps_control_points(grid_size):
    """`(K, 2)` regular grid of control points `(x, y)` over `[-1, 1]^2`, row-major."""
    rows, cols = grid_size
    ys, xs = np.meshgrid(np.linspace(-1.0, 1.0, rows), np.linspace(-1.0, 1.0, cols), indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=-1)


def _tps_radial(squared_distance):
    """U(r) = r^2 log r^2 (Bookstein), 0 at r = 0."""
    return squared_distance * ops.log(ops.maximum(squared_distance, 1e-30))


def tps_inverse_kernel(control_points):
    """The first K columns of the inverse of the TPS system matrix [[U, P], [P^T, 0]]
    (float64 NumPy): `[w; a] = L^-1[:, :K] @ targets`."""
    points = np.asarray(control_points, dtype="float64")
    k = len(points)
    d2 = np.sum((points[:, None] - points[None]) ** 2, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        kernel = np.where(d2 > 0, d2 * np.log(np.where(d2 > 0, d2, 1.0)), 0.0)
    p = np.concatenate([np.ones((k, 1)), points], axis=1)
    system = np.zeros((k + 3, k + 3))
    system[:k, :k], system[:k, k:], system[k:, :k] = kernel, p, p.T
    return np.linalg.inv(system)[:, :k]


def tps_grid(targets, control_points, height, width, align_corners=False):
    """`(B, height, width, 2)` thin-plate-spline grid.

    The spline maps each fixed control point `control_points[k]` (output space, `(x, y)`)
    to `targets[:, k]` (input space; `targets` is `(B, K, 2)` or `(B, 2K)`) and interpolates
    with minimum bending energy in between (paper sec. 3.4). With `targets` equal to the
    control points it is the identity.
    """
    points = np.asarray(control_points, dtype="float64")
    k = len(points)
    targets = ops.reshape(ops.cast(targets, "float32"), (-1, k, 2))
    inverse_np = tps_inverse_kernel(points)
    if isinstance(height, int) and isinstance(width, int):
        # Static size: the whole linear map targets -> grid in float64, rounded once.
        gy, gx = np.meshgrid(
            _np_coordinates(height, align_corners),
            _np_coordinates(width, align_corners),
            indexing="ij",
        )
        gx, gy = gx.ravel(), gy.ravel()
        d2 = (gx[:, None] - points[None, :, 0]) ** 2 + (gy[:, None] - points[None, :, 1]) ** 2
        with np.errstate(divide="ignore", invalid="ignore"):
            radial = np.where(d2 > 0, d2 * np.log(np.where(d2 > 0, d2, 1.0)), 0.0)
        features = np.concatenate(
            [radial, np.ones_like(gx)[:, None], gx[:, None], gy[:, None]], axis=-1
        )
        weights = ops.convert_to_tensor((features @ inverse_np).astype("float32"))  # (HW, K)
        grid = ops.einsum("pk,bkd->bpd", weights, targets)
        return ops.reshape(grid, (-1, height, width, 2))
    inverse = ops.convert_to_tensor(inverse_np.astype("float32"))
    coefficients = ops.einsum("mk,bkd->bmd", inverse, targets)  # (B, K + 3, 2)
    xs = normalized_coordinates(width, align_corners)
    ys = normalized_coordinates(height, align_corners)
    gx = ops.reshape(ops.broadcast_to(xs[None, :], (height, width)), (-1,))
    gy = ops.reshape(ops.broadcast_to(ys[:, None], (height, width)), (-1,))
    cp = ops.convert_to_tensor(points.astype("float32"))
    d2 = (gx[:, None] - cp[None, :, 0]) ** 2 + (gy[:, None] - cp[None, :, 1]) ** 2
    features = ops.concatenate(
        [_tps_radial(d2), ops.ones_like(gx)[:, None], gx[:, None], gy[:, None]], axis=-1
    )  # (HW, K + 3)
    grid = ops.einsum("pm,bmd->bpd", features, coefficients)
    return ops.reshape(grid, (-1, height, width, 2))


# --------------------------------------------------------------------------------------
# Layers


@register
class AffineGrid(layers.Layer):
    """Sampling grid of a batch of 2D affine transforms (`torch.nn.functional.affine_grid`).

    Args:
        output_size: `(height, width)` of the grid.
        align_corners: whether -1 and 1 are the centres (`True`) or the outer edges
            (`False`, default) of the corner pixels, exactly as in PyTorch.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `theta`, `(batch, 2, 3)` or `(batch, 6)` (row-major) affine matrices mapping
            normalised output coordinates `(x, y, 1)` to input coordinates.
        training: unused.

    Returns:
        `(batch, height, width, 2)` normalised `(x, y)` input coordinates per output pixel
        (computed in float32, returned in the compute dtype).
    """

    def __init__(self, output_size, align_corners=False, **kwargs):
        super().__init__(**kwargs)
        self.output_size = check_size_pair("output_size", output_size)
        self.align_corners = bool(align_corners)

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if input_shape[1:] not in ((2, 3), (6,)):
            raise ValueError(
                f"AffineGrid expects `theta` of shape (batch, 2, 3) or (batch, 6); got "
                f"input_shape={input_shape}."
            )

    def call(self, inputs, training=None):
        grid = affine_grid(inputs, *self.output_size, align_corners=self.align_corners)
        return ops.cast(grid, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.output_size, 2)

    def get_config(self):
        config = super().get_config()
        config.update(output_size=self.output_size, align_corners=self.align_corners)
        return config


@register
class BilinearSampler(layers.Layer):
    """Bilinear sampling of images at a normalised grid (`torch.nn.functional.grid_sample`
    with `mode="bilinear"`, `padding_mode="zeros"`).

    Written with gathers on the flattened image, so gradients reach both the image and the
    grid (hence a transform that produced it) on TensorFlow, JAX and PyTorch.

    Args:
        align_corners: as in PyTorch and `AffineGrid` (default `False`).
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `[images, grid]`: `(batch, height, width, channels)` images and a
            `(batch, out_height, out_width, 2)` grid of normalised `(x, y)` coordinates
            (x along the width first, as PyTorch). Spatial sizes may be unknown. The grid is
            used in float32 whatever the compute dtype.
        training: unused.

    Returns:
        `(batch, out_height, out_width, channels)` samples (zero where a sample's
        neighbours lie outside the image), in the compute dtype.
    """

    def __init__(self, align_corners=False, **kwargs):
        kwargs.setdefault("autocast", False)  # keep a float32 grid float32
        super().__init__(**kwargs)
        self.align_corners = bool(align_corners)

    def build(self, input_shape):
        images, grid = split_inputs(self, input_shape, ("images", "grid"))
        U.feature_map_channels(self, images)
        if len(grid) != 4 or grid[-1] != 2:
            raise ValueError(
                f"BilinearSampler expects a `grid` of shape (batch, height, width, 2); got "
                f"input_shape={grid}."
            )

    def call(self, inputs, training=None):
        images, grid = inputs
        images = ops.cast(images, self.compute_dtype)
        return grid_sample(images, grid, self.align_corners)

    def compute_output_shape(self, input_shape):
        images, grid = split_inputs(self, input_shape, ("images", "grid"))
        return (images[0], grid[1], grid[2], images[-1])

    def get_config(self):
        config = super().get_config()
        config.update(align_corners=self.align_corners)
        return config


@register
class SpatialTransformer(AttentionLayer):
    """Spatial transformer (Jaderberg et al., NIPS 2015): a localisation network predicts a
    transform of the input, which is then resampled bilinearly through it.

    `transform="affine"`: the localisation network outputs the 6 entries of `theta`
    (row-major 2 x 3) mapping normalised output coordinates to input coordinates.
    `transform="tps"`: thin-plate spline (paper sec. 3.4): it outputs `2 K` numbers, the
    input-space positions `(x, y)` of `K` control points laid on a regular
    `tps_grid_size` grid over the output's `[-1, 1]^2` (row-major, `x` first per point).

    Without `localization`, a small default network is built: the input resized
    (bilinearly) to 16 x 16, so any input size works and positions survive the flattening
    -> `Conv2D(8, 3, stride 2) -> ReLU -> Conv2D(16, 3, stride 2) -> ReLU -> Flatten ->
    Dense(32) -> LayerNormalization -> tanh -> Dense(n_params)`. The normalisation keeps
    the regression's input bounded whatever the input's contrast; the last layer has a zero
    kernel and the identity transform as bias (`[1, 0, 0, 0, 1, 0]`, or the control points
    themselves for TPS), so a fresh layer is the identity. It runs in float32 under any
    dtype policy (it is tiny, and the transform's precision sets the sampling positions:
    in bfloat16 a sub-pixel error in theta already changes a detailed image a lot). A user
    network is used as given (initialise its last layer the same way to start from the
    identity, and keep it in float32 under mixed precision for the same reason).

    Args:
        localization: `None` (default network) or a Keras layer / model mapping the input
            `(batch, height, width, channels)` to `(batch, n_params)` (or its serialised
            form, `keras.saving.serialize_keras_object(model)`).
        output_size: `(height, width)` of the output; `None` (default): the input's size.
        transform: `"affine"` (default) or `"tps"`.
        align_corners: sampling convention, exactly PyTorch's (default `False`). With
            `True` the identity transform reproduces the input exactly (at the same size);
            with `False` it does too at the same size (the pixel centres map onto
            themselves), but a resize maps the image's outer edges onto each other instead
            of the corner pixel centres.
        tps_grid_size: `(rows, cols)` of the TPS control-point grid (`(4, 4)`), each >= 2.
            When the output size is static (given, or the input's known size), the linear
            map from control points to the grid is computed once in float64; only for
            unknown sizes (`output_size=None` in a graph with dynamic height / width) is it
            evaluated in float32 at run time, about 1e-6 (normalised units) less precise.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `(batch, height, width, channels)` images or feature maps (height and width
            may be unknown with the default network and `output_size=None`).
        training: passed to the localisation network.
        return_attention: if `True`, also return the sampling grid.

    Returns:
        The transformed input, `(batch, out_height, out_width, channels)`, in the compute
        dtype; with `return_attention=True`, a tuple `(outputs, grid)` with the
        `(batch, out_height, out_width, 2)` normalised `(x, y)` sampling grid.
    """

    def __init__(
        self,
        localization=None,
        output_size=None,
        transform="affine",
        align_corners=False,
        tps_grid_size=(4, 4),
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(localization, dict):  # as serialised by get_config
            localization = keras.saving.deserialize_keras_object(localization)
        if localization is not None and not isinstance(localization, layers.Layer):
            raise ValueError(
                "`localization` must be None or a Keras layer / model, got "
                f"localization={localization!r}."
            )
        U.check_choice("transform", transform, TRANSFORMS)
        self.output_size = check_size_pair("output_size", output_size, allow_none=True)
        tps_grid_size = check_size_pair("tps_grid_size", tps_grid_size)
        if min(tps_grid_size) < 2:
            raise ValueError(
                "`tps_grid_size` needs at least 2 control points per axis, got "
                f"tps_grid_size={tps_grid_size!r}."
            )
        self.localization = localization
        self.transform = transform
        self.align_corners = bool(align_corners)
        self.tps_grid_size = tps_grid_size

    @property
    def num_params(self):
        if self.transform == "affine":
            return 6
        return 2 * self.tps_grid_size[0] * self.tps_grid_size[1]

    def identity_params(self):
        """The localisation output of the identity transform, `(num_params,)` float32."""
        if self.transform == "affine":
            return np.asarray(IDENTITY_THETA, dtype="float32")
        return tps_control_points(self.tps_grid_size).astype("float32").ravel()

    def build(self, input_shape):
        U.feature_map_channels(self, input_shape)
        input_shape = tuple(input_shape)
        if self.localization is None:
            # float32 whatever the policy: the transform sets the sampling positions, and
            # the network is tiny (16 x 16 input)
            kw = {"dtype": "float32"}
            self.loc_layers = [
                layers.Conv2D(
                    8, 3, strides=2, padding="same", activation="relu", name="loc_conv1", **kw
                ),
                layers.Conv2D(
                    16, 3, strides=2, padding="same", activation="relu", name="loc_conv2", **kw
                ),
                layers.Flatten(name="loc_flatten", **kw),
                layers.Dense(32, name="loc_dense", **kw),
                layers.LayerNormalization(name="loc_norm", **kw),
                layers.Activation("tanh", name="loc_tanh", **kw),
                layers.Dense(
                    self.num_params,
                    kernel_initializer="zeros",
                    bias_initializer=keras.initializers.Constant(self.identity_params()),
                    name="loc_params",
                    **kw,
                ),
            ]
            shape = (input_shape[0], *LOC_INPUT_SIZE, input_shape[-1])
            for layer in self.loc_layers:
                layer.build(shape)
                shape = layer.compute_output_shape(shape)
        else:
            if not self.localization.built:
                self.localization.build(input_shape)
            try:
                shape = tuple(self.localization.compute_output_shape(input_shape))
            except Exception:  # a model whose output shape cannot be inferred here
                shape = None
            if shape is not None and (len(shape) != 2 or shape[-1] not in (None, self.num_params)):
                raise ValueError(
                    f"`localization` must map the input to (batch, {self.num_params}) "
                    f"transform parameters for transform={self.transform!r}; it gives "
                    f"{shape}."
                )

    def _localize(self, inputs, training):
        if self.localization is not None:
            return self.localization(inputs, training=training)
        x = ops.image.resize(ops.cast(inputs, "float32"), LOC_INPUT_SIZE, interpolation="bilinear")
        for layer in self.loc_layers:
            x = layer(x)
        return x

    def _size(self, inputs):
        if self.output_size is not None:
            return self.output_size
        shape = ops.shape(inputs)
        return shape[1], shape[2]

    def call(self, inputs, training=None, return_attention=False):
        params = ops.cast(self._localize(inputs, training), "float32")
        height, width = self._size(inputs)
        if self.transform == "affine":
            grid = affine_grid(params, height, width, self.align_corners)
        else:
            grid = tps_grid(
                params, tps_control_points(self.tps_grid_size), height, width, self.align_corners
            )
        outputs = grid_sample(inputs, grid, self.align_corners)
        if return_attention:
            return outputs, ops.cast(grid, self.compute_dtype)
        return outputs

    def compute_output_shape(self, input_shape):
        size = self.output_size or tuple(input_shape[1:3])
        return (input_shape[0], *size, input_shape[-1])

    def compute_attention_shape(self, input_shape):
        return (*self.compute_output_shape(input_shape)[:3], 2)

    def get_config(self):
        config = super().get_config()
        config.update(
            localization=(
                None
                if self.localization is None
                else keras.saving.serialize_keras_object(self.localization)
            ),
            output_size=self.output_size,
            transform=self.transform,
            align_corners=self.align_corners,
            tps_grid_size=self.tps_grid_size,
        )
        return config
