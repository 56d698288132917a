"""Copy timm module weights (a state dict of numpy arrays) into keras_attention layers.

timm stores PyTorch tensors: convolution kernels as (out, in, kh, kw) and NCHW activations;
Keras wants (kh, kw, in, out) and NHWC. Each converter takes the keras layer, a mapping of
state-dict keys to numpy arrays, and the prefix of the timm module inside that mapping, so
the same function loads a bare module or a module inside a whole network's checkpoint.
Only numpy is needed: checkpoints come from safetensors files.
"""

import keras
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
    (sigmoid fusion) and / or `mlp_add` (additive fusion): fc1, norm (LayerNorm2d), fc2."""
    if layer.attention is not None:
        load_conv2d(layer.attention, state, prefix + "conv_attn.")
    elif prefix + "conv_attn.weight" in state:
        raise ValueError(
            f"checkpoint has {prefix + 'conv_attn.weight'!r} (attention pooling) but the layer "
            f"uses pooling={layer.pooling!r}"
        )
    for fusion in layer.fusions:
        reduce, norm, expand = layer.transform(fusion)
        mlp = prefix + ("mlp_scale." if fusion == "multiply" else "mlp_add.")
        load_conv2d(reduce, state, mlp + "fc1.")
        load_layer_norm(norm, state, mlp + "norm.")
        load_conv2d(expand, state, mlp + "fc2.")


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


def load_bottleneck_attention(layer, state, prefix=""):
    """timm `BottleneckAttn`: the 1x1 `qkv` convolution and `pos_embed.height_rel` /
    `pos_embed.width_rel` (stored like ours, `(2 * size - 1, dim_head)`).

    The tables are sized for the feature map. A checkpoint made for another size (a layer
    built for another input resolution) loads with its tables linearly interpolated to the
    layer's length, end rows kept (`resize_relative_table`; timm has no resize for these
    1-D tables, only bicubic ones for 2-D bias tables)."""
    from keras_attention.layers.relative_attention import resize_relative_table

    load_conv2d(layer.qkv, state, prefix + "qkv.")
    for name in ("height_rel", "width_rel"):
        key = prefix + "pos_embed." + name
        variable, value = getattr(layer, name), take(state, key)
        if (value.ndim == 2 and value.shape[1] == variable.shape[1]
                and value.shape[0] != variable.shape[0]):
            value = resize_relative_table(value, variable.shape[0])
        assign(variable, value, key)


def load_halo_attention(layer, state, prefix=""):
    """timm `HaloAttn`: 1x1 convolutions `q` and `kv` (channels interleaved per head, as
    ours) and `pos_embed.height_rel` / `pos_embed.width_rel`."""
    load_conv2d(layer.q, state, prefix + "q.")
    load_conv2d(layer.kv, state, prefix + "kv.")
    for name in ("height_rel", "width_rel"):
        key = prefix + "pos_embed." + name
        assign(getattr(layer, name), take(state, key), key)


def load_lambda_layer(layer, state, prefix=""):
    """timm `LambdaLayer`: `qkv`, `norm_q`, `norm_v`, and the local `conv_lambda` (a
    `(dim_head, 1, r, r, 1)` Conv3d) or the global `pos_emb` `(2H - 1, 2W - 1, dim_head)`."""
    load_conv2d(layer.qkv, state, prefix + "qkv.")
    load_batch_norm(layer.norm_q, state, prefix + "norm_q.")
    load_batch_norm(layer.norm_v, state, prefix + "norm_v.")
    if layer.r is not None:
        key = prefix + "conv_lambda.weight"
        assign(layer.conv_lambda.kernel, np.transpose(take(state, key), (2, 3, 4, 1, 0)), key)
        key = prefix + "conv_lambda.bias"
        assign(layer.conv_lambda.bias, take(state, key), key)
    else:
        key = prefix + "pos_emb"
        assign(layer.pos_emb, take(state, key), key)


def load_pointwise_dense(dense, state, prefix):
    """A 1x1 convolution (out, in, 1, 1) into a Dense layer (kernel (in, out))."""
    key = prefix + "weight"
    assign(dense.kernel, dense_kernel(take(state, key)[:, :, 0, 0]), key)
    if dense.use_bias:
        assign(dense.bias, take(state, prefix + "bias"), prefix + "bias")


def load_non_local(layer, state, prefix=""):
    """timm `NonLocalAttn` (embedded Gaussian): 1x1 convs `t`, `p`, `g`, `z` into the Dense
    `theta`, `phi`, `g`, `out`, and `norm` (BatchNorm2d) into `out_norm`. timm scales the
    logits by `in_channels ** -0.5` (`use_scale=True`): build the layer with
    `scale="input"` (or `None` for `use_scale=False`)."""
    if layer.pairwise != "embedded_gaussian":
        raise ValueError(
            f"timm NonLocalAttn is an embedded Gaussian block; the layer has "
            f"pairwise={layer.pairwise!r}"
        )
    for sublayer, name in ((layer.theta, "t"), (layer.phi, "p"), (layer.g, "g"),
                           (layer.out, "z")):
        load_pointwise_dense(sublayer, state, prefix + name + ".")
    load_batch_norm(layer.out_norm, state, prefix + "norm.")


CONVERTERS = {
    L.NonLocal: load_non_local,
    L.BottleneckAttention: load_bottleneck_attention,
    L.HaloAttention: load_halo_attention,
    L.LambdaLayer: load_lambda_layer,
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


class _RecordingState(dict):
    """A state dict that remembers which keys were read, to report unused weights."""

    def __init__(self, state):
        super().__init__(state)
        self.used = set()

    def __getitem__(self, key):
        value = super().__getitem__(key)
        self.used.add(key)
        return value


def _load_dense(dense, state, prefix):
    key = prefix + "weight"
    assign(dense.kernel, dense_kernel(take(state, key)), key)
    if dense.use_bias:
        assign(dense.bias, take(state, prefix + "bias"), prefix + "bias")


def _load_group_norm(norm, state, prefix):
    load_layer_norm(norm, state, prefix)


_KERAS_CONVERTERS = {
    keras.layers.Conv2D: load_conv2d,
    keras.layers.BatchNormalization: load_batch_norm,
    keras.layers.Dense: _load_dense,
    keras.layers.LayerNormalization: load_layer_norm,
    keras.layers.GroupNormalization: _load_group_norm,
}


def _converter_for(layer):
    for registry in (CONVERTERS, _KERAS_CONVERTERS):
        if type(layer) in registry:
            return registry[type(layer)]
    return None


def load_timm_state_dict(model, state, *, skip_prefixes=()):
    """Load a whole timm state dict into a zoo model whose layer names are timm's module
    paths with `-` for `.` (see zoo/backbones/common.py).

    Every layer holding weights must find all of its weights under its timm path; every
    floating-point entry of `state` must be used, except those under `skip_prefixes` (the
    classifier of a checkpoint loaded without the top). Errors name the first mismatching
    weight.
    """
    state = _RecordingState(state)
    for layer in model.layers:
        if not layer.weights:
            continue
        converter = _converter_for(layer)
        if converter is None:
            raise ValueError(
                f"layer {layer.name!r} ({type(layer).__name__}) has weights but no timm "
                f"converter"
            )
        try:
            converter(layer, state, layer.name.replace("-", ".") + ".")
        except KeyError as error:
            raise ValueError(
                f"checkpoint does not fit this architecture: layer {layer.name!r} "
                f"({type(layer).__name__}) wants {error.args[0]}"
            ) from None
    unused = [key for key in state if key not in state.used
              and not key.startswith(tuple(skip_prefixes))
              and not key.endswith("num_batches_tracked")]
    if unused:
        raise ValueError(
            f"checkpoint does not fit this architecture: weight {unused[0]!r} (shape "
            f"{tuple(np.shape(state[unused[0]]))}) matches no layer; {len(unused)} unused "
            f"weights in all"
        )
