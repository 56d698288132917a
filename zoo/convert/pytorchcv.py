"""Copy pytorchcv (imgclsmob) state dicts into zoo models.

pytorchcv 0.0.74 publishes ImageNet checkpoints for networks timm lacks (CBAM-ResNet,
BAM-ResNet) and Cityscapes checkpoints of DANet. Its module names differ from timm's in
two ways, handled separately:

- where a module sits: `MODULE_PATHS[<zoo model>]` maps a zoo layer name (timm's
  module path with `-` for `.`, zoo/backbones/resnet.py and segmentation.py) to the module
  path in the model's pytorchcv checkpoint (`layer1-0-conv2` ->
  `features.stage1.unit1.body.conv2.conv`);
- what is inside a module: one `TimmConverter` per layer class in this file's own registry
  (`CONVERTERS`, filled with `@pytorchcv_converter(cls)`), declaring each weight's key and
  transform exactly as zoo/convert/timm.py does for timm's modules, and checked the same
  way (a sublayer renamed in keras_attention fails the converter by name).

The module facts below are read from pytorchcv 0.0.74's `models/cbamresnet.py`,
`models/bamresnet.py`, `models/resnet.py`, `models/resnetd.py`, `models/senet.py`
(`SEInitBlock`), `models/danet.py` and `models/common/conv.py`.
"""

import re

import keras

from keras_attention import layers as L
from zoo.convert import timm
from zoo.convert.timm import (
    TimmConverter,
    TimmWeight,
    batch_norm_weights,
    conv_weights,
    dense_kernel,
    load_timm_state_dict,
    nested,
)

SOURCE = "pytorchcv"
CONVERTERS = {}


def pytorchcv_converter(layer_class, *, check=None, module=""):
    """Register the decorated `weight_map(config)` as `layer_class`'s pytorchcv converter."""

    def register(weight_map):
        CONVERTERS[layer_class] = TimmConverter(
            layer_class, weight_map, check, module, source=SOURCE
        )
        return weight_map

    return register


def linear_as_pointwise_kernel(weight):
    """An `nn.Linear` weight (out, in) as a 1x1 Conv2D kernel (1, 1, in, out)."""
    return dense_kernel(weight)[None, None]


# -- torch.nn leaves: named as in torch, so timm's weight maps apply unchanged -------------

for _leaf in (keras.layers.Conv2D, keras.layers.BatchNormalization, keras.layers.Dense):
    pytorchcv_converter(_leaf, module=timm.CONVERTERS[_leaf].timm_module)(
        timm.CONVERTERS[_leaf].weight_map
    )


# -- CBAM (cbamresnet.py) ----------------------------------------------------------------


def _check_cbam_channel_gate(config, state, prefix):
    if not config["use_bias"]:
        raise ValueError(
            "pytorchcv's CBAM MLP (nn.Linear) has biases; the layer has use_bias=False"
        )


@pytorchcv_converter(L.ChannelGate, check=_check_cbam_channel_gate, module="ChannelGate")
def channel_gate_weights(config):
    """`mlp.fc1` / `mlp.fc2` are `nn.Linear` (with bias) applied to the pooled vectors."""
    return {
        "reduce/kernel": TimmWeight(
            "mlp.fc1.weight", lambda array, variable: linear_as_pointwise_kernel(array)
        ),
        "reduce/bias": TimmWeight("mlp.fc1.bias"),
        "expand/kernel": TimmWeight(
            "mlp.fc2.weight", lambda array, variable: linear_as_pointwise_kernel(array)
        ),
        "expand/bias": TimmWeight("mlp.fc2.bias"),
    }


def _check_spatial_gate(config, state, prefix):
    if config["pooling_order"] != "max_mean":
        raise ValueError(
            f"pytorchcv's CBAM spatial gate stacks [max, mean]; the layer has "
            f"pooling_order={config['pooling_order']!r} (use 'max_mean')"
        )


@pytorchcv_converter(L.SpatialGate, check=_check_spatial_gate, module="SpatialGate")
def spatial_gate_weights(config):
    """`conv` is a `conv7x7_block` without activation: `conv.conv` (no bias), `conv.bn`."""
    return {**conv_weights("conv/", "conv.conv.", False), **batch_norm_weights("norm/", "conv.bn.")}


def _check_cbam(config, state, prefix):
    _check_cbam_channel_gate(config, state, prefix + "ch_gate.")
    _check_spatial_gate(config, state, prefix + "sp_gate.")


@pytorchcv_converter(L.CBAM, check=_check_cbam, module="CbamBlock")
def cbam_weights(config):
    """`ch_gate` (`ChannelGate`) then `sp_gate` (`SpatialGate`)."""
    return {
        **nested("channel_gate/", "ch_gate.", channel_gate_weights(config)),
        **nested("spatial_gate/", "sp_gate.", spatial_gate_weights(config)),
    }


# -- BAM (bamresnet.py) ------------------------------------------------------------------

BAM_DILATION = 4  # SpatialGate's default, the one BamBlock uses


