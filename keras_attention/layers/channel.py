"""Channel-domain soft attention: SENet, ECA-Net, GCNet and DANet's channel attention."""

import keras
from keras import layers, ops

from keras_attention.layers import _utils as U
from keras_attention.layers.base import AttentionLayer

register = keras.saving.register_keras_serializable(package="keras_attention")


@register
class SqueezeExcite(AttentionLayer):
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

    def __init__(
        self,
        reduction_ratio=1 / 16,
        reduced_channels=None,
        divisor=8,
        use_bias=True,
        activation="relu",
        gate_activation="sigmoid",
        **kwargs,
    ):
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
        self.reduce, self.expand = U.channel_bottleneck(
            self, channels, self.reduced_channels, self.reduction_ratio, self.divisor, self.use_bias
        )

    def call(self, inputs, training=None, return_attention=False):
        pooled = U.spatial_mean_float32(inputs)
        gate = self.gate_activation(self.expand(self.activation(self.reduce(pooled))))
        outputs = inputs * gate
        return (outputs, gate) if return_attention else outputs

    def compute_attention_shape(self, input_shape):
        return (input_shape[0], 1, 1, input_shape[-1])

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


@register
class EfficientChannelAttention(AttentionLayer):
    """Efficient Channel Attention (ECA-Net, Wang et al., CVPR 2020).

    Global average pooling, a 1D convolution across the channel axis (one kernel of
    `kernel_size` taps, no bias, so each channel's weight depends on its `k` neighbours)
    and `gate_activation`; the input is scaled channel by channel with the result.
    Matches timm's `EcaModule` (zero padding) and `CecaModule` (`circular=True`).

    Args:
        kernel_size: odd number of taps of the channel convolution. `None` (default) picks
            it from the channel count like the paper: the odd number nearest
            `|log2(C) + beta| / gamma`, at least 3.
        gamma: divisor of the adaptive kernel size rule (2).
        beta: offset of the adaptive kernel size rule (1).
        circular: pad the channel axis circularly (timm `CecaModule`) instead of with
            zeros (the paper and timm `EcaModule`).
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

    def __init__(
        self, kernel_size=None, gamma=2, beta=1, circular=False, gate_activation="sigmoid", **kwargs
    ):
        super().__init__(**kwargs)
        U.check_positive_int("kernel_size", kernel_size, allow_none=True)
        if kernel_size is not None and kernel_size % 2 == 0:
            raise ValueError(
                f"`kernel_size` must be an odd positive integer, got kernel_size={kernel_size!r}."
            )
        U.check_positive_number("gamma", gamma)
        U.check_number("beta", beta)
        self.kernel_size = kernel_size
        self.gamma = gamma
        self.beta = beta
        self.circular = bool(circular)
        self.gate_activation = U.get_activation(gate_activation)

    def build(self, input_shape):
        channels = U.feature_map_channels(self, input_shape)
        kernel_size = self.kernel_size or U.eca_kernel_size(channels, self.gamma, self.beta)
        self.padding = (kernel_size - 1) // 2
        if self.circular and self.padding > channels:
            raise ValueError(
                f"With circular=True, `kernel_size` can be at most 2 * channels + 1 = "
                f"{2 * channels + 1}; got kernel_size={kernel_size} for {channels} channels."
            )
        self.channels = channels
        self.conv = layers.Conv1D(
            1, kernel_size, use_bias=False, name="conv", **U.sublayer_kwargs(self)
        )
        self.conv.build((None, channels + 2 * self.padding, 1))

    def _pad(self, y):
        p = self.padding
        if p == 0:
            return y
        if self.circular:
            return ops.concatenate([y[:, -p:], y, y[:, :p]], axis=1)
        return ops.pad(y, ((0, 0), (p, p), (0, 0)))

    def call(self, inputs, training=None, return_attention=False):
        pooled = U.spatial_mean_float32(inputs, keepdims=False)  # (B, C)
        y = self.conv(self._pad(ops.expand_dims(pooled, -1)))  # (B, C, 1)
        gate = self.gate_activation(ops.reshape(y, (-1, 1, 1, self.channels)))
        outputs = inputs * gate
        return (outputs, gate) if return_attention else outputs

    def compute_attention_shape(self, input_shape):
        return (input_shape[0], 1, 1, input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            kernel_size=self.kernel_size,
            gamma=self.gamma,
            beta=self.beta,
            circular=self.circular,
            gate_activation=U.serialize_activation(self.gate_activation),
        )
        return config


def _spatial_softmax_float32(logits):
    """Softmax over the height and width axes of `(B, H, W, 1)` logits, in float32.

    Written out (max, exp, sum over axes 1 and 2) rather than reshaped to `(B, H * W)`, so it
    also traces with unknown height and width.
    """
    x = ops.cast(logits, "float32")
    x = x - ops.stop_gradient(U.spatial_reduce(ops.max, x))
    e = ops.exp(x)
    return e / U.spatial_reduce(ops.sum, e)


GC_FUSION_ORDER = ("multiply", "add")  # GCNet's ContextBlock.forward: gate, then add


def _fusion_tuple(fusion):
    return (fusion,) if isinstance(fusion, str) else tuple(fusion)


def _check_fusion(fusion):
    """`"add"`, `"multiply"` or a non-empty list / tuple of distinct ones; returned as given
    (a string) or as a tuple."""
    if isinstance(fusion, str):
        U.check_choice("fusion", fusion, set(GC_FUSION_ORDER))
        return fusion
    if (
        not isinstance(fusion, (list, tuple))
        or not fusion
        or any(f not in GC_FUSION_ORDER for f in fusion)
        or len(set(fusion)) != len(fusion)
    ):
        raise ValueError(
            "`fusion` must be 'add', 'multiply' or a non-empty tuple of distinct ones, got "
            f"fusion={fusion!r}."
        )
    return tuple(fusion)


@register
class GlobalContext(AttentionLayer):
    """Global Context block (GCNet, Cao et al., 2019).

    Context modelling: a 1x1 convolution (with bias) to one channel, a softmax over all
    positions, and the softmax-weighted sum of the input over height and width (or a plain
    mean with `pooling="avg"`). Transform: a bottleneck 1x1 convolution (bias), LayerNorm
    over channels, ReLU and a 1x1 convolution back to `C` channels (bias). Fusion: added to
    every position (`"add"`, the official code's default `channel_add` and timm's `gca`),
    applied as a sigmoid gate (`"multiply"`, official `channel_mul`, timm's `gc`), or both
    (`("multiply", "add")`), each fusion with its own transform, applied in the official
    order whatever the order given: `out = x * sigmoid(T_mul(ctx)) + T_add(ctx)` (GCNet's
    `fusion_types=("channel_add", "channel_mul")` and timm's `fuse_add=True,
    fuse_scale=True`). Matches timm's `GlobalContext` and GCNet's `ContextBlock`.

    Args:
        reduction_ratio: bottleneck width as a fraction of the input channels (1/16).
        reduced_channels: explicit bottleneck width; overrides `reduction_ratio`.
        divisor: rounding of the bottleneck width. `None` (default) floors like the
            official code (`int(C * ratio)`); an integer rounds like timm
            (`make_divisible(C * ratio, divisor)`; timm uses `1`, i.e. nearest integer).
        fusion: `"add"` (`x + transform(context)`), `"multiply"`
            (`x * sigmoid(transform(context))`) or a tuple of both (the gate, then the
            addition). With one fusion the transform's sublayers are `reduce`, `norm`,
            `expand`; with both they are prefixed `multiply_` and `add_`.
        pooling: `"attention"` (softmax-weighted sum, the paper) or `"avg"` (global average
            pooling, timm's `use_attn=False`).
        norm_epsilon: epsilon of the LayerNorm: `1e-5` (official code) or `1e-6` (timm).
        zero_init_last: initialise the last 1x1 convolution's kernel to zeros, so a fresh
            block is the identity (`"add"`) or a constant 0.5 gate (`"multiply"`); the
            official code does, timm's `gc` does not.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a `(batch, height, width, channels)` feature map; height and width may be
            unknown until called.
        training: unused (no batch statistics inside); accepted like every layer here.
        return_attention: if `True`, also return the context pooling weights.

    Returns:
        The fused feature map (same shape and compute dtype as the input); with
        `return_attention=True`, a tuple `(outputs, weights)` where `weights` has shape
        `(batch, height, width, 1)` and sums to 1 over height and width: the softmax of the
        context convolution with `pooling="attention"`, the uniform `1 / (H * W)` with
        `pooling="avg"`.
    """

    def __init__(
        self,
        reduction_ratio=1 / 16,
        reduced_channels=None,
        divisor=None,
        fusion="add",
        pooling="attention",
        norm_epsilon=1e-5,
        zero_init_last=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        U.check_ratio("reduction_ratio", reduction_ratio)
        U.check_positive_int("reduced_channels", reduced_channels, allow_none=True)
        U.check_divisor("divisor", divisor)
        fusion = _check_fusion(fusion)
        U.check_choice("pooling", pooling, {"attention", "avg"})
        U.check_positive_number("norm_epsilon", norm_epsilon)
        self.reduction_ratio = reduction_ratio
        self.reduced_channels = reduced_channels
        self.divisor = divisor
        self.fusion = fusion
        self.pooling = pooling
        self.norm_epsilon = norm_epsilon
        self.zero_init_last = bool(zero_init_last)

    def build(self, input_shape):
        channels = U.feature_map_channels(self, input_shape)
        hidden = self.reduced_channels or U.reduced_channels(
            channels, self.reduction_ratio, self.divisor
        )
        kw = U.sublayer_kwargs(self)
        if self.pooling == "attention":
            self.attention = layers.Conv2D(1, 1, use_bias=True, name="attention", **kw)
            self.attention.build((None, None, None, channels))
        else:
            self.attention = None
        self.fusions = tuple(f for f in GC_FUSION_ORDER if f in _fusion_tuple(self.fusion))
        for fusion in self.fusions:
            prefix = self._prefix(fusion)
            reduce = layers.Conv2D(hidden, 1, use_bias=True, name=prefix + "reduce", **kw)
            reduce.build((None, 1, 1, channels))
            norm = layers.LayerNormalization(
                axis=-1, epsilon=self.norm_epsilon, name=prefix + "norm", **kw
            )
            norm.build((None, 1, 1, hidden))
            expand = layers.Conv2D(
                channels,
                1,
                use_bias=True,
                name=prefix + "expand",
                kernel_initializer="zeros" if self.zero_init_last else "glorot_uniform",
                **kw,
            )
            expand.build((None, 1, 1, hidden))
            # Attribute names are the weight paths of saved models: unprefixed for one fusion.
            for part, sublayer in (("reduce", reduce), ("norm", norm), ("expand", expand)):
                setattr(self, prefix + part, sublayer)

    def _prefix(self, fusion):
        return "" if len(self.fusions) == 1 else fusion + "_"

    def transform(self, fusion):
        """The `(reduce, norm, expand)` sublayers of one fusion's transform."""
        prefix = self._prefix(fusion)
        return tuple(getattr(self, prefix + part) for part in ("reduce", "norm", "expand"))

    def call(self, inputs, training=None, return_attention=False):
        if self.attention is not None:
            weights = _spatial_softmax_float32(self.attention(inputs))  # (B, H, W, 1)
            context = U.spatial_reduce(ops.sum, ops.cast(inputs, "float32") * weights)
            context = ops.cast(context, inputs.dtype)
            weights = ops.cast(weights, inputs.dtype)
        else:
            context = U.spatial_mean_float32(inputs)
            weights = None
        outputs = inputs
        for fusion in self.fusions:
            reduce, norm, expand = self.transform(fusion)
            transform = expand(ops.relu(norm(reduce(context))))
            if fusion == "multiply":
                outputs = outputs * ops.sigmoid(transform)
            else:
                outputs = outputs + transform
        if not return_attention:
            return outputs
        if weights is None:
            ones = ops.ones_like(inputs[..., :1])
            weights = ones / U.spatial_reduce(ops.sum, ones)
        return outputs, weights

    def compute_attention_shape(self, input_shape):
        return (*input_shape[:3], 1)

    def get_config(self):
        config = super().get_config()
        config.update(
            reduction_ratio=self.reduction_ratio,
            reduced_channels=self.reduced_channels,
            divisor=self.divisor,
            fusion=self.fusion if isinstance(self.fusion, str) else list(self.fusion),
            pooling=self.pooling,
            norm_epsilon=self.norm_epsilon,
            zero_init_last=self.zero_init_last,
        )
        return config


@register
class DualChannelAttention(AttentionLayer):
    """Channel attention module of DANet (CAM, Fu et al., CVPR 2019).

    The input is viewed as `N = H * W` positions of `C` channels; the channel affinity
    `energy = X^T X` (`(C, C)`, no projections) is turned into attention by a softmax over
    its last axis, each output channel is the attention-weighted mix of the input channels,
    and a learned scalar `gamma` (initialised to 0, so a fresh block is the identity) scales
    it onto the input: `out = gamma * mix + x`. Energy and softmax are computed in float32.

    Args:
        energy: `"official"` (default): softmax(rowmax(energy) - energy), as in the authors'
            code, so the most *dissimilar* channels get the largest weights and the
            exponentials cannot overflow; `"paper"`: softmax(energy), as in the paper.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a `(batch, height, width, channels)` feature map; height and width may be
            unknown until called.
        training: unused; accepted like every layer here.
        return_attention: if `True`, also return the channel attention.

    Returns:
        The feature map `gamma * mix + inputs` (same shape and compute dtype as the input);
        with `return_attention=True`, a tuple `(outputs, attention)` with the attention of
        shape `(batch, channels, channels)` (rows sum to 1; row `c` mixes the channels into
        output channel `c`).
    """

    def __init__(self, energy="official", **kwargs):
        super().__init__(**kwargs)
        U.check_choice("energy", energy, {"official", "paper"})
        self.energy = energy

    def build(self, input_shape):
        U.feature_map_channels(self, input_shape)
        self.gamma = self.add_weight(name="gamma", shape=(), initializer="zeros", trainable=True)

    def call(self, inputs, training=None, return_attention=False):
        x32 = ops.cast(inputs, "float32")
        energy = ops.einsum("bhwc,bhwd->bcd", x32, x32)  # (B, C, C)
        if self.energy == "official":
            energy = ops.max(energy, axis=-1, keepdims=True) - energy
        attention = ops.cast(ops.softmax(energy, axis=-1), inputs.dtype)
        mixed = ops.einsum("bcd,bhwd->bhwc", attention, inputs)
        outputs = ops.cast(self.gamma, inputs.dtype) * mixed + inputs
        return (outputs, attention) if return_attention else outputs

    def compute_attention_shape(self, input_shape):
        return (input_shape[0], input_shape[-1], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(energy=self.energy)
        return config
