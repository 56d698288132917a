"""Hard attention: integer crops, RAM's glimpse sensor, top-k / adaptive cell selection
(Malinowski et al. 2018), and RA-CNN's attention proposal with its boxcar crop."""

import keras
from keras import layers, ops

from keras_attention.layers import _utils as U
from keras_attention.layers.base import AttentionLayer
from keras_attention.layers.spatial_transformer import (
    bilinear_sample,
    check_size_pair,
    check_vector_input,
    multi_input_spec,
    split_inputs,
)

register = keras.saving.register_keras_serializable(package="keras_attention")

POOLINGS = ("flatten", "avg")


def crop_windows(images, top, left, height, width):
    """`(B, height, width, C)` windows of NHWC `images` with top-left pixel `(top, left)`
    (int32, `(B,)` each); pixels outside the image read zeros. Gathers from the flattened
    image, so gradients reach the pixels (not the corners)."""
    shape = ops.shape(images)
    batch, img_h, img_w, channels = shape[0], shape[1], shape[2], images.shape[-1]
    img_h = ops.cast(img_h, "int32")
    img_w = ops.cast(img_w, "int32")
    rows = top[:, None] + ops.arange(height, dtype="int32")[None, :]
    cols = left[:, None] + ops.arange(width, dtype="int32")[None, :]
    valid = ops.logical_and(
        ops.logical_and(rows >= 0, rows < img_h)[:, :, None],
        ops.logical_and(cols >= 0, cols < img_w)[:, None, :],
    )
    offsets = ops.cast(ops.arange(batch), "int32") * img_h * img_w
    index = (
        offsets[:, None, None]
        + ops.clip(rows, 0, img_h - 1)[:, :, None] * img_w
        + ops.clip(cols, 0, img_w - 1)[:, None, :]
    )
    values = ops.take(ops.reshape(images, (-1, channels)), ops.reshape(index, (-1,)), axis=0)
    values = ops.reshape(values, (-1, height, width, channels))
    return values * ops.cast(valid[..., None], images.dtype)


def _to_int(values):
    values = ops.convert_to_tensor(values)
    if "int" in keras.backend.standardize_dtype(values.dtype):
        return ops.cast(values, "int32")
    return ops.cast(ops.floor(ops.cast(values, "float32")), "int32")


@register
class HardCrop(AttentionLayer):
    """Hard crop `g = I[y:y+h, x:x+w]` (the survey's hard attention) of a fixed size at a
    per-sample integer position.

    Args:
        crop_size: `(h, w)` of every crop.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `[images, corners]`: `(B, H, W, C)` images and `(B, 2)` top-left corners
            `(y, x)` = (row, column) in pixels; integer tensors are used as they are, float
            ones are floored. The window may extend beyond the image: those pixels read zero.
        training: unused.
        return_attention: if `True`, also return the window as a mask.

    The crop is a gather: gradients flow to the pixels inside the window, never to the
    corners (the crop is not differentiable in its position).

    Returns:
        `(B, h, w, C)` crops in the compute dtype; with `return_attention=True`, a tuple
        `(crops, mask)` with the `(B, H, W, 1)` 0/1 mask of the window over the image.
    """

    def __init__(self, crop_size, **kwargs):
        kwargs.setdefault("autocast", False)  # corners must not be rounded to bfloat16
        super().__init__(**kwargs)
        self.crop_size = check_size_pair("crop_size", crop_size)

    def build(self, input_shape):
        images, corners = split_inputs(self, input_shape, ("images", "corners"))
        U.feature_map_channels(self, images)
        check_vector_input(self, "corners", corners, 2)

    def call(self, inputs, training=None, return_attention=False):
        images, corners = inputs
        images = ops.cast(images, self.compute_dtype)
        corners = _to_int(corners)
        top, left = corners[:, 0], corners[:, 1]
        crops = crop_windows(images, top, left, *self.crop_size)
        if not return_attention:
            return crops
        shape = ops.shape(images)
        ys = ops.arange(shape[1], dtype="int32")[None, :]
        xs = ops.arange(shape[2], dtype="int32")[None, :]
        in_rows = ops.logical_and(ys >= top[:, None], ys < top[:, None] + self.crop_size[0])
        in_cols = ops.logical_and(xs >= left[:, None], xs < left[:, None] + self.crop_size[1])
        mask = ops.logical_and(in_rows[:, :, None], in_cols[:, None, :])
        return crops, ops.cast(mask[..., None], self.compute_dtype)

    def compute_output_shape(self, input_shape):
        images, _ = split_inputs(self, input_shape, ("images", "corners"))
        return (images[0], *self.crop_size, images[-1])

    def compute_attention_shape(self, input_shape):
        images, _ = split_inputs(self, input_shape, ("images", "corners"))
        return (*images[:3], 1)

    def compute_output_spec(self, inputs, training=None, return_attention=False):
        return multi_input_spec(self, inputs, return_attention)

    def get_config(self):
        config = super().get_config()
        config.update(crop_size=self.crop_size)
        return config