def _check_bam(config, state, prefix):
    if config["combine"] != "product":
        raise ValueError(
            f"pytorchcv's BamBlock multiplies the branches; the layer has "
            f"combine={config['combine']!r}"
        )
    if config["dilation_rate"] != BAM_DILATION:
        raise ValueError(
            f"pytorchcv's BamBlock dilates by {BAM_DILATION}; the layer has "
            f"dilation_rate={config['dilation_rate']!r}"
        )
    stored = {
        match.group(1)
        for key in state
        if (match := re.match(re.escape(prefix) + r"sp_att\.dil_convs\.conv(\d+)\.", key))
    }
    if len(stored) != config["num_dilated_convs"]:
        raise ValueError(
            f"checkpoint has {len(stored)} dilated convolutions under "
            f"{prefix}sp_att.dil_convs; the layer has "
            f"num_dilated_convs={config['num_dilated_convs']}"
        )
    if any(key.startswith(prefix + "ch_att.main_fcs.") for key in state):
        raise ValueError(
            f"checkpoint has more than one DenseBlock under {prefix}ch_att; the "
            f"layer's channel branch has one"
        )


@pytorchcv_converter(L.BAM, check=_check_bam, module="BamBlock")
def bam_weights(config):
    """`ch_att`: `init_fc` (`fc` Linear, `bn` BatchNorm1d), `final_fc`; `sp_att`:
    `init_conv` and `dil_convs.conv{i}` (conv with bias + BN blocks), `final_conv`."""
    mapping = {
        **conv_weights("channel_reduce/", "ch_att.init_fc.fc.", True, kernel=dense_kernel),
        **batch_norm_weights("channel_norm/", "ch_att.init_fc.bn."),
        **conv_weights("channel_expand/", "ch_att.final_fc.", True, kernel=dense_kernel),
        **conv_weights("spatial_reduce/", "sp_att.init_conv.conv.", True),
        **batch_norm_weights("spatial_reduce_norm/", "sp_att.init_conv.bn."),
        **conv_weights("spatial_final/", "sp_att.final_conv.", True),
    }
    for i in range(config["num_dilated_convs"]):
        mapping.update(
            conv_weights(f"dilated_conv_{i}/", f"sp_att.dil_convs.conv{i + 1}.conv.", True)
        )
        mapping.update(
            batch_norm_weights(f"dilated_norm_{i}/", f"sp_att.dil_convs.conv{i + 1}.bn.")
        )
    return mapping


# -- DANet (danet.py) --------------------------------------------------------------------


def scale_alpha(array, variable):
    """`ScaleBlock.alpha`, a (1,) parameter, as the layer's scalar `gamma`."""
    return array.reshape(variable.shape)


@pytorchcv_converter(L.PositionAttention, module="PosAttBlock")
def position_attention_weights(config):
    """`query_conv`, `key_conv`, `value_conv` (1x1, with bias); `scale.alpha`."""
    return {
        **conv_weights("query/", "query_conv.", True),
        **conv_weights("key/", "key_conv.", True),
        **conv_weights("value/", "value_conv.", True),
        "gamma": TimmWeight("scale.alpha", scale_alpha),
    }


def _check_channel_attention(config, state, prefix):
    if config["energy"] != "official":
        raise ValueError(
            f"pytorchcv's ChaAttBlock takes softmax(max(energy) - energy); the layer has "
            f"energy={config['energy']!r} (use 'official')"
        )


@pytorchcv_converter(L.DualChannelAttention, check=_check_channel_attention, module="ChaAttBlock")
def channel_attention_weights(config):
    """No projections: only `scale.alpha`."""
    return {"gamma": TimmWeight("scale.alpha", scale_alpha)}


# -- where each zoo layer sits in pytorchcv's networks -----------------------------------


def _resnet_paths(unit_body, extra_rules=()):
    """`(zoo layer name) -> pytorchcv module path` for pytorchcv's ResNet-like networks,
    whose unit `u` (1-based) of stage `s` holds its residual layers under
    `unit_body.format(s=..., u=...)`; `extra_rules` (`(pattern, build)` pairs) come first."""
    rules = [
        *extra_rules,
        (r"conv1", lambda m: "features.init_block.conv.conv"),
        (r"bn1", lambda m: "features.init_block.conv.bn"),
        (r"fc", lambda m: "output"),
        (
            r"layer(\d+)-(\d+)-conv(\d)",
            lambda m: _unit(unit_body, m) + f"body.conv{m.group(3)}.conv",
        ),
        (r"layer(\d+)-(\d+)-bn(\d)", lambda m: _unit(unit_body, m) + f"body.conv{m.group(3)}.bn"),
        (r"layer(\d+)-(\d+)-downsample-0", lambda m: _unit(unit_body, m) + "identity_conv.conv"),
        (r"layer(\d+)-(\d+)-downsample-1", lambda m: _unit(unit_body, m) + "identity_conv.bn"),
    ]

    def module_path(layer_name):
        for pattern, build in rules:
            match = re.fullmatch(pattern, layer_name)
            if match:
                return build(match)
        raise ValueError(f"layer {layer_name!r} has no counterpart in pytorchcv's network")

    return module_path


