"""Interaction-aware spatial-pyramid attention (Du et al., ECCV 2018) with its PCA-inspired loss."""

import keras
from keras import ops

from keras_attention.layers import _utils as U
from keras_attention.layers.base import AttentionLayer

register = keras.saving.register_keras_serializable(package="keras_attention")


def _is_shape_list(input_shape):
    return (
        isinstance(input_shape, (list, tuple))
        and len(input_shape) > 0
        and all(isinstance(s, (list, tuple)) for s in input_shape)
    )


def _resample_axis(x, out_size, axis, interpolation):
    """Resize axis 1 or 2 of NHWC `x` to `out_size` with half-pixel centres, no antialiasing.

    The sampling of TensorFlow's and JAX's resize, identical on every backend, written with
    `take` so the target size may be a tensor (unknown height and width under
    `tf.function`, which `ops.image.resize` rejects).
    """
    in_size = ops.shape(x)[axis]
    scale = ops.cast(in_size, "float32") / ops.cast(out_size, "float32")
    centres = (ops.cast(ops.arange(out_size), "float32") + 0.5) * scale
    last = ops.cast(in_size, "int32") - 1
    if interpolation == "nearest":
        index = ops.minimum(ops.cast(ops.floor(centres), "int32"), last)
        return ops.take(x, index, axis=axis)
    source = ops.maximum(centres - 0.5, 0.0)
    lower = ops.floor(source)
    fraction = ops.reshape(source - lower, (1, -1, 1, 1) if axis == 1 else (1, 1, -1, 1))
    lower = ops.minimum(ops.cast(lower, "int32"), last)
    upper = ops.minimum(lower + 1, last)
    return (
        ops.take(x, lower, axis=axis) * (1.0 - fraction) + ops.take(x, upper, axis=axis) * fraction
    )


def _softmax_last_two_axes_float32(logits):
    """Softmax over axes 3 and 4 of `(B, H, W, H, W)` logits, in float32 (no reshape, so
    height and width may be unknown when tracing)."""
    x = ops.cast(logits, "float32")
    x = x - ops.stop_gradient(ops.max(x, axis=(3, 4), keepdims=True))
    e = ops.exp(x)
    return e / ops.sum(e, axis=(3, 4), keepdims=True)


