"""timm's "bring your own blocks / attention" networks (byobnet.py, byoanet.py) in Keras.

The configuration mirrors timm's `ByoBlockCfg` / `ByoModelCfg` field for field (the subset
these models use), so one description builds both timm's `ByobNet` and ours, and timm
checkpoints convert by layer name:

- stem `'tiered'`: three 3x3 ConvNormAct (`stem.conv1..3`, `3c/8`, `c/2`, `c` channels),
  then `stem.pool` (3x3 / 2 max pool) with `stem_pool='maxpool'`; without the pool the
  third convolution strides instead.
- `'bottle'` blocks (`BottleneckBlock`): `conv1_1x1`, `conv2_kxk` (strided, grouped by
  `gs`), `attn` (`attn_layer` on the bottleneck width), `conv3_1x1` (no activation), plus
  `shortcut` (a 1x1 ConvNormAct without activation where the shape changes), then ReLU.
- `'self_attn'` blocks (`SelfAttnBlock`): `conv1_1x1`, `self_attn` (`'bottleneck'`,
  `'halo'` or `'lambda'`, strided itself), `post_attn` (BatchNorm + ReLU), `conv3_1x1`,
  shortcut, ReLU.

A ConvNormAct is `<path>.conv` + `<path>.bn` (timm's BatchNormAct2d, holding the
activation `<path>.bn.act`). The zoo adds `head.fc` (timm's `ClassifierHead`).
"""

import dataclasses

import keras

from keras_attention.factory import create_attention
from keras_attention.layers._utils import make_divisible
from zoo.backbones.common import batch_norm, conv2d, max_pool


@dataclasses.dataclass(frozen=True)
class ByoBlockCfg:
    """One block type repeated `d` times (timm's `ByoBlockCfg`).

    Attributes:
        type: `"bottle"` (BottleneckBlock) or `"self_attn"` (SelfAttnBlock).
        d: number of blocks.
        c: output channels of each block.
        s: stride of the stage (first block of the stage).
        gs: group size of the kxk convolution (0 / None: one group).
        br: bottleneck ratio (bottleneck width = `make_divisible(c * br)`).
        attn_layer / attn_kwargs: per-block override of the model's channel attention
            (`""` disables it); kwargs are the keras_attention layer's.
        self_attn_layer / self_attn_kwargs: per-block override of the self-attention
            (kwargs as timm's, which the keras_attention layers share).
    """

    type: str
    d: int
    c: int
    s: int = 2
    gs: int | None = None
    br: float = 1.0
    attn_layer: str | None = None
    attn_kwargs: dict | None = None
    self_attn_layer: str | None = None
    self_attn_kwargs: dict | None = None


@dataclasses.dataclass(frozen=True)
class ByoModelCfg:
    """A whole network (timm's `ByoModelCfg`, the fields these models use).

    Attributes:
        blocks: one entry per stage, a `ByoBlockCfg` or a tuple of them (see
            `interleave_blocks`).
        downsample: shortcut type where the shape changes; only timm's default
            `"conv1x1"` (a strided 1x1 ConvNormAct without activation).
        stem_type: only `"tiered"`.
        stem_pool: `"maxpool"` or `""`.
        stem_chs: stem output channels.
        width_factor: multiplier of every stage's channels.
        attn_layer / attn_kwargs: channel attention inside bottleneck blocks (a
            `keras_attention.factory` name, e.g. `"gca"`).
        self_attn_layer / self_attn_kwargs: `"bottleneck"`, `"halo"` or `"lambda"` and its
            arguments, as timm's.
    """

    blocks: tuple
    downsample: str = "conv1x1"
    stem_type: str = "tiered"
    stem_pool: str = "maxpool"
    stem_chs: int = 64
    width_factor: float = 1.0
    attn_layer: str | None = None
    attn_kwargs: dict = dataclasses.field(default_factory=dict)
    self_attn_layer: str | None = None
    self_attn_kwargs: dict = dataclasses.field(default_factory=dict)


def interleave_blocks(types, d, every=1, first=False, **kwargs):
    """timm's `interleave_blocks`: `d` single blocks, `types[1]` at the positions `every`
    picks (every `every + 1`-th block, or the listed indices), `types[0]` elsewhere."""
    if isinstance(every, int):
        every = list(range(0 if first else every, d, every + 1)) or [d - 1]
    return tuple(
        ByoBlockCfg(type=types[1] if i in every else types[0], d=1, **kwargs) for i in range(d)
    )


SELF_ATTENTION = ("bottleneck", "halo", "lambda")


def _expand(stage):
    stage = stage if isinstance(stage, (tuple, list)) else (stage,)
    return [dataclasses.replace(block, d=1) for block in stage for _ in range(block.d)]