@register
class GlimpseSensor(layers.Layer):
    """RAM's retina-like glimpse sensor (Mnih et al., NIPS 2014).

    Around a location `l`, `num_scales` square patches of sides `g, g f, g f^2, ...`
    (`g = glimpse_size`, `f = scale_factor`) are cut out and each brought down to `g x g`
    by average pooling over `f^s x f^s` blocks (the reduction RAM implementations use);
    pixels outside the image are zeros, and count as zeros in the averages.

    Placement: `l = (y, x)` in `[-1, 1]^2` (row first, like RAM's `l`); `-1` / `1` are the
    image's top / bottom (left / right) edges. The patch of side `G` on an axis of size
    `S` starts at pixel `floor((l + 1) / 2 * S - G / 2 + 0.5)`, i.e. the patch's edges are
    snapped to the nearest pixel boundary around the centre `(l + 1) / 2 * S` (in pixel
    edge units). For `l = 0` and even `S` and `G` the patch is exactly centred. Locations
    are snapped to pixels, so the sensor is not differentiable in `l` (RAM trains the
    locations by REINFORCE); gradients reach the image.

    Args:
        glimpse_size: `g`, side of every returned patch (8).
        num_scales: `k`, number of patches (3).
        scale_factor: `f`, integer ratio between successive patch sides (2).
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `[images, locations]`: `(B, H, W, C)` images and `(B, 2)` locations
            `(y, x)`; used in float32 whatever the compute dtype.
        training: unused.

    Returns:
        `(B, num_scales, g, g, C)` (scale 0 = the finest patch first), in the compute
        dtype. Flatten it (`keras.layers.Reshape((-1,))`) for RAM's glimpse network.
    """

    def __init__(self, glimpse_size=8, num_scales=3, scale_factor=2, **kwargs):
        kwargs.setdefault("autocast", False)  # locations must not be rounded to bfloat16
        super().__init__(**kwargs)
        U.check_positive_int("glimpse_size", glimpse_size)
        U.check_positive_int("num_scales", num_scales)
        U.check_positive_int("scale_factor", scale_factor)
        self.glimpse_size = glimpse_size
        self.num_scales = num_scales
        self.scale_factor = scale_factor

    def build(self, input_shape):
        images, locations = split_inputs(self, input_shape, ("images", "locations"))
        U.feature_map_channels(self, images)
        check_vector_input(self, "locations", locations, 2)

    def call(self, inputs, training=None):
        images, locations = inputs
        images = ops.cast(images, self.compute_dtype)
        locations = ops.cast(locations, "float32")
        shape = ops.shape(images)
        sizes = (ops.cast(shape[1], "float32"), ops.cast(shape[2], "float32"))
        g, channels = self.glimpse_size, images.shape[-1]
        patches = []
        for s in range(self.num_scales):
            ratio = self.scale_factor**s
            side = g * ratio
            start = [
                ops.cast(
                    ops.floor((locations[:, i] + 1.0) / 2.0 * sizes[i] - side / 2.0 + 0.5), "int32"
                )
                for i in range(2)
            ]
            patch = crop_windows(images, start[0], start[1], side, side)
            if ratio > 1:
                patch = ops.reshape(ops.cast(patch, "float32"), (-1, g, ratio, g, ratio, channels))
                patch = ops.cast(ops.mean(patch, axis=(2, 4)), self.compute_dtype)
            patches.append(patch)
        return ops.stack(patches, axis=1)

    def compute_output_shape(self, input_shape):
        images, _ = split_inputs(self, input_shape, ("images", "locations"))
        g = self.glimpse_size
        return (images[0], self.num_scales, g, g, images[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            glimpse_size=self.glimpse_size,
            num_scales=self.num_scales,
            scale_factor=self.scale_factor,
        )
        return config


def _cell_norms(inputs):
    """L2 norm over channels of every cell, float32 `(B, H*W)`."""
    x = ops.cast(inputs, "float32")
    norms = ops.sqrt(ops.sum(ops.square(x), axis=-1))
    return ops.reshape(norms, (ops.shape(x)[0], -1))


def _apply_cell_mask(inputs, keep, return_attention):
    shape = ops.shape(inputs)
    mask = ops.reshape(ops.cast(keep, inputs.dtype), (shape[0], shape[1], shape[2], 1))
    outputs = inputs * mask
    return (outputs, mask) if return_attention else outputs


@register
class TopKHardAttention(AttentionLayer):
    """Hard attention by feature norm (Malinowski et al., ECCV 2018): keep the `k` cells of
    largest L2 norm (over channels), zero the others. No parameters.

    Args:
        k: number of cells kept per sample (at most `H * W`; cells tied with the `k`-th
            largest norm are kept too).
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `(B, H, W, C)` feature map (norms computed in float32).
        training: unused.
        return_attention: if `True`, also return the 0/1 selection mask.

    Returns:
        The input with unselected cells zeroed (same shape and dtype); with
        `return_attention=True`, `(outputs, mask)` with the `(B, H, W, 1)` mask. Gradients
        reach the kept cells only.
    """

    def __init__(self, k, **kwargs):
        super().__init__(**kwargs)
        U.check_positive_int("k", k)
        self.k = k

    def build(self, input_shape):
        U.feature_map_channels(self, input_shape)
        h, w = input_shape[1], input_shape[2]
        if h is not None and w is not None and self.k > h * w:
            raise ValueError(
                f"`k` must not exceed the number of cells H * W = {h * w}, got k={self.k}."
            )

    def call(self, inputs, training=None, return_attention=False):
        norms = _cell_norms(inputs)
        kth = ops.top_k(norms, self.k, sorted=True)[0][:, -1:]
        return _apply_cell_mask(inputs, norms >= kth, return_attention)

    def compute_attention_shape(self, input_shape):
        return (*input_shape[:3], 1)

    def get_config(self):
        config = super().get_config()
        config.update(k=self.k)
        return config


@register
class AdaptiveHardAttention(AttentionLayer):
    """Adaptive hard attention (AdaHAN, Malinowski et al., ECCV 2018): the L2 norms of the
    `N = H * W` cells are softmax-normalised over the cells, and a cell is kept when its
    share exceeds the uniform `1 / N`; the number kept varies per sample. No parameters.

    Call arguments:
        inputs: `(B, H, W, C)` feature map (norms and softmax in float32).
        training: unused.
        return_attention: if `True`, also return the 0/1 selection mask.

    Returns:
        As `TopKHardAttention`: the input with unselected cells zeroed; with
        `return_attention=True`, `(outputs, mask)` with the `(B, H, W, 1)` mask.
    """

    def build(self, input_shape):
        U.feature_map_channels(self, input_shape)

    def call(self, inputs, training=None, return_attention=False):
        norms = _cell_norms(inputs)
        shares = ops.softmax(norms, axis=-1)
        cells = ops.cast(ops.shape(norms)[1], "float32")
        return _apply_cell_mask(inputs, shares > 1.0 / cells, return_attention)

    def compute_attention_shape(self, input_shape):
        return (*input_shape[:3], 1)


@register
class AttentionProposal(layers.Layer):
    """RA-CNN's attention proposal network (Fu et al., CVPR 2017): two fully connected
    layers on a feature map predict a square box `(tx, ty, tl)`.

    The box is in normalised image coordinates, the convention of `GlimpseSensor` and
    `SpatialTransformer(align_corners=False)`: `-1` / `1` are the image's left / right
    (top / bottom) edges. The centre `(tx, ty)` lies in `(-1, 1)` (tanh) and the half side
    `tl` in `(min_half_size, 1)` (`min_half_size + (1 - min_half_size) * sigmoid`, this
    project's bound keeping the zoomed region from collapsing; `tl = 1` is the whole
    image). The last layer starts with zero kernel and bias: a fresh proposal is the
    centred box of half side `(min_half_size + 1) / 2`. Feed the boxes to `BoxcarCrop`.

    Args:
        units: width of the hidden layer (512).
        activation: its activation (`"tanh"`).
        pooling: `"flatten"` (default; as RA-CNN, needs a static feature-map size) or
            `"avg"` (global average pooling first; any size).
        min_half_size: lower bound of `tl`, in `[0, 1)` (1/3: boxes at least a third of the
            image side).
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `(B, H, W, C)` feature map.
        training: unused.

    Returns:
        `(B, 3)` = `(tx, ty, tl)` in the compute dtype (x first, like the paper; contrast
        with `GlimpseSensor`'s `(y, x)` locations).
    """

    def __init__(
        self, units=512, activation="tanh", pooling="flatten", min_half_size=1 / 3, **kwargs
    ):
        super().__init__(**kwargs)
        U.check_positive_int("units", units)
        U.check_choice("pooling", pooling, POOLINGS)
        if (
            isinstance(min_half_size, bool)
            or not isinstance(min_half_size, (int, float))
            or not 0 <= min_half_size < 1
        ):
            raise ValueError(
                f"`min_half_size` must be a number in [0, 1), got min_half_size={min_half_size!r}."
            )
        self.units = units
        self.activation = U.get_activation(activation)
        self.pooling = pooling
        self.min_half_size = float(min_half_size)

    def build(self, input_shape):
        channels = U.feature_map_channels(self, input_shape)
        if self.pooling == "flatten":
            if input_shape[1] is None or input_shape[2] is None:
                raise ValueError(
                    "AttentionProposal(pooling='flatten') needs a static feature-map size; "
                    f"got input_shape={tuple(input_shape)} (use pooling='avg')."
                )
            features = input_shape[1] * input_shape[2] * channels
        else:
            features = channels
        kw = U.sublayer_kwargs(self)
        self.hidden = layers.Dense(self.units, activation=self.activation, name="hidden", **kw)
        self.hidden.build((None, features))
        self.box = layers.Dense(3, kernel_initializer="zeros", name="box", **kw)
        self.box.build((None, self.units))

    def call(self, inputs, training=None):
        if self.pooling == "flatten":
            x = ops.reshape(inputs, (ops.shape(inputs)[0], -1))
        else:
            x = U.spatial_mean_float32(inputs, keepdims=False)
        raw = ops.cast(self.box(self.hidden(x)), "float32")
        centre = ops.tanh(raw[:, :2])
        half = self.min_half_size + (1.0 - self.min_half_size) * ops.sigmoid(raw[:, 2:])
        return ops.cast(ops.concatenate([centre, half], axis=-1), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 3)

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            activation=U.serialize_activation(self.activation),
            pooling=self.pooling,
            min_half_size=self.min_half_size,
        )
        return config