def _unit(unit_body, match):
    return unit_body.format(s=int(match.group(1)), u=int(match.group(2)) + 1)


MODULE_PATHS = {
    # CbamResUnit: body (ResBottleneck), identity_conv, cbam (after the body's last BN)
    "cbam_resnet50": _resnet_paths(
        "features.stage{s}.unit{u}.",
        [
            (
                r"layer(\d+)-(\d+)-se",
                lambda m: f"features.stage{m.group(1)}.unit{int(m.group(2)) + 1}.cbam",
            )
        ],
    ),
    # BamResUnit: `bam` on the input of each stage's strided first unit (= on the output of
    # the previous stage: our `bam{s}` after stage s), then `res_unit` (ResUnit)
    "bam_resnet50": _resnet_paths(
        "features.stage{s}.unit{u}.res_unit.",
        [(r"bam(\d+)", lambda m: f"features.stage{int(m.group(1)) + 1}.unit1.bam")],
    ),
}


# DANet (`danet_resnetd50b_cityscapes`): `backbone` is ResNetD's `features` (SEInitBlock
# `init_block.conv1..conv3`, ResUnits); `head` holds `branch_pa` / `branch_ca`
# (DANetHeadBranch: `conv1`, `att`, `conv2`, the branch classifier `conv3`) and `conv`
_DANET_STEM = {"conv1-0": 1, "conv1-3": 2, "conv1-6": 3}
_DANET_STEM_NORM = {"conv1-1": 1, "conv1-4": 2, "bn1": 3}
_DANET_HEAD = {
    "conv5a": "branch_pa.conv1",
    "pam": "branch_pa.att",
    "conv51": "branch_pa.conv2",
    "conv6": "branch_pa.conv3",
    "conv5c": "branch_ca.conv1",
    "cam": "branch_ca.att",
    "conv52": "branch_ca.conv2",
    "conv7": "branch_ca.conv3",
    "classifier": "conv",
}
MODULE_PATHS["danet_resnet50"] = _resnet_paths(
    "backbone.stage{s}.unit{u}.",
    [
        (
            r"conv1-[036]",
            lambda m: f"backbone.init_block.conv{_DANET_STEM[m.group(0)]}.conv",
        ),
        (
            r"conv1-[14]|bn1",
            lambda m: f"backbone.init_block.conv{_DANET_STEM_NORM[m.group(0)]}.bn",
        ),
        (
            r"head-(conv5a|conv51|conv5c|conv52)-(conv|bn)",
            lambda m: f"head.{_DANET_HEAD[m.group(1)]}.{m.group(2)}",
        ),
        (
            r"head-(pam|cam|conv6|conv7|classifier)",
            lambda m: f"head.{_DANET_HEAD[m.group(1)]}",
        ),
    ],
)


# `danet_resnetd50b_cityscapes` deletes the final pool from ResNetD's `features`
# (`del backbone[-1]`): the PyTorch of 2020, which saved the release, keeps the children's
# names (`backbone.init_block`, `backbone.stage1`, ...); recent PyTorch renumbers a
# Sequential after `del` (`backbone.0` ... `backbone.4`), so a checkpoint saved from a fresh
# pytorchcv model has those. Both load: the numbered keys are renamed first.
_DANET_BACKBONE_CHILDREN = ("init_block", "stage1", "stage2", "stage3", "stage4")


def _danet_backbone_names(state):
    renamed = {}
    for key, value in state.items():
        match = re.fullmatch(r"backbone\.(\d+)\.(.+)", key)
        if match and int(match.group(1)) < len(_DANET_BACKBONE_CHILDREN):
            key = f"backbone.{_DANET_BACKBONE_CHILDREN[int(match.group(1))]}.{match.group(2)}"
        renamed[key] = value
    return renamed


# zoo model -> `(state) -> state` with pytorchcv's key variants brought to MODULE_PATHS' names
STATE_KEY_NORMALIZERS = {"danet_resnet50": _danet_backbone_names}


def load_pytorchcv_state_dict(model, state, model_name, *, skip_prefixes=()):
    """Load `state` (numpy arrays: the pytorchcv checkpoint of the zoo model `model_name`)
    into `model`.

    Every layer with weights must find all of them, and every floating-point entry of
    `state` must be used (except under `skip_prefixes`); errors name the first mismatch.
    """
    try:
        module_path = MODULE_PATHS[model_name]
    except KeyError:
        raise ValueError(
            f"no pytorchcv layout for {model_name!r}; known: {', '.join(sorted(MODULE_PATHS))}"
        ) from None
    normalize = STATE_KEY_NORMALIZERS.get(model_name)
    if normalize is not None:
        state = normalize(state)
    load_timm_state_dict(
        model,
        state,
        skip_prefixes=skip_prefixes,
        converters=CONVERTERS,
        module_path=module_path,
        source=SOURCE,
    )