def conv_norm_act(x, filters, kernel_size, *, strides=1, groups=1, apply_act=True, name):
    """timm `ConvNormAct`: `<name>.conv`, `<name>.bn` and (optionally) ReLU `<name>.bn.act`."""
    x = conv2d(x, filters, kernel_size, strides=strides, groups=groups, name=f"{name}-conv")
    x = batch_norm(x, name=f"{name}-bn")
    if apply_act:
        x = keras.layers.ReLU(name=f"{name}-bn-act")(x)
    return x


def _shortcut(x, out_chs, stride, name):
    if x.shape[-1] == out_chs and stride == 1:
        return x
    return conv_norm_act(x, out_chs, 1, strides=stride, apply_act=False, name=f"{name}-shortcut")


def _block_attention(block, cfg):
    """(layer name, kwargs) of a block's channel / self attention, with timm's rule: a
    block-level setting replaces the model-level one (kwargs are not merged)."""
    attn = cfg.attn_layer if block.attn_layer is None else block.attn_layer
    attn_kwargs = block.attn_kwargs if block.attn_kwargs is not None else cfg.attn_kwargs
    self_attn = cfg.self_attn_layer if block.self_attn_layer is None else block.self_attn_layer
    self_kwargs = (
        block.self_attn_kwargs if block.self_attn_kwargs is not None else cfg.self_attn_kwargs
    )
    return attn or None, dict(attn_kwargs or {}), self_attn or None, dict(self_kwargs or {})


def bottleneck_block(x, out_chs, *, stride, bottle_ratio, group_size, attn, attn_kwargs, name):
    """timm `BottleneckBlock` (attention after the kxk convolution, `attn_last=False`)."""
    mid_chs = make_divisible(out_chs * bottle_ratio)
    groups = mid_chs // group_size if group_size else 1
    shortcut = _shortcut(x, out_chs, stride, name)
    x = conv_norm_act(x, mid_chs, 1, name=f"{name}-conv1_1x1")
    x = conv_norm_act(x, mid_chs, 3, strides=stride, groups=groups, name=f"{name}-conv2_kxk")
    if attn:
        x = create_attention(attn, name=f"{name}-attn", **attn_kwargs)(x)
    x = conv_norm_act(x, out_chs, 1, apply_act=False, name=f"{name}-conv3_1x1")
    x = keras.layers.Add(name=f"{name}-add")([x, shortcut])
    return keras.layers.ReLU(name=f"{name}-act")(x)


def self_attn_block(x, out_chs, *, stride, bottle_ratio, self_attn, self_attn_kwargs, name):
    """timm `SelfAttnBlock` (no extra kxk convolution; the attention strides itself)."""
    if self_attn not in SELF_ATTENTION:
        raise ValueError(
            f"{name}: self_attn_layer must be one of {SELF_ATTENTION}, got {self_attn!r}"
        )
    mid_chs = make_divisible(out_chs * bottle_ratio)
    shortcut = _shortcut(x, out_chs, stride, name)
    x = conv_norm_act(x, mid_chs, 1, name=f"{name}-conv1_1x1")
    kwargs = dict(self_attn_kwargs, stride=stride)
    if self_attn == "bottleneck":
        # timm sizes the relative tables for the block's input map (its `feat_size`)
        feat_size = tuple(x.shape[1:3])
        if None in feat_size:
            raise ValueError(
                f"{name}: BottleneckAttention needs a static feature size, got {feat_size}"
            )
        kwargs["feat_size"] = feat_size
    x = create_attention(self_attn, name=f"{name}-self_attn", **kwargs)(x)
    x = batch_norm(x, name=f"{name}-post_attn")
    x = keras.layers.ReLU(name=f"{name}-post_attn-act")(x)
    x = conv_norm_act(x, out_chs, 1, apply_act=False, name=f"{name}-conv3_1x1")
    x = keras.layers.Add(name=f"{name}-add")([x, shortcut])
    return keras.layers.ReLU(name=f"{name}-act")(x)