def boxcar(coords, centre, half, sharpness):
    """RA-CNN's soft boxcar `h(c - centre + half) - h(c - centre - half)`, `h = sigmoid(k .)`."""
    return ops.sigmoid(sharpness * (coords - centre + half)) - ops.sigmoid(
        sharpness * (coords - centre - half)
    )


@register
class BoxcarCrop(AttentionLayer):
    """RA-CNN's differentiable crop and zoom (Fu et al., CVPR 2017).

    Boxes `(tx, ty, tl)` are in normalised coordinates (see `AttentionProposal`); in
    pixels (edge units, pixel `j` spans `[j, j + 1]`) the box has centre
    `cx = (tx + 1) / 2 * W`, `cy = (ty + 1) / 2 * H` and half sides `hx = tl / 2 * W`,
    `hy = tl / 2 * H`. The image is multiplied by the mask
    `M(x, y) = [h(x - cx + hx) - h(x - cx - hx)] [h(y - cy + hy) - h(y - cy - hy)]`,
    `h(z) = sigmoid(k z)`, at the pixel centres `x = j + 0.5` (so `k` is per pixel, as in
    the paper), then the box is zoomed to `output_size` by bilinear interpolation: output
    column `j` samples the masked image at `cx - hx + (j + 0.5) * 2 hx / out_w` (the
    half-pixel convention of `resize(align_corners=False)`; rows alike), zeros outside.
    Mask and zoom are both differentiable in the box and in the image.

    Args:
        output_size: `(height, width)` of the zoomed crop; `None` (default): the input's.
        sharpness: `k` of the boxcar's sigmoids (10, as RA-CNN).
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `[images, boxes]`: `(B, H, W, C)` images and `(B, 3)` boxes
            `(tx, ty, tl)` (`tl > 0`), used in float32.
        training: unused.
        return_attention: if `True`, also return the mask `M`.

    Returns:
        `(B, out_h, out_w, C)` zoomed crops in the compute dtype; with
        `return_attention=True`, `(crops, mask)` with the `(B, H, W, 1)` mask.
    """

    def __init__(self, output_size=None, sharpness=10.0, **kwargs):
        kwargs.setdefault("autocast", False)  # keep float32 boxes float32
        super().__init__(**kwargs)
        self.output_size = check_size_pair("output_size", output_size, allow_none=True)
        U.check_positive_number("sharpness", sharpness)
        self.sharpness = float(sharpness)

    def build(self, input_shape):
        images, boxes = split_inputs(self, input_shape, ("images", "boxes"))
        U.feature_map_channels(self, images)
        check_vector_input(self, "boxes", boxes, 3)

    def mask_and_box(self, boxes, height, width):
        """The `(B, H, W, 1)` float32 mask and the box `(cx, cy, hx, hy)` in pixels."""
        boxes = ops.cast(boxes, "float32")
        h, w = ops.cast(height, "float32"), ops.cast(width, "float32")
        cx, cy = (boxes[:, 0:1] + 1.0) * 0.5 * w, (boxes[:, 1:2] + 1.0) * 0.5 * h
        hx, hy = boxes[:, 2:3] * 0.5 * w, boxes[:, 2:3] * 0.5 * h
        xs = ops.cast(ops.arange(width), "float32")[None, :] + 0.5
        ys = ops.cast(ops.arange(height), "float32")[None, :] + 0.5
        mask_x = boxcar(xs, cx, hx, self.sharpness)  # (B, W)
        mask_y = boxcar(ys, cy, hy, self.sharpness)  # (B, H)
        return mask_y[:, :, None, None] * mask_x[:, None, :, None], (cx, cy, hx, hy)

    def call(self, inputs, training=None, return_attention=False):
        images, boxes = inputs
        images = ops.cast(images, self.compute_dtype)
        shape = ops.shape(images)
        mask, (cx, cy, hx, hy) = self.mask_and_box(boxes, shape[1], shape[2])
        masked = images * ops.cast(mask, images.dtype)
        out_h, out_w = self.output_size or (shape[1], shape[2])
        jx = (ops.cast(ops.arange(out_w), "float32")[None, :] + 0.5) / ops.cast(out_w, "float32")
        jy = (ops.cast(ops.arange(out_h), "float32")[None, :] + 0.5) / ops.cast(out_h, "float32")
        px = cx - hx + jx * 2.0 * hx - 0.5  # (B, out_w), pixel index coordinates
        py = cy - hy + jy * 2.0 * hy - 0.5  # (B, out_h)
        batch = ops.shape(px)[0]
        px = ops.broadcast_to(px[:, None, :], (batch, out_h, out_w))
        py = ops.broadcast_to(py[:, :, None], (batch, out_h, out_w))
        outputs = bilinear_sample(masked, px, py)
        if return_attention:
            return outputs, ops.cast(mask, self.compute_dtype)
        return outputs

    def compute_output_shape(self, input_shape):
        images, _ = split_inputs(self, input_shape, ("images", "boxes"))
        size = self.output_size or tuple(images[1:3])
        return (images[0], *size, images[-1])

    def compute_attention_shape(self, input_shape):
        images, _ = split_inputs(self, input_shape, ("images", "boxes"))
        return (*images[:3], 1)

    def compute_output_spec(self, inputs, training=None, return_attention=False):
        return multi_input_spec(self, inputs, return_attention)

    def get_config(self):
        config = super().get_config()
        config.update(output_size=self.output_size, sharpness=self.sharpness)
        return config
