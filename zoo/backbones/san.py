"""Self-attention networks (Zhao et al., "Exploring Self-attention for Image Recognition",
CVPR 2020): `san10_pairwise` and `san10_patchwise`.

The structure follows the official PyTorch code (hszhao/SAN, `model/san.py`,
`san(sa_type, layers=(2, 1, 2, 4, 1), kernels=[3, 7, 7, 7, 7])`):

- stem: 1x1 convolution 3 -> 64 (no bias), BN-ReLU, at the input resolution;
- five stages of widths 64, 256, 512, 1024, 2048, each: 2x2/2 max pool, 1x1 convolution
  (no bias) to the stage width, its blocks, then BN-ReLU (so the input is halved five
  times: 7x7 at 224);
- a block is pre-activation: `x + conv1x1_bias(relu(bn2(SAM(relu(bn1(x))))))`, where SAM
  is `PairwiseSelfAttention` or `PatchwiseSelfAttention` with `relation_channels = C // 16`,
  `value_channels = C // 4`, `share_planes = 8` and the stage's footprint (3 in the first
  stage, 7 after), reflection padded.

Differences from the official code, neither changes the function it can represent:
`PairwiseSelfAttention` drops the bias of the position convolution (cancels in `p_i - p_j`)
and of the last weight convolution (cancels in the softmax over the footprint), so each
pairwise block has `2 + C // 32` parameters fewer than the official one. The patchwise model
follows the official code in applying no softmax to its weights (`softmax=False`; the
body's `patchwise_softmax` switches it on).

Reflection padding needs every attended map larger than the footprint's half-width: the
last stage (input / 32, floored five times) must be at least 4 pixels, so inputs of at
least 128 x 128.

Pretrained weights: the authors share PyTorch checkpoints on Google Drive; the zoo has no
converter or registry entry for them (no timm counterpart, no published hash), so these
models build with random initialisation only.

Layer names are the official module paths (`conv_in`, `layer1.0.sam`, `layer1.0.conv`,
`bn4`, `fc`).
"""

import keras

from keras_attention.layers import PairwiseSelfAttention, PatchwiseSelfAttention
from zoo.backbones import common

SAN10_LAYERS = (2, 1, 2, 4, 1)
SAN10_KERNELS = (3, 7, 7, 7, 7)
STAGE_WIDTHS = (64, 256, 512, 1024, 2048)
SHARE_PLANES = 8
SA_TYPES = ("pairwise", "patchwise")


def san_block(x, sa_type, kernel_size, *, share_planes=SHARE_PLANES, patchwise_softmax=False, name):
    """The official `Bottleneck`: pre-activation block around a SAN attention layer."""
    channels = int(x.shape[-1])
    attention_kwargs = dict(
        kernel_size=kernel_size,
        share_planes=share_planes,
        relation_channels=channels // 16,
        value_channels=channels // 4,
        name=f"{name}-sam",
    )
    if sa_type == "pairwise":
        sam = PairwiseSelfAttention(**attention_kwargs)
    else:
        sam = PatchwiseSelfAttention(softmax=patchwise_softmax, **attention_kwargs)
    y = common.batch_norm(x, name=f"{name}-bn1")
    y = keras.layers.ReLU(name=f"{name}-act1")(y)
    y = sam(y)
    y = common.batch_norm(y, name=f"{name}-bn2")
    y = keras.layers.ReLU(name=f"{name}-act2")(y)
    y = common.conv2d(y, channels, 1, use_bias=True, name=f"{name}-conv")
    return keras.layers.Add(name=f"{name}-add")([x, y])


def san_body(
    inputs,
    *,
    sa_type,
    layers=SAN10_LAYERS,
    kernels=SAN10_KERNELS,
    widths=STAGE_WIDTHS,
    share_planes=SHARE_PLANES,
    patchwise_softmax=False,
):
    """Feature maps of a SAN.

    Args:
        inputs: `(batch, height, width, 3)` images (at least 128 x 128 with the default
            five stages and 7x7 footprints).
        sa_type: `"pairwise"` or `"patchwise"`.
        layers: blocks per stage ((2, 1, 2, 4, 1): SAN10).
        kernels: footprint side per stage.
        widths: channels per stage (the first is also the stem's).
        share_planes: value channels sharing one attention weight.
        patchwise_softmax: normalise the patchwise weights by a softmax (the official code
            does not).

    Returns:
        Ordered dict `stem` (after the stem's BN-ReLU) and `stage1`..`stage5` (official
        `layer0`..`layer4` after their BN-ReLU; the last feeds the head).
    """
    if sa_type not in SA_TYPES:
        raise ValueError(f"sa_type must be one of {SA_TYPES}, got {sa_type!r}")
    if not len(layers) == len(kernels) == len(widths):
        raise ValueError(
            f"layers, kernels and widths need one entry per stage; got {layers}, {kernels}, "
            f"{widths}"
        )
    x = common.conv2d(inputs, widths[0], 1, name="conv_in")
    x = common.batch_norm(x, name="bn_in")
    features = {"stem": keras.layers.ReLU(name="act_in")(x)}
    x = features["stem"]
    for stage, (blocks, kernel_size, width) in enumerate(zip(layers, kernels, widths)):
        x = keras.layers.MaxPooling2D(2, 2, name=f"pool{stage}")(x)
        x = common.conv2d(x, width, 1, name=f"conv{stage}")
        for index in range(blocks):
            x = san_block(
                x,
                sa_type,
                kernel_size,
                share_planes=share_planes,
                patchwise_softmax=patchwise_softmax,
                name=f"layer{stage}-{index}",
            )
        x = common.batch_norm(x, name=f"bn{stage}")
        x = keras.layers.ReLU(name=f"act{stage}")(x)
        features[f"stage{stage + 1}"] = x
    return features


def san10_pairwise(inputs, **kwargs):
    return san_body(inputs, sa_type="pairwise", **kwargs)


def san10_patchwise(inputs, **kwargs):
    return san_body(inputs, sa_type="patchwise", **kwargs)
