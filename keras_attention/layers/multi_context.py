"""Multi-context attention for pose estimation (Chu et al., CVPR 2017): spatial attention
maps refined by mean-field steps of a CRF whose pairwise term is one shared convolution."""

import keras
from keras import layers, ops

from keras_attention.layers import _utils as U
from keras_attention.layers.base import AttentionLayer
from keras_attention.layers.spatial import check_odd_kernel_size

register = keras.saving.register_keras_serializable(package="keras_attention")

MODES = ("holistic", "part")


@register
class MultiContextAttention(AttentionLayer):
    """Chu et al.'s (CVPR 2017) attention map with CRF mean-field refinement.

    A convolution of the features gives the unary scores `s_0` (one map, or one per part);
    each of `steps` mean-field steps adds the messages of the neighbouring positions, a
    second convolution (one kernel shared by all steps, no bias) of the current marginals:

        s_0 = conv_unary(f)
        s_t = s_0 + conv_pairwise(sigmoid(s_{t-1}))     for t = 1 .. steps
        attention = sigmoid(s_steps)

    The maps are sigmoids (not a softmax over positions): each position is attended
    independently, as in the paper, so several people or limbs can be attended at once.
    The features are then scaled position by position: `f * attention` for
    `mode="holistic"` (one map); for `mode="part"` (one map per part) each part gets its
    own copy of the features, `f * attention[..., k]`, and the copies are concatenated on
    the channel axis, part by part (channels `k * C ... (k + 1) * C - 1` belong to part `k`),
    ready for each part's own classifier (a grouped convolution with `groups=parts`).

    Args:
        mode: `"holistic"` (one map for the whole body) or `"part"` (one map per part).
        parts: the number of part maps (required for `mode="part"`, must be None or 1 for
            `"holistic"`).
        steps: mean-field steps (non-negative; the paper uses 3; 0 gives
            `sigmoid(conv_unary(f))`).
        kernel_size: odd size of the unary convolution (3 here; the paper's is 1 at its
            resolution, 3 gives each map a little context).
        pairwise_kernel_size: odd size of the shared pairwise convolution (the paper's is
            3 as well, so each step passes messages between 3x3 neighbours).
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Under mixed precision the map (convolutions and sigmoids) is computed in float32: it is
    a small part of the work, and PyTorch's CPU bfloat16 backward of a C -> 1 convolution
    fails (as for `SpatialGate`).

    Call arguments:
        inputs: a `(batch, height, width, channels)` feature map.
        training: unused; accepted like every layer here.
        return_attention: if `True`, also return the attention maps.

    Returns:
        The attended features: `(batch, height, width, channels)` for `"holistic"`,
        `(batch, height, width, parts * channels)` for `"part"`, in the input's compute
        dtype; with `return_attention=True`, a tuple `(outputs, attention)` with maps of
        shape `(batch, height, width, 1)` or `(batch, height, width, parts)`.
    """

    def __init__(
        self, mode="holistic", parts=None, steps=3, kernel_size=3, pairwise_kernel_size=3, **kwargs
    ):
        super().__init__(**kwargs)
        U.check_choice("mode", mode, MODES)
        if mode == "part":
            U.check_positive_int("parts", parts)
        elif parts not in (None, 1):
            raise ValueError(
                f'`parts` must be None or 1 for mode="holistic" (one map), got parts={parts!r}.'
            )
        U.check_non_negative_int("steps", steps)
        check_odd_kernel_size("kernel_size", kernel_size)
        check_odd_kernel_size("pairwise_kernel_size", pairwise_kernel_size)
        self.mode = mode
        self.parts = parts
        self.steps = steps
        self.kernel_size = kernel_size
        self.pairwise_kernel_size = pairwise_kernel_size

    @property
    def maps(self):
        return self.parts if self.mode == "part" else 1

    def build(self, input_shape):
        channels = U.feature_map_channels(self, input_shape)
        kw = U.sublayer_kwargs(self)
        if keras.backend.standardize_dtype(self.compute_dtype) in ("float16", "bfloat16"):
            kw = {**kw, "dtype": "float32"}
        self.unary = layers.Conv2D(self.maps, self.kernel_size, padding="same", name="unary", **kw)
        self.unary.build((None, None, None, channels))
        self.pairwise = layers.Conv2D(
            self.maps,
            self.pairwise_kernel_size,
            padding="same",
            use_bias=False,
            name="pairwise",
            **kw,
        )
        self.pairwise.build((None, None, None, self.maps))

    def attention_map(self, inputs):
        """The `(batch, height, width, maps)` attention in float32."""
        unary = ops.cast(self.unary(ops.cast(inputs, self.unary.compute_dtype)), "float32")
        scores = unary
        for _ in range(self.steps):
            messages = self.pairwise(ops.cast(ops.sigmoid(scores), self.pairwise.compute_dtype))
            scores = unary + ops.cast(messages, "float32")
        return ops.sigmoid(scores)

    def call(self, inputs, training=None, return_attention=False):
        attention = ops.cast(self.attention_map(inputs), inputs.dtype)
        if self.mode == "holistic":
            outputs = inputs * attention
        else:
            outputs = ops.concatenate(
                [inputs * attention[..., k : k + 1] for k in range(self.parts)], axis=-1
            )
        return (outputs, attention) if return_attention else outputs

    def compute_output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if self.mode == "holistic" or input_shape[-1] is None:
            return input_shape
        return (*input_shape[:3], self.parts * input_shape[-1])

    def compute_attention_shape(self, input_shape):
        return (*tuple(input_shape)[:3], self.maps)

    def get_config(self):
        config = super().get_config()
        config.update(
            mode=self.mode,
            parts=self.parts,
            steps=self.steps,
            kernel_size=self.kernel_size,
            pairwise_kernel_size=self.pairwise_kernel_size,
        )
        return config