def tiered_stem(x, stem_chs, pool, name="stem"):
    """timm `Stem` for `stem_type='tiered'`."""
    widths = (3 * stem_chs // 8, stem_chs // 2, stem_chs)
    strides = (2, 1, 1) if pool else (2, 1, 2)
    for i, (width, stride) in enumerate(zip(widths, strides)):
        x = conv_norm_act(x, width, 3, strides=stride, name=f"{name}-conv{i + 1}")
    if pool:
        x = max_pool(x, 3, 2, name=f"{name}-pool")
    return x


def byob_body(inputs, cfg):
    """Feature maps `{"stem", "stage1", ..., "stageN"}` of the network `cfg` describes."""
    if cfg.stem_type != "tiered":
        raise ValueError(f"stem_type: only 'tiered' is implemented, got {cfg.stem_type!r}")
    if cfg.stem_pool not in ("maxpool", ""):
        raise ValueError(f"stem_pool must be 'maxpool' or '', got {cfg.stem_pool!r}")
    if cfg.downsample != "conv1x1":
        raise ValueError(f"downsample: only 'conv1x1' is implemented, got {cfg.downsample!r}")
    stem_chs = int(round(cfg.stem_chs * cfg.width_factor))
    x = tiered_stem(inputs, stem_chs, cfg.stem_pool)
    features = {"stem": x}
    for stage_index, stage in enumerate(cfg.blocks):
        blocks = _expand(stage)
        for block_index, block in enumerate(blocks):
            stride = blocks[0].s if block_index == 0 else 1
            out_chs = make_divisible(block.c * cfg.width_factor)
            attn, attn_kwargs, self_attn, self_kwargs = _block_attention(block, cfg)
            name = f"stages-{stage_index}-{block_index}"
            if block.type == "bottle":
                x = bottleneck_block(
                    x,
                    out_chs,
                    stride=stride,
                    bottle_ratio=block.br,
                    group_size=block.gs,
                    attn=attn,
                    attn_kwargs=attn_kwargs,
                    name=name,
                )
            elif block.type == "self_attn":
                x = self_attn_block(
                    x,
                    out_chs,
                    stride=stride,
                    bottle_ratio=block.br,
                    self_attn=self_attn,
                    self_attn_kwargs=self_kwargs,
                    name=name,
                )
            else:
                raise ValueError(
                    f"{name}: block type must be 'bottle' or 'self_attn', got {block.type!r}"
                )
        features[f"stage{stage_index + 1}"] = x
    return features


def _resnet26t_stages():
    # ResNet-26-T layout of timm's byoanet models: self-attention in the second block of
    # stage 3 and in both blocks of stage 4
    return (
        ByoBlockCfg(type="bottle", d=2, c=256, s=1, gs=0, br=0.25),
        ByoBlockCfg(type="bottle", d=2, c=512, s=2, gs=0, br=0.25),
        interleave_blocks(types=("bottle", "self_attn"), d=2, c=1024, s=2, gs=0, br=0.25),
        ByoBlockCfg(type="self_attn", d=2, c=2048, s=2, gs=0, br=0.25),
    )


MODEL_CFGS = {
    # timm byobnet.py `gcresnet50t`
    "gcresnet50t": ByoModelCfg(
        blocks=(
            ByoBlockCfg(type="bottle", d=3, c=256, s=1, br=0.25),
            ByoBlockCfg(type="bottle", d=4, c=512, s=2, br=0.25),
            ByoBlockCfg(type="bottle", d=6, c=1024, s=2, br=0.25),
            ByoBlockCfg(type="bottle", d=3, c=2048, s=2, br=0.25),
        ),
        stem_chs=64,
        stem_type="tiered",
        stem_pool="",
        attn_layer="gca",
    ),
    # timm byoanet.py `botnet26t` (built at img_size 256 as `botnet26t_256`)
    "botnet26t_256": ByoModelCfg(
        blocks=_resnet26t_stages(),
        stem_chs=64,
        stem_type="tiered",
        stem_pool="maxpool",
        self_attn_layer="bottleneck",
    ),
    "halonet26t": ByoModelCfg(
        blocks=_resnet26t_stages(),
        stem_chs=64,
        stem_type="tiered",
        stem_pool="maxpool",
        self_attn_layer="halo",
        self_attn_kwargs=dict(block_size=8, halo_size=2),
    ),
    "lambda_resnet26t": ByoModelCfg(
        blocks=_resnet26t_stages(),
        stem_chs=64,
        stem_type="tiered",
        stem_pool="maxpool",
        self_attn_layer="lambda",
        self_attn_kwargs=dict(r=9),
    ),
}


def _body_for(name):
    def body(inputs, **overrides):
        # like timm's ByobNet(cfg, **kwargs): keyword arguments replace config fields
        return byob_body(inputs, dataclasses.replace(MODEL_CFGS[name], **overrides))

    body.__name__ = name
    body.__doc__ = (
        f"Feature maps of timm's `{name}` (keyword arguments replace ByoModelCfg fields)."
    )
    return body


# The registered bodies (names, descriptions and weights are in zoo/catalog.py).
gcresnet50t = _body_for("gcresnet50t")
botnet26t_256 = _body_for("botnet26t_256")
halonet26t = _body_for("halonet26t")
lambda_resnet26t = _body_for("lambda_resnet26t")

__all__ = ["ByoBlockCfg", "ByoModelCfg", "interleave_blocks", "byob_body", "MODEL_CFGS"]
