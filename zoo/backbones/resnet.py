"""The ResNet family, mirroring timm's `timm/models/resnet.py` layer for layer.

`resnet_body` builds timm's `ResNet` (basic and bottleneck blocks, ResNeXt groups and base
width, the plain 7x7 stem and the 3x3 "deep" / "deep_tiered" stems, strided-convolution or
average-pool ("d") shortcuts) with an attention layer from `keras_attention.create_attention`
placed by one of several rules. Layer names are timm's module paths (`conv1`, `bn1`,
`layer1.0.conv2`, `layer1.0.downsample.0`, `layer1.0.se`, ...), so a timm state dict loads
with `zoo.convert.timm.load_timm_state_dict`; layers timm does not have (the BAM, non-local
and CGNL modules, attention-augmented convolutions) get names in the same scheme.

`output_stride` 16 or 8 replaces the strides of the last stages by dilation, as timm's
`output_stride` (torchvision's `replace_stride_with_dilation`): the weights are the same, so
an ImageNet checkpoint loads into the dilated network, the backbone of segmentation models.

Differences from timm that do not change inference are left out: drop path / drop block,
`zero_init_last` (an initialisation), anti-aliasing.
"""

import math

import keras

from keras_attention import create_attention
from keras_attention.layers._utils import make_divisible
from zoo.backbones.common import avg_pool_downsample, batch_norm, conv2d, max_pool

BLOCK_EXPANSION = {"basic": 1, "bottleneck": 4}
STEM_TYPES = ("", "deep", "deep_tiered")
PLACEMENTS = ("every_block", "every_other_block", "between_stages", "after_blocks", "replace_conv")
OUTPUT_STRIDES = (8, 16, 32)

# Attention-augmented convolution in AA-ResNet (Bello et al., ICCV 2019): key depth
# dk = kappa * F_out, value depth dv = upsilon * F_out, kappa = 2 * upsilon = 0.2, Nh = 8 heads,
# in every residual block of stages 2-4.
AA_DEFAULTS = {"key_ratio": 0.2, "value_ratio": 0.1, "num_heads": 8, "relative": True}


def _relu(x, name):
    return keras.layers.ReLU(name=name)(x)


def aa_depths(filters, key_ratio=0.2, value_ratio=0.1, num_heads=8):
    """`(dk, dv)` of an attention-augmented convolution with `filters` outputs: the paper's
    `kappa * F_out` and `upsilon * F_out`, rounded to multiples of `num_heads` (timm's
    `make_divisible`) because each head takes an equal share of both."""
    return (
        make_divisible(filters * key_ratio, num_heads),
        make_divisible(filters * value_ratio, num_heads),
    )


