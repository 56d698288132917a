"""Copy timm module weights (a state dict of numpy arrays) into keras_attention layers.

timm stores PyTorch tensors: convolution kernels as (out, in, kh, kw) and NCHW activations;
Keras wants (kh, kw, in, out) and NHWC. Each converter takes the keras layer, a mapping of
state-dict keys to numpy arrays, and the prefix of the timm module inside that mapping, so
the same function loads a bare module or a module inside a whole network's checkpoint.
Only numpy is needed: checkpoints come from safetensors files.
"""

import numpy as np

from keras_attention import layers as L


def conv2d_kernel(weight):
    """(out, in, kh, kw) -> (kh, kw, in, out)."""
    return np.transpose(weight, (2, 3, 1, 0))


def conv1d_kernel(weight):
    """(out, in, k) -> (k, in, out)."""
    return np.transpose(weight, (2, 1, 0))


def dense_kernel(weight):
    """(out, in) -> (in, out)."""
    return np.transpose(weight, (1, 0))


def take(state, key):
    try:
        return np.asarray(state[key])
    except KeyError:
        raise KeyError(f"checkpoint has no weight {key!r}") from None


def assign(variable, value, key):
    if tuple(variable.shape) != tuple(value.shape):
        raise ValueError(
            f"weight {key!r} has shape {tuple(value.shape)} but the layer's {variable.path} "
            f"expects {tuple(variable.shape)}"
        )
    variable.assign(value.astype(variable.dtype))


def load_conv2d(conv, state, prefix):
    assign(conv.kernel, conv2d_kernel(take(state, prefix + "weight")), prefix + "weight")
    if conv.use_bias:
        assign(conv.bias, take(state, prefix + "bias"), prefix + "bias")


def load_batch_norm(norm, state, prefix):
    for keras_name, timm_name in (("gamma", "weight"), ("beta", "bias"),
                                  ("moving_mean", "running_mean"),
                                  ("moving_variance", "running_var")):
        assign(getattr(norm, keras_name), take(state, prefix + timm_name), prefix + timm_name)


def load_layer_norm(norm, state, prefix):
    assign(norm.gamma, take(state, prefix + "weight"), prefix + "weight")
    assign(norm.beta, take(state, prefix + "bias"), prefix + "bias")


def load_squeeze_excite(layer, state, prefix=""):
    """timm `SEModule`: fc1 / fc2 are 1x1 convolutions."""
    load_conv2d(layer.reduce, state, prefix + "fc1.")
    load_conv2d(layer.expand, state, prefix + "fc2.")


def load_efficient_channel_attention(layer, state, prefix=""):
    """timm `EcaModule` / `CecaModule`: `conv.weight` (1, 1, k) is the Conv1D kernel."""
    assign(layer.conv.kernel, conv1d_kernel(take(state, prefix + "conv.weight")),
           prefix + "conv.weight")


def load_global_context(layer, state, prefix=""):
    """timm `GlobalContext`: `conv_attn` (when `use_attn`), then the ConvMlp `mlp_scale`
    (sigmoid fusion) or `mlp_add` (additive fusion): fc1, norm (LayerNorm2d), fc2."""
    if layer.attention is not None:
        load_conv2d(layer.attention, state, prefix + "conv_attn.")
    elif prefix + "conv_attn.weight" in state:
        raise ValueError(
            f"checkpoint has {prefix + 'conv_attn.weight'!r} (attention pooling) but the layer "
            f"uses pooling={layer.pooling!r}"
        )
    mlp = prefix + ("mlp_scale." if layer.fusion == "multiply" else "mlp_add.")
    load_conv2d(layer.reduce, state, mlp + "fc1.")
    load_layer_norm(layer.norm, state, mlp + "norm.")
    load_conv2d(layer.expand, state, mlp + "fc2.")


def load_channel_gate(layer, state, prefix=""):
    """timm `ChannelAttn`: fc1 / fc2 are 1x1 convolutions, with biases when `mlp_bias`."""
    if not layer.use_bias and prefix + "fc1.bias" in state:
        raise ValueError(
            f"checkpoint has {prefix + 'fc1.bias'!r} (mlp_bias=True) but the layer has "
            f"use_bias=False"
        )
    load_conv2d(layer.reduce, state, prefix + "fc1.")
    load_conv2d(layer.expand, state, prefix + "fc2.")


def load_spatial_gate(layer, state, prefix=""):
    """timm `SpatialAttn`: the ConvNormAct `conv` holds `conv.conv` (no bias) and `conv.bn`.

    The kernel is copied as stored. timm's convolution reads `[mean, max]`, so a layer with
    `pooling_order="mean_max"` reproduces the timm module; a `"max_mean"` layer needs the
    kernel's input-channel axis swapped (`weight[:, ::-1]`) first.
    """
    load_conv2d(layer.conv, state, prefix + "conv.conv.")
    load_batch_norm(layer.norm, state, prefix + "conv.bn.")


def load_cbam(layer, state, prefix=""):
    """timm `CbamModule`: `channel` (`ChannelAttn`) then `spatial` (`SpatialAttn`)."""
    load_channel_gate(layer.channel_gate, state, prefix + "channel.")
    load_spatial_gate(layer.spatial_gate, state, prefix + "spatial.")


CONVERTERS = {
    L.SqueezeExcite: load_squeeze_excite,
    L.EfficientChannelAttention: load_efficient_channel_attention,
    L.GlobalContext: load_global_context,
    L.ChannelGate: load_channel_gate,
    L.SpatialGate: load_spatial_gate,
    L.CBAM: load_cbam,
}


def load_timm_module(layer, state, prefix=""):
    """Load the timm module stored under `prefix` in `state` into the built keras `layer`."""
    try:
        converter = CONVERTERS[type(layer)]
    except KeyError:
        raise ValueError(
            f"no timm converter for {type(layer).__name__}; available: "
            f"{sorted(cls.__name__ for cls in CONVERTERS)}"
        ) from None
    converter(layer, state, prefix)
