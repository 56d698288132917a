"""Copy timm module weights (a state dict of numpy arrays) into keras_attention layers.

timm stores PyTorch tensors: convolution kernels as (out, in, kh, kw) and NCHW activations;
Keras wants (kh, kw, in, out) and NHWC. Only numpy is needed: checkpoints come from
safetensors files.

Each supported layer class has one `TimmConverter`, registered with `@timm_converter(cls)`
and found along the layer's class hierarchy (a subclass of `SqueezeExcite` loads like
`SqueezeExcite`). A converter declares its layer's weights: `weight_map(config)` maps each
weight's path inside the layer (`"reduce/kernel"`, the Keras variable path without the
layer's own) to a `TimmWeight` entry: the timm state-dict key below the module's prefix and the
transform from the timm array to the Keras one. Loading requires the map and the layer's
weights to agree exactly, so renaming or adding a sublayer or weight in `keras_attention`
fails that converter (and its test in tests/zoo/test_timm_converters.py) with a message
naming the weight, never silently.
"""

import dataclasses
from collections.abc import Callable

import keras
import numpy as np

from keras_attention import layers as L
from zoo.backbones.common import timm_path


def conv2d_kernel(weight):
    """(out, in, kh, kw) -> (kh, kw, in, out)."""
    return np.transpose(weight, (2, 3, 1, 0))


def conv1d_kernel(weight):
    """(out, in, k) -> (k, in, out)."""
    return np.transpose(weight, (2, 1, 0))


def conv3d_kernel(weight):
    """(out, in, kd, kh, kw) -> (kd, kh, kw, in, out)."""
    return np.transpose(weight, (2, 3, 4, 1, 0))


def dense_kernel(weight):
    """(out, in) -> (in, out)."""
    return np.transpose(weight, (1, 0))


def pointwise_dense_kernel(weight):
    """A 1x1 convolution's (out, in, 1, 1) as a Dense kernel (in, out)."""
    return dense_kernel(weight[:, :, 0, 0])


@dataclasses.dataclass(frozen=True)
class TimmWeight:
    """Where a Keras weight comes from: `key` below the timm module's prefix, and
    `transform(array, variable) -> array` (None: copied as stored)."""

    key: str
    transform: Callable = None

    def value(self, array, variable):
        if self.transform is None:
            return array
        return self.transform(array, variable)


def _shape_only(fn):
    return lambda array, variable: fn(array)


def conv_weights(keras_prefix, timm_prefix, use_bias, kernel=conv2d_kernel):
    """The map of a convolution (or 1x1-convolution-as-Dense) sublayer."""
    mapping = {f"{keras_prefix}kernel": TimmWeight(f"{timm_prefix}weight", _shape_only(kernel))}
    if use_bias:
        mapping[f"{keras_prefix}bias"] = TimmWeight(f"{timm_prefix}bias")
    return mapping


def batch_norm_weights(keras_prefix, timm_prefix):
    return {
        f"{keras_prefix}gamma": TimmWeight(f"{timm_prefix}weight"),
        f"{keras_prefix}beta": TimmWeight(f"{timm_prefix}bias"),
        f"{keras_prefix}moving_mean": TimmWeight(f"{timm_prefix}running_mean"),
        f"{keras_prefix}moving_variance": TimmWeight(f"{timm_prefix}running_var"),
    }


def layer_norm_weights(keras_prefix, timm_prefix):
    return {
        f"{keras_prefix}gamma": TimmWeight(f"{timm_prefix}weight"),
        f"{keras_prefix}beta": TimmWeight(f"{timm_prefix}bias"),
    }


def nested(keras_prefix, timm_prefix, mapping):
    """A sublayer's map moved under `keras_prefix` / `timm_prefix`."""
    return {
        keras_prefix + path: dataclasses.replace(entry, key=timm_prefix + entry.key)
        for path, entry in mapping.items()
    }


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


def layer_weights(layer):
    """`{path inside the layer: variable}` for every weight of `layer` (Keras' variable
    paths without the layer's own path)."""
    own = layer.path + "/"
    return {
        (
            variable.path[len(own) :]
            if variable.path.startswith(own)
            else variable.path.partition("/")[2]
        ): variable
        for variable in layer.weights
    }