@register
class InteractionAwareAttention(AttentionLayer):
    """Interaction-aware spatial-pyramid attention (Du et al., "Interaction-aware
    Spatio-temporal Pyramid Attention Networks for Action Classification", ECCV 2018).

    The feature maps of `L` layers of a network (a pyramid: sizes and channel counts may
    differ) are resampled to the spatial size of `inputs[target_index]`. Each scale's local
    features, centred per example over the positions (`x~_i = x_i - mean_j x_j`), are
    projected by a learned `(C_l, projection_dim)` matrix `W_l`
    (PCA-inspired: ideally the top principal directions of the local features) into a
    low-dimensional space, `y_i^l = W_l^T x~_i^l`. The attention scores between positions are
    computed there and fused over the pyramid by summing the per-scale scores (i.e. on the
    concatenated projections `y_i = [y_i^1; ...; y_i^L]`):
    `A_ij = softmax_j(sum_l <y_i^l, y_j^l> / sqrt(L * projection_dim))` (float32 softmax over
    all positions `j`). The output at position `i` is the attention-weighted sum of the
    (resampled, uncentred) features of every scale, concatenated over the scales:
    `out_i = [sum_j A_ij x_j^1; ...; sum_j A_ij x_j^L]`. No residual. Memory `O((H W)^2)`.

    Auxiliary loss (added with `add_loss` when `training` is true and `loss_weight > 0`): the
    reconstruction form of PCA, `loss_weight * (1 / L) * sum_l mean_{b, i}
    ||x~_i^l - W_l W_l^T x~_i^l||^2` (squared error summed over channels, averaged over the
    examples and the positions of the map as given, before resampling). Its global minima are
    exactly the `W_l` with orthonormal columns (`W_l^T W_l = I`) spanning the top
    `projection_dim` eigenvectors of the local features' (within-example) covariance, the
    solutions of the covariance eigen-problem up to a rotation inside that subspace; every
    other critical point is a saddle (Baldi & Hornik, 1989), so no eigendecomposition is
    needed. The features are `stop_gradient`-ed in the loss: it trains the projections only,
    rather than pushing the backbone towards low-rank features.

    Args:
        projection_dim: dimension `d` of the projection space, at most every scale's channel
            count; `None` (default): `max(1, min_l C_l // 8)`.
        target_index: index of the input whose height and width the pyramid is resampled to
            (0).
        interpolation: resampling of the other scales: `"bilinear"` (default) or
            `"nearest"`, with half-pixel centres and no antialiasing (the sampling of
            `tf.image.resize` and `jax.image.resize`), the same on every backend.
        loss_weight: non-negative weight of the auxiliary PCA loss (1.0); 0 adds no loss.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a list of `(batch, height_l, width_l, channels_l)` feature maps, or a single
            feature map (a one-scale pyramid, then a drop-in attention block); heights and
            widths may be unknown until called.
        training: whether to add the auxiliary loss.
        return_attention: if `True`, also return the fused attention.

    Returns:
        The attended feature map `(batch, height_t, width_t, sum_l channels_l)` in the compute
        dtype (`t = target_index`; the input's shape for a single map); with
        `return_attention=True`, a tuple `(outputs, attention)` with the attention of shape
        `(batch, height_t, width_t, height_t, width_t)`: `attention[b, y, x]` is the
        distribution (summing to 1) of position `(y, x)`'s weights over all positions.
    """

    def __init__(
        self,
        projection_dim=None,
        target_index=0,
        interpolation="bilinear",
        loss_weight=1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        U.check_positive_int("projection_dim", projection_dim, allow_none=True)
        U.check_non_negative_int("target_index", target_index)
        U.check_choice("interpolation", interpolation, {"bilinear", "nearest"})
        U.check_number("loss_weight", loss_weight)
        if loss_weight < 0:
            raise ValueError(
                f"`loss_weight` must be a non-negative number, got loss_weight={loss_weight!r}."
            )
        self.projection_dim = projection_dim
        self.target_index = target_index
        self.interpolation = interpolation
        self.loss_weight = loss_weight

    def _shapes(self, input_shape):
        shapes = (
            [tuple(s) for s in input_shape] if _is_shape_list(input_shape) else [tuple(input_shape)]
        )
        if self.target_index >= len(shapes):
            raise ValueError(
                f"`target_index` must index one of the {len(shapes)} input maps, got "
                f"target_index={self.target_index}."
            )
        return shapes

    def build(self, input_shape):
        shapes = self._shapes(input_shape)
        channels = [U.feature_map_channels(self, shape) for shape in shapes]
        dim = self.projection_dim or max(1, min(channels) // 8)
        if dim > min(channels):
            raise ValueError(
                f"`projection_dim` must be at most the smallest channel count of the inputs "
                f"({min(channels)}), got projection_dim={dim}."
            )
        self.channels = channels
        self.dim = dim
        self.projections = [
            self.add_weight(
                name=f"projection_{i}", shape=(c, dim), initializer="orthogonal", trainable=True
            )
            for i, c in enumerate(channels)
        ]

    def _centred(self, x):
        return x - ops.cast(U.spatial_mean_float32(x), x.dtype)

    def pca_loss(self, maps):
        """The unweighted auxiliary loss (float32 scalar) for a list of feature maps."""
        total = 0.0
        for x, kernel in zip(maps, self.projections):
            xc = ops.stop_gradient(self._centred(ops.cast(x, "float32")))
            w = ops.cast(kernel, "float32")
            residual = xc - ops.matmul(ops.matmul(xc, w), ops.transpose(w))
            total = total + ops.mean(ops.sum(ops.square(residual), axis=-1))
        return total / len(maps)

    def call(self, inputs, training=None, return_attention=False):
        maps = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        target = maps[self.target_index]
        resampled = []
        for x in maps:
            y = ops.cast(x, "float32")
            for axis in (1, 2):
                if x.shape[axis] is None or x.shape[axis] != target.shape[axis]:
                    y = _resample_axis(y, ops.shape(target)[axis], axis, self.interpolation)
            resampled.append(ops.cast(y, x.dtype))
        projected = [
            ops.matmul(self._centred(x), ops.cast(kernel, x.dtype))
            for x, kernel in zip(resampled, self.projections)
        ]
        y = projected[0] if len(projected) == 1 else ops.concatenate(projected, axis=-1)
        y = y * ops.cast((len(maps) * self.dim) ** -0.25, y.dtype)
        logits = ops.einsum("bhwd,bxyd->bhwxy", y, y)
        attention = ops.cast(_softmax_last_two_axes_float32(logits), target.dtype)
        values = resampled[0] if len(resampled) == 1 else ops.concatenate(resampled, axis=-1)
        outputs = ops.einsum("bhwxy,bxyc->bhwc", attention, values)
        if training and self.loss_weight:
            self.add_loss(self.loss_weight * self.pca_loss(maps))
        return (outputs, attention) if return_attention else outputs

    def compute_output_shape(self, input_shape):
        shapes = self._shapes(input_shape)
        target = shapes[self.target_index]
        channels = [s[-1] for s in shapes]
        total = None if any(c is None for c in channels) else sum(channels)
        return (*target[:3], total)

    def compute_attention_shape(self, input_shape):
        target = self._shapes(input_shape)[self.target_index]
        return (target[0], target[1], target[2], target[1], target[2])

    def compute_output_spec(self, inputs, training=None, return_attention=False):
        shapes = (
            [tuple(x.shape) for x in inputs]
            if isinstance(inputs, (list, tuple))
            else tuple(inputs.shape)
        )
        outputs = keras.KerasTensor(self.compute_output_shape(shapes), dtype=self.compute_dtype)
        if not return_attention:
            return outputs
        attention = keras.KerasTensor(
            self.compute_attention_shape(shapes), dtype=self.compute_dtype
        )
        return outputs, attention

    def get_config(self):
        config = super().get_config()
        config.update(
            projection_dim=self.projection_dim,
            target_index=self.target_index,
            interpolation=self.interpolation,
            loss_weight=self.loss_weight,
        )
        return config