def _stem(x, stem_type, stem_width):
    """timm's stem up to `act1` (returned) and the stride-2 `maxpool` applied after it."""
    if stem_type not in STEM_TYPES:
        raise ValueError(f"stem_type must be one of {STEM_TYPES}, got {stem_type!r}")
    if stem_type:
        inplanes = stem_width * 2
        first = 3 * (stem_width // 4) if stem_type == "deep_tiered" else stem_width
        x = conv2d(x, first, 3, strides=2, name="conv1-0")
        x = batch_norm(x, name="conv1-1")
        x = _relu(x, "conv1-2")
        x = conv2d(x, stem_width, 3, name="conv1-3")
        x = batch_norm(x, name="conv1-4")
        x = _relu(x, "conv1-5")
        x = conv2d(x, inplanes, 3, name="conv1-6")
    else:
        # timm's plain stem is 64 wide whatever `stem_width` says
        inplanes = 64
        x = conv2d(x, inplanes, 7, strides=2, name="conv1")
    x = batch_norm(x, name="bn1")
    return _relu(x, "act1"), inplanes


def _downsample(x, filters, strides, avg_down, name, dilation=1):
    """timm `downsample_conv` (1x1 strided conv + BN, `.0` / `.1`) or `downsample_avg`
    (2x2 ceil-mode average pool `.0`, 1x1 conv `.1`, BN `.2`). In a dilated stage
    (`dilation > 1`, stride 1) timm's average pool is `AvgPool2dSame(2, 1)`: zeros padded
    after the last row and column, and counted."""
    if avg_down:
        if dilation > 1:
            x = keras.layers.ZeroPadding2D(((0, 1), (0, 1)), name=f"{name}-0-pad")(x)
            x = keras.layers.AveragePooling2D(2, 1, padding="valid", name=f"{name}-0")(x)
        elif strides != 1:
            x = avg_pool_downsample(x, name=f"{name}-0")
        x = conv2d(x, filters, 1, name=f"{name}-1")
        return batch_norm(x, name=f"{name}-2")
    x = conv2d(x, filters, 1, strides=strides, name=f"{name}-0")
    return batch_norm(x, name=f"{name}-1")


def _aa_conv(x, filters, strides, aa_kwargs, name):
    """The 3x3 convolution of a block as an attention-augmented convolution named `name`.

    A strided block 2x2 average-pools its input first (`<name>.pool`, like the "d"
    shortcut) and runs the augmented convolution at stride 1 on the pooled map, so the
    relative-position attention always sees the block's output resolution.
    """
    unknown = sorted(set(aa_kwargs or {}) - set(AA_DEFAULTS))
    if unknown:
        raise ValueError(
            f"attention_kwargs for attention-augmented convolutions take "
            f"{sorted(AA_DEFAULTS)}, got {unknown}"
        )
    settings = dict(AA_DEFAULTS, **(aa_kwargs or {}))
    dk, dv = aa_depths(
        filters, settings["key_ratio"], settings["value_ratio"], settings["num_heads"]
    )
    if strides != 1:
        x = avg_pool_downsample(x, name=f"{name}-pool")
    kwargs = dict(
        filters=filters,
        kernel_size=3,
        dk=dk,
        dv=dv,
        num_heads=settings["num_heads"],
        relative=settings["relative"],
        feat_size=None,
    )
    return create_attention("aa_conv", name=name, **kwargs)(x)


def _block(
    x,
    kind,
    planes,
    strides,
    downsample,
    *,
    cardinality,
    base_width,
    avg_down,
    attention,
    attention_kwargs,
    in_block_attention,
    aa_kwargs,
    name,
    dilation=1,
    first_dilation=1,
):
    """timm `BasicBlock` / `Bottleneck` (conv-BN-act ordering, stride in the 3x3 conv;
    the first 3x3 convolution dilated by `first_dilation`, the previous stage's dilation,
    a basic block's second by `dilation`).

    The in-block attention (`<name>.se`, timm's attribute for every `attn_layer`) scales the
    residual branch after the last BN, before the shortcut is added.
    """
    shortcut = x
    outplanes = planes * BLOCK_EXPANSION[kind]
    if kind == "basic":
        if cardinality != 1 or base_width != 64:
            raise ValueError("basic blocks support only cardinality=1 and base_width=64")
        x = conv2d(
            x, planes, 3, strides=strides, dilation_rate=first_dilation, name=f"{name}-conv1"
        )
        x = batch_norm(x, name=f"{name}-bn1")
        x = _relu(x, f"{name}-act1")
        x = conv2d(x, outplanes, 3, dilation_rate=dilation, name=f"{name}-conv2")
        x = batch_norm(x, name=f"{name}-bn2")
        last_act = f"{name}-act2"
    else:
        width = int(math.floor(planes * (base_width / 64)) * cardinality)
        x = conv2d(x, width, 1, name=f"{name}-conv1")
        x = batch_norm(x, name=f"{name}-bn1")
        x = _relu(x, f"{name}-act1")
        if aa_kwargs is not None:
            if cardinality != 1:
                raise ValueError("attention-augmented convolutions need cardinality=1")
            x = _aa_conv(x, width, strides, aa_kwargs, f"{name}-conv2")
        else:
            x = conv2d(
                x,
                width,
                3,
                strides=strides,
                groups=cardinality,
                dilation_rate=first_dilation,
                name=f"{name}-conv2",
            )
        x = batch_norm(x, name=f"{name}-bn2")
        x = _relu(x, f"{name}-act2")
        x = conv2d(x, outplanes, 1, name=f"{name}-conv3")
        x = batch_norm(x, name=f"{name}-bn3")
        last_act = f"{name}-act3"
    if in_block_attention:
        x = create_attention(attention, name=f"{name}-se", **(attention_kwargs or {}))(x)
    if downsample:
        shortcut = _downsample(
            shortcut, outplanes, strides, avg_down, f"{name}-downsample", dilation
        )
    x = keras.layers.Add(name=f"{name}-add")([x, shortcut])
    return _relu(x, last_act)


def _default_positions(placement, num_stages):
    if placement == "between_stages":
        return tuple(range(1, num_stages))
    if placement == "replace_conv":
        return tuple(range(2, num_stages + 1))
    if placement == "after_blocks":
        raise ValueError(
            "attention_placement='after_blocks' needs attention_positions, a "
            "list of (stage, block) pairs"
        )
    return tuple(range(1, num_stages + 1))


def resnet_body(
    inputs,
    block="bottleneck",
    layers=(3, 4, 6, 3),
    channels=(64, 128, 256, 512),
    cardinality=1,
    base_width=64,
    stem_width=64,
    stem_type="",
    avg_down=False,
    attention=None,
    attention_kwargs=None,
    attention_placement="every_block",
    attention_positions=None,
    attention_name=None,
    output_stride=32,
):
    """timm's ResNet / ResNeXt / SE-ResNet(X)t feature extractor with attention by name.

    Args:
        inputs: a `(batch, height, width, 3)` tensor.
        block: `"bottleneck"` (expansion 4) or `"basic"` (expansion 1).
        layers: number of blocks per stage.
        channels: `planes` per stage (the 3x3 width before ResNeXt scaling; outputs are
            `planes * expansion`).
        cardinality: groups of the bottleneck's 3x3 convolution (ResNeXt).
        base_width: bottleneck width per group, relative to 64
            (`width = floor(planes * base_width / 64) * cardinality`).
        stem_width: width of the deep stems' convolutions (the plain 7x7 stem is always 64
            wide, as in timm).
        stem_type: `""` (7x7 stride-2 conv), `"deep"` (3x3 convs of `stem_width`,
            `stem_width`, `2 * stem_width`) or `"deep_tiered"` (`3 * (stem_width // 4)`,
            `stem_width`, `2 * stem_width`; timm's "t" models), then BN, ReLU, 3x3 max pool.
        avg_down: shortcut projections average-pool 2x2 (ceil mode) before a 1x1 conv
            (the "d" variants) instead of striding the 1x1 conv.
        attention: a `keras_attention.create_attention` name, or None.
        attention_kwargs: keyword arguments for `create_attention` (for `"replace_conv"`:
            `key_ratio`, `value_ratio`, `num_heads`, `relative`, see `AA_DEFAULTS`).
        attention_placement: where the attention goes:

            - `"every_block"`: inside every block of the selected stages, on the residual
              branch after its last BN and before the addition (timm's `attn_layer`,
              named `layer{s}.{b}.se` whatever the mechanism, as timm does);
            - `"every_other_block"`: the same, in blocks 0, 2, 4, ... of each stage;
            - `"between_stages"`: one module on the output of each selected stage
              (default stages 1 to 3, the BAM paper's "bottlenecks" before each
              downsampling), named `{attention_name}{stage}` (`bam1` ... `bam3`);
            - `"after_blocks"`: one module on the output of each block in
              `attention_positions` (`(stage, block)` pairs, stages from 1, blocks from 0),
              named `layer{s}.{b}.{attention_name}`, as the non-local papers insert their
              blocks between residual blocks;
            - `"replace_conv"`: every bottleneck 3x3 convolution of the selected stages
              (default 2 to 4) becomes an `AttentionAugmentedConv2D` (`attention` must be
              `"aa_conv"`), named `layer{s}.{b}.conv2` like the convolution it replaces.
        attention_positions: the selected stages (1-based) for every placement except
            `"after_blocks"`, which takes `(stage, block)` pairs.
        attention_name: layer-name suffix of `"between_stages"` / `"after_blocks"` modules
            (default: the attention name).
        output_stride: 32 (default), 16 or 8: the stride of the last feature map. Below
            32, the stages that would go past it keep their resolution and dilate their
            3x3 convolutions instead (by 2, then 4), as timm's `output_stride`.

    Returns:
        `{"stem": act1 output (stride 2), "stage1": ..., "stage4": ...}`; a stage's entry is
        its last output, after any between-stage or after-block module.
    """
    if block not in BLOCK_EXPANSION:
        raise ValueError(f"block must be 'basic' or 'bottleneck', got {block!r}")
    if len(layers) != len(channels):
        raise ValueError(f"layers {tuple(layers)} and channels {tuple(channels)} differ in length")
    if attention_placement not in PLACEMENTS:
        raise ValueError(
            f"attention_placement must be one of {PLACEMENTS}, got {attention_placement!r}"
        )
    if isinstance(output_stride, bool) or output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}")
    if attention_placement == "replace_conv":
        if output_stride != 32:
            raise ValueError(
                "attention_placement='replace_conv' needs output_stride=32 (the "
                "attention-augmented convolutions are not dilated)"
            )
        if attention != "aa_conv":
            raise ValueError("attention_placement='replace_conv' needs attention='aa_conv'")
        if block != "bottleneck":
            raise ValueError("attention_placement='replace_conv' needs bottleneck blocks")
    num_stages = len(layers)
    positions = attention_positions
    if attention and positions is None:
        positions = _default_positions(attention_placement, num_stages)
    positions = {tuple(p) if isinstance(p, (list, tuple)) else p for p in positions or ()}
    suffix = attention_name or attention

    features = {}
    x, inplanes = _stem(inputs, stem_type, stem_width)
    features["stem"] = x
    x = max_pool(x, 3, 2, name="maxpool")
    expansion = BLOCK_EXPANSION[block]
    net_stride, dilation = 4, 1
    for stage_index, (num_blocks, planes) in enumerate(zip(layers, channels)):
        stage = stage_index + 1
        strides = 1 if stage_index == 0 else 2
        previous_dilation = dilation
        if net_stride >= output_stride:
            dilation, strides = dilation * strides, 1
        else:
            net_stride *= strides
        outplanes = planes * expansion
        for block_index in range(num_blocks):
            name = f"layer{stage}-{block_index}"
            in_block = (
                bool(attention)
                and stage in positions
                and (
                    attention_placement == "every_block"
                    or (attention_placement == "every_other_block" and block_index % 2 == 0)
                )
            )
            replace = attention_placement == "replace_conv" and stage in positions
            first = block_index == 0
            x = _block(
                x,
                block,
                planes,
                strides if first else 1,
                first and (strides != 1 or inplanes != outplanes),
                cardinality=cardinality,
                base_width=base_width,
                avg_down=avg_down,
                attention=attention,
                attention_kwargs=attention_kwargs,
                in_block_attention=in_block,
                aa_kwargs=(attention_kwargs or {}) if replace else None,
                name=name,
                dilation=dilation,
                first_dilation=previous_dilation if first else dilation,
            )
            inplanes = outplanes
            if (
                attention
                and attention_placement == "after_blocks"
                and (stage, block_index) in positions
            ):
                x = create_attention(
                    attention, name=f"{name}-{suffix}", **(attention_kwargs or {})
                )(x)
        if attention and attention_placement == "between_stages" and stage in positions:
            x = create_attention(attention, name=f"{suffix}{stage}", **(attention_kwargs or {}))(x)
        features[f"stage{stage}"] = x
    return features