class TimmConverter:
    """One layer class's declared mapping to a timm module's state dict.

    Attributes:
        layer_class: the Keras layer class (subclasses are served too).
        weight_map: `(config) -> {weight path: TimmWeight}` from the layer's `get_config()`.
        check: optional `(config, state, prefix)` that raises `ValueError` when the
            checkpoint holds weights for another configuration of the module.
        timm_module: the timm module this mirrors (documentation and error messages).
        source: the library whose state dicts the converter reads (`"timm"`; another
            registry, e.g. zoo/convert/pytorchcv.py, reuses the class for its own).
    """

    def __init__(self, layer_class, weight_map, check=None, timm_module="", source="timm"):
        self.layer_class = layer_class
        self.weight_map = weight_map
        self.check = check
        self.timm_module = timm_module
        self.source = source

    def load(self, layer, state, prefix=""):
        config = layer.get_config()
        if self.check is not None:
            self.check(config, state, prefix)
        mapping = self.weight_map(config)
        weights = layer_weights(layer)
        unmapped = sorted(set(weights) - set(mapping))
        missing = sorted(set(mapping) - set(weights))
        if unmapped or missing:
            raise ValueError(
                f"the {self.source} converter of {self.layer_class.__name__} does not match "
                f"the layer's weights: weights without a {self.source} key {unmapped}, "
                f"declared weights the layer does not have {missing} (was a sublayer or "
                f"weight renamed?)"
            )
        for path, entry in mapping.items():
            key = prefix + entry.key
            variable = weights[path]
            assign(variable, entry.value(take(state, key), variable), key)


CONVERTERS = {}


def timm_converter(layer_class, *, check=None, timm_module=""):
    """Register the decorated `weight_map(config)` as `layer_class`'s converter."""

    def register(weight_map):
        CONVERTERS[layer_class] = TimmConverter(layer_class, weight_map, check, timm_module)
        return weight_map

    return register


def converter_for(layer, converters=None):
    """The converter of the nearest class in `type(layer).__mro__` that has one in
    `converters` (default: the timm registry, `CONVERTERS`), or None."""
    converters = CONVERTERS if converters is None else converters
    for cls in type(layer).__mro__:
        if cls in converters:
            return converters[cls]
    return None


# -- Keras core layers (whole-network checkpoints) -------------------------------------


@timm_converter(keras.layers.Conv2D, timm_module="nn.Conv2d")
def _conv2d(config):
    return conv_weights("", "", config["use_bias"])


@timm_converter(keras.layers.BatchNormalization, timm_module="nn.BatchNorm2d")
def _batch_norm(config):
    return batch_norm_weights("", "")


@timm_converter(keras.layers.Dense, timm_module="nn.Linear")
def _dense(config):
    return conv_weights("", "", config["use_bias"], kernel=dense_kernel)


@timm_converter(keras.layers.LayerNormalization, timm_module="nn.LayerNorm")
def _layer_norm(config):
    return layer_norm_weights("", "")


@timm_converter(keras.layers.GroupNormalization, timm_module="nn.GroupNorm")
def _group_norm(config):
    return layer_norm_weights("", "")


# -- keras_attention layers ------------------------------------------------------------


@timm_converter(L.SqueezeExcite, timm_module="SEModule")
def squeeze_excite_weights(config):
    """fc1 / fc2 are 1x1 convolutions."""
    return {
        **conv_weights("reduce/", "fc1.", config["use_bias"]),
        **conv_weights("expand/", "fc2.", config["use_bias"]),
    }


@timm_converter(L.EfficientChannelAttention, timm_module="EcaModule / CecaModule")
def efficient_channel_attention_weights(config):
    """`conv.weight` (1, 1, k) is the Conv1D kernel."""
    return conv_weights("conv/", "conv.", False, kernel=conv1d_kernel)


def _check_global_context(config, state, prefix):
    if config["pooling"] != "attention" and prefix + "conv_attn.weight" in state:
        raise ValueError(
            f"checkpoint has {prefix + 'conv_attn.weight'!r} (attention pooling) but the layer "
            f"uses pooling={config['pooling']!r}"
        )


