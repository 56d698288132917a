"""Residual Attention Networks (Wang et al., "Residual Attention Network for Image
Classification", CVPR 2017): `residual_attention_56` and `residual_attention_92`.

The structure follows the official Caffe prototxts (fwang91/residual-attention-network,
`Attention-56-deploy.prototxt` / `Attention-92-deploy.prototxt`):

- stem: 7x7/2 convolution (64, no bias), BN-ReLU, 3x3/2 max pool (56x56 at 224 input);
- every residual unit is a pre-activation bottleneck (BN-ReLU-1x1 conv to C/4, BN-ReLU-3x3
  conv, BN-ReLU-1x1 conv to C, no biases). The unit opening each stage (`pre_res_1..3`,
  `post_res_4_1`) changes the width and strides its 3x3 convolution (1 in the first stage,
  2 after), with a 1x1 projection shortcut taken, like the residual branch, from the
  BN-ReLU-activated input;
- stages 1-3 (256, 512 and 1024 channels at 56, 28 and 14 pixels) stack Attention Modules
  (`keras_attention.layers.ResidualAttention`, p=1, t=2, r=1) whose soft mask branch pools
  3, 2 and 1 times: 1, 1, 1 modules in Attention-56, 1, 2, 3 in Attention-92;
- stage 4: three units at 2048 channels (7x7), then BN-ReLU. The zoo adds global average
  pooling and the classifier (`fc`, with bias: Caffe's InnerProduct).

Two departures from Caffe, neither of which changes the parameters: max pooling uses
Keras' `'same'` padding (identical to Caffe's ceil-mode pooling on even sizes, one pixel
more on odd ones, which keeps every size accepted), and the mask branch upsamples with
half-pixel bilinear interpolation where Caffe's `Interp` aligns corners. The official
Attention-92 prototxt ends its mask branches with TanH (`(1 + tanh(z)) * T`) where
Attention-56's uses Sigmoid; `ResidualAttention` offers no tanh activation, so both models
use the paper's sigmoid (f1, mixed attention).

No trained weights are available: the official repository never released its Caffe
models, so these models build with random initialisation only.

Layer names follow the prototxt where a prototxt name exists (`conv1`, `pool1`,
`pre_res_2`, `post_res_4_1`), with `.`-separated sublayer names; attention modules are
`attention{stage}_{index}` (the prototxt's `AttentionA_1`, `AttentionB_2`, ...).
"""

import keras

from keras_attention.layers import ResidualAttention
from zoo.backbones import common

STAGE_WIDTHS = (256, 512, 1024)
FINAL_WIDTH = 2048
FINAL_UNITS = 3
# Poolings of the soft mask branch by stage: 56 -> 7, 28 -> 7, 14 -> 7 pixels at 224 input.
MASK_DOWNSAMPLES = (3, 2, 1)


def preact_unit(x, filters, *, strides=1, projection=False, name):
    """One pre-activation bottleneck residual unit (He et al. 2016) as the prototxt builds it.

    `x + f(x)` with `f` = BN-ReLU-1x1 (filters/4)-BN-ReLU-3x3 (filters/4, `strides`)-BN-ReLU-
    1x1 (filters); with `projection`, the shortcut is a 1x1 convolution (`strides`) of the
    BN-ReLU-activated input instead of the identity.
    """
    hidden = filters // 4
    act = common.batch_norm(x, name=f"{name}-bn0")
    act = keras.layers.ReLU(name=f"{name}-act0")(act)
    y = common.conv2d(act, hidden, 1, name=f"{name}-conv1")
    y = common.batch_norm(y, name=f"{name}-bn1")
    y = keras.layers.ReLU(name=f"{name}-act1")(y)
    y = common.conv2d(y, hidden, 3, strides=strides, name=f"{name}-conv2")
    y = common.batch_norm(y, name=f"{name}-bn2")
    y = keras.layers.ReLU(name=f"{name}-act2")(y)
    y = common.conv2d(y, filters, 1, name=f"{name}-conv3")
    if projection:
        shortcut = common.conv2d(act, filters, 1, strides=strides, name=f"{name}-shortcut")
    else:
        shortcut = x
    return keras.layers.Add(name=f"{name}-add")([shortcut, y])


def residual_attention_body(
    inputs,
    *,
    modules_per_stage,
    stage_widths=STAGE_WIDTHS,
    mask_downsamples=MASK_DOWNSAMPLES,
    final_width=FINAL_WIDTH,
    final_units=FINAL_UNITS,
    stem_width=64,
    pre_units=1,
    trunk_units=2,
    units_per_level=1,
    mask_activation="sigmoid",
):
    """Feature maps of a Residual Attention Network.

    Args:
        inputs: `(batch, height, width, 3)` images.
        modules_per_stage: attention modules in stages 1-3 ((1, 1, 1): Attention-56;
            (1, 2, 3): Attention-92).
        stage_widths: channels of stages 1-3.
        mask_downsamples: poolings of the soft mask branch in stages 1-3.
        final_width: channels of stage 4.
        final_units: residual units of stage 4.
        stem_width: channels of the stem convolution.
        pre_units, trunk_units, units_per_level: the modules' p, t and r.
        mask_activation: the mask activation of every module (see `SoftMaskBranch`).

    Returns:
        Ordered dict `stem` (after the max pool), `stage1`..`stage4` (stage 4 after its
        final BN-ReLU, which feeds the head).
    """
    if not len(modules_per_stage) == len(stage_widths) == len(mask_downsamples):
        raise ValueError(
            "modules_per_stage, stage_widths and mask_downsamples need one entry per stage; "
            f"got {modules_per_stage}, {stage_widths}, {mask_downsamples}"
        )
    x = common.conv2d(inputs, stem_width, 7, strides=2, name="conv1")
    x = common.batch_norm(x, name="conv1-bn")
    x = keras.layers.ReLU(name="conv1-act")(x)
    x = keras.layers.MaxPooling2D(3, 2, padding="same", name="pool1")(x)
    features = {"stem": x}
    stages = zip(modules_per_stage, stage_widths, mask_downsamples)
    for stage, (modules, width, downsamples) in enumerate(stages, start=1):
        x = preact_unit(
            x, width, strides=1 if stage == 1 else 2, projection=True, name=f"pre_res_{stage}"
        )
        for index in range(1, modules + 1):
            x = ResidualAttention(
                pre_units=pre_units,
                trunk_units=trunk_units,
                units_per_level=units_per_level,
                num_downsamples=downsamples,
                mask_activation=mask_activation,
                name=f"attention{stage}_{index}",
            )(x)
        features[f"stage{stage}"] = x
    last = len(stage_widths) + 1
    for index in range(1, final_units + 1):
        x = preact_unit(
            x,
            final_width,
            strides=2 if index == 1 else 1,
            projection=index == 1,
            name=f"post_res_{last}_{index}",
        )
    x = common.batch_norm(x, name=f"post_res_{last}-bn")
    features[f"stage{last}"] = keras.layers.ReLU(name=f"post_res_{last}-act")(x)
    return features


def residual_attention_56(inputs, **kwargs):
    kwargs.setdefault("modules_per_stage", (1, 1, 1))
    return residual_attention_body(inputs, **kwargs)


def residual_attention_92(inputs, **kwargs):
    kwargs.setdefault("modules_per_stage", (1, 2, 3))
    kwargs.setdefault("mask_activation", "tanh")  # the official Attention-92 prototxt's TanH
    return residual_attention_body(inputs, **kwargs)