def _variant(**defaults):
    """A body function with timm's arguments for one model; callers may override any."""

    def body(inputs, **kwargs):
        return resnet_body(inputs, **{**defaults, **kwargs})

    return body


RESNET50 = dict(block="bottleneck", layers=(3, 4, 6, 3))

# The registered bodies (names, descriptions and weights are in zoo/catalog.py).
resnet50 = _variant(**RESNET50)
seresnet50 = _variant(**RESNET50, attention="se")
seresnext50_32x4d = _variant(**RESNET50, cardinality=32, base_width=4, attention="se")
ecaresnet50d = _variant(**RESNET50, stem_width=32, stem_type="deep", avg_down=True, attention="eca")

# timm registers no CBAM ResNet; this is timm's
# ResNet(Bottleneck, [3, 4, 6, 3], block_args=dict(attn_layer="cbam")), i.e. CbamModule
# (no MLP bias, [mean, max] spatial pooling) after bn3 in every bottleneck.
cbam_resnet50 = _variant(**RESNET50, attention="cbam")

# BAM (Park et al., BMVC 2018) sits at the network's "bottlenecks", where the feature map is
# about to be downsampled: on the outputs of stages 1-3, as in the official code
# (Jongchan/attention-module, `bam1` ... `bam3`).
bam_resnet50 = _variant(**RESNET50, attention="bam", attention_placement="between_stages")