@timm_converter(L.GlobalContext, check=_check_global_context, timm_module="GlobalContext")
def global_context_weights(config):
    """`conv_attn` (attention pooling), then the ConvMlp `mlp_scale` (sigmoid fusion) and / or
    `mlp_add` (additive fusion): fc1, norm (LayerNorm2d), fc2. With both fusions the layer's
    sublayers are prefixed `multiply_` / `add_`."""
    mapping = {}
    if config["pooling"] == "attention":
        mapping.update(conv_weights("attention/", "conv_attn.", True))
    fusions = [config["fusion"]] if isinstance(config["fusion"], str) else config["fusion"]
    for fusion in fusions:
        own = "" if len(fusions) == 1 else fusion + "_"
        mlp = "mlp_scale." if fusion == "multiply" else "mlp_add."
        mapping.update(conv_weights(own + "reduce/", mlp + "fc1.", True))
        mapping.update(layer_norm_weights(own + "norm/", mlp + "norm."))
        mapping.update(conv_weights(own + "expand/", mlp + "fc2.", True))
    return mapping


def _check_channel_gate(config, state, prefix):
    if not config["use_bias"] and prefix + "fc1.bias" in state:
        raise ValueError(
            f"checkpoint has {prefix + 'fc1.bias'!r} (mlp_bias=True) but the layer has "
            f"use_bias=False"
        )


@timm_converter(L.ChannelGate, check=_check_channel_gate, timm_module="ChannelAttn")
def channel_gate_weights(config):
    """fc1 / fc2 are 1x1 convolutions, with biases when `mlp_bias`."""
    return {
        **conv_weights("reduce/", "fc1.", config["use_bias"]),
        **conv_weights("expand/", "fc2.", config["use_bias"]),
    }


@timm_converter(L.SpatialGate, timm_module="SpatialAttn")
def spatial_gate_weights(config):
    """The ConvNormAct `conv` holds `conv.conv` (no bias) and `conv.bn`.

    The kernel is copied as stored. timm's convolution reads `[mean, max]`, so a layer with
    `pooling_order="mean_max"` reproduces the timm module; a `"max_mean"` layer needs the
    kernel's input-channel axis swapped (`weight[:, ::-1]`) first.
    """
    return {**conv_weights("conv/", "conv.conv.", False), **batch_norm_weights("norm/", "conv.bn.")}


def _check_cbam(config, state, prefix):
    _check_channel_gate(config, state, prefix + "channel.")


@timm_converter(L.CBAM, check=_check_cbam, timm_module="CbamModule")
def cbam_weights(config):
    """`channel` (`ChannelAttn`) then `spatial` (`SpatialAttn`)."""
    return {
        **nested("channel_gate/", "channel.", channel_gate_weights(config)),
        **nested("spatial_gate/", "spatial.", spatial_gate_weights(config)),
    }


def _relative_table(array, variable):
    """A table made for another feature-map size loads linearly interpolated to the
    layer's length, end rows kept (`resize_relative_table`; timm has no resize for these
    1-D tables, only bicubic ones for 2-D bias tables)."""
    from keras_attention.layers.relative_attention import resize_relative_table

    if (
        array.ndim == 2
        and array.shape[1] == variable.shape[1]
        and array.shape[0] != variable.shape[0]
    ):
        return resize_relative_table(array, variable.shape[0])
    return array


@timm_converter(L.BottleneckAttention, timm_module="BottleneckAttn")
def bottleneck_attention_weights(config):
    """The 1x1 `qkv` convolution and `pos_embed.height_rel` / `pos_embed.width_rel`
    (stored like ours, `(2 * size - 1, dim_head)`; resized to the layer's feature map)."""
    return {
        **conv_weights("qkv/", "qkv.", config["qkv_bias"]),
        "height_rel": TimmWeight("pos_embed.height_rel", _relative_table),
        "width_rel": TimmWeight("pos_embed.width_rel", _relative_table),
    }


@timm_converter(L.HaloAttention, timm_module="HaloAttn")
def halo_attention_weights(config):
    """1x1 convolutions `q` and `kv` (channels interleaved per head, as ours) and
    `pos_embed.height_rel` / `pos_embed.width_rel`."""
    return {
        **conv_weights("q/", "q.", config["qkv_bias"]),
        **conv_weights("kv/", "kv.", config["qkv_bias"]),
        "height_rel": TimmWeight("pos_embed.height_rel"),
        "width_rel": TimmWeight("pos_embed.width_rel"),
    }


@timm_converter(L.LambdaLayer, timm_module="LambdaLayer")
def lambda_layer_weights(config):
    """`qkv`, `norm_q`, `norm_v`, and the local `conv_lambda` (a `(dim_head, 1, r, r, 1)`
    Conv3d) or the global `pos_emb` `(2H - 1, 2W - 1, dim_head)`."""
    mapping = {
        **conv_weights("qkv/", "qkv.", config["qkv_bias"]),
        **batch_norm_weights("norm_q/", "norm_q."),
        **batch_norm_weights("norm_v/", "norm_v."),
    }
    if config["r"] is not None:
        mapping.update(conv_weights("conv_lambda/", "conv_lambda.", True, kernel=conv3d_kernel))
    else:
        mapping["pos_emb"] = TimmWeight("pos_emb")
    return mapping


def _check_non_local(config, state, prefix):
    if config["pairwise"] != "embedded_gaussian":
        raise ValueError(
            f"timm NonLocalAttn is an embedded Gaussian block; the layer has "
            f"pairwise={config['pairwise']!r}"
        )


@timm_converter(L.NonLocal, check=_check_non_local, timm_module="NonLocalAttn")
def non_local_weights(config):
    """Embedded Gaussian: 1x1 convs `t`, `p`, `g`, `z` into the Dense `theta`, `phi`, `g`,
    `out`, and `norm` (BatchNorm2d) into `out_norm`. timm scales the logits by
    `in_channels ** -0.5` (`use_scale=True`): build the layer with `scale="input"` (or
    `None` for `use_scale=False`)."""
    mapping = {}
    for ours, theirs in (("theta", "t"), ("phi", "p"), ("g", "g"), ("out", "z")):
        mapping.update(conv_weights(f"{ours}/", f"{theirs}.", True, kernel=pointwise_dense_kernel))
    mapping.update(batch_norm_weights("out_norm/", "norm."))
    return mapping


ATTENTION_LAYERS = (
    L.NonLocal,
    L.BottleneckAttention,
    L.HaloAttention,
    L.LambdaLayer,
    L.SqueezeExcite,
    L.EfficientChannelAttention,
    L.GlobalContext,
    L.ChannelGate,
    L.SpatialGate,
    L.CBAM,
)


def load_timm_module(layer, state, prefix=""):
    """Load the timm module stored under `prefix` in `state` into the built keras `layer`."""
    converter = converter_for(layer)
    if converter is None or converter.layer_class not in ATTENTION_LAYERS:
        raise ValueError(
            f"no timm converter for {type(layer).__name__}; available: "
            f"{sorted(cls.__name__ for cls in ATTENTION_LAYERS)}"
        )
    converter.load(layer, state, prefix)


class _RecordingState(dict):
    """A state dict that remembers which keys were read, to report unused weights."""

    def __init__(self, state):
        super().__init__(state)
        self.used = set()

    def __getitem__(self, key):
        value = super().__getitem__(key)
        self.used.add(key)
        return value


def load_timm_state_dict(
    model, state, *, skip_prefixes=(), converters=None, module_path=timm_path, source="timm"
):
    """Load a whole timm state dict into a zoo model whose layer names are timm's module
    paths with `-` for `.` (see zoo/backbones/common.py).

    Another library's state dicts load the same way with its own `converters` registry and
    `module_path(layer name) -> module path` (`source` names it in errors).

    Every layer holding weights must find all of its weights under its timm path; every
    floating-point entry of `state` must be used, except those under `skip_prefixes` (the
    classifier of a checkpoint loaded without the top). Errors name the first mismatching
    weight.
    """
    state = _RecordingState(state)
    for layer in model.layers:
        if not layer.weights:
            continue
        converter = converter_for(layer, converters)
        if converter is None:
            raise ValueError(
                f"layer {layer.name!r} ({type(layer).__name__}) has weights but no {source} "
                f"converter"
            )
        try:
            converter.load(layer, state, module_path(layer.name) + ".")
        except KeyError as error:
            raise ValueError(
                f"checkpoint does not fit this architecture: layer {layer.name!r} "
                f"({type(layer).__name__}) wants {error.args[0]}"
            ) from None
    unused = [
        key
        for key in state
        if key not in state.used
        and not key.startswith(tuple(skip_prefixes))
        and not key.endswith("num_batches_tracked")
    ]
    if unused:
        raise ValueError(
            f"checkpoint does not fit this architecture: weight {unused[0]!r} (shape "
            f"{tuple(np.shape(state[unused[0]]))}) matches no layer; {len(unused)} unused "
            f"weights in all"
        )