# Non-local ResNet-50 (Wang et al., CVPR 2018): the paper's 5-block configuration, non-local
# blocks after every other residual block of res3 and res4 (2 + 3 blocks; timm's stages 2
# and 3), after blocks 1, 3 of res3 and 1, 3, 5 of res4 as in the authors' video code. The
# block is timm's NonLocalAttn (embedded Gaussian, inner width C / 8, scale C ** -0.5), so a
# timm ResNet-50 with NonLocalAttn modules at the same places is the reference.
NL_POSITIONS = ((2, 1), (2, 3), (3, 1), (3, 3), (3, 5))
nl_resnet50 = _variant(
    **RESNET50, attention="nl", attention_placement="after_blocks", attention_positions=NL_POSITIONS
)

# AA-ResNet-50 (Bello et al., ICCV 2019): every 3x3 convolution of stages 2-4 augmented,
# kappa = 2 * upsilon = 0.2, Nh = 8, relative position logits (so the input size is fixed).
aa_resnet50 = _variant(**RESNET50, attention="aa_conv", attention_placement="replace_conv")

# CGNL-ResNet-50 (Yue et al., NeurIPS 2018): one compact generalized non-local block (dot
# product kernel, inner width C / 2, 8 groups, no scaling) right before the last residual
# block of res4 (after layer3.4), as in the authors' code.
cgnl_resnet50 = _variant(
    **RESNET50,
    attention="cgnl",
    attention_placement="after_blocks",
    attention_positions=((3, 4),),
    attention_kwargs={"groups": 8},
)
