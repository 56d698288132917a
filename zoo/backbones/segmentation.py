"""Semantic-segmentation networks: a dilated ResNet and an attention head, per-pixel classes.

Each registered model (zoo/catalog.py, `kind="segmentation"`) maps an image
`(batch, height, width, 3)` to class probabilities per pixel `(batch, height, width,
num_classes)` (float32; `classifier_activation=None` gives logits): the backbone is a ResNet
whose last stages are dilated (`output_stride` 8: the last feature map is 1/8 of the input),
the head turns its last feature map into logits at that resolution, and the logits are
upsampled bilinearly (corners aligned, as the official code of every head) to the input's
size. `aux_head=True` adds the auxiliary FCN head on stage 3 used for training (its loss
weighted 0.4 in the papers) and returns `{"segmentation": ..., "aux": ...}`.

Heads, each after its official code where one exists (layer names `head-*`):

- `fcn`: the FCN baseline of torchvision's `FCNHead`: 3x3 convolution to `C / 4`, BN, ReLU,
  dropout 0.1, 1x1 classifier.
- `danet`: `DANetHead` of junfu1115/DANet: two branches on the backbone map, each 3x3
  convolution to `C / 4` + BN + ReLU, then `PositionAttention` (PAM) or
  `DualChannelAttention` (CAM), then 3x3 convolution + BN + ReLU; summed, dropout 0.1, 1x1
  classifier. `branch_classifiers=True` adds each branch's own 1x1 classifier (the
  official `conv6` / `conv7`), whose maps `aux_head=True` returns: the layout of
  pytorchcv's `DANet`, which `weights="cityscapes"` of `danet_resnet50` loads into (with
  the deep-stem ResNet-50 of pytorchcv's `resnetd50b`: `stem_type="deep"`,
  `stem_width=64`; zoo/pretrained.py).
- `ccnet`: `RCCAModule` of speedinghzl/CCNet: 3x3 convolution to `C / 4` + BN + ReLU,
  `CrissCrossAttention` applied `recurrence` (2) times with shared weights, 3x3 convolution
  + BN + ReLU, concatenated with the backbone map, 3x3 bottleneck convolution to
  `head_channels` + BN + ReLU, dropout 0.1, 1x1 classifier.
- `ocnet`: openseg-group/OCNet.pytorch: `oc_mode="base"` / `"pyramid"`: 3x3 convolution to
  `head_channels` + BN + ReLU, then `ObjectContext` (official preset, dropout 0.05);
  `"asp"`: `ObjectContext(mode="asp")` on the backbone map (output `head_channels`, ASPP
  `dilations`); then a 1x1 classifier.
- `pan`: PAN (Li et al. 2018) as segmentation_models.pytorch's `PANDecoder` (PAN has no
  official code): `FeaturePyramidAttention` on the last stage to `head_channels`, then
  `GlobalAttentionUpsample` decoders with stages 3, 2 and 1 (each map gated and added to
  the upsampled coarser one), a 3x3 classifier at stride 4.
"""

import keras
from keras import ops

from keras_attention.layers import (
    CrissCrossAttention,
    DualChannelAttention,
    FeaturePyramidAttention,
    GlobalAttentionUpsample,
    ObjectContext,
    PositionAttention,
)
from keras_attention.layers.context_attention import _resize_bilinear_align_corners
from zoo.backbones.common import batch_norm, conv2d
from zoo.backbones.resnet import RESNET50, resnet_body

HEADS = ("fcn", "danet", "ccnet", "ocnet", "pan")
OC_MODES = ("base", "pyramid", "asp")
AUX_STAGE = "stage3"


@keras.saving.register_keras_serializable(package="zoo")
class ResizeLike(keras.layers.Layer):
    """Bilinear resize (corners aligned) of a feature map to the height and width of a
    reference tensor, known only when called (PyTorch's `F.interpolate(x, size=ref.shape[2:],
    mode="bilinear", align_corners=True)`).

    Call arguments:
        inputs: a list `[x, reference]`: `x` `(batch, h, w, channels)`, `reference`
            `(batch, height, width, ...)`.

    Returns:
        `x` resized to `(batch, height, width, channels)`.
    """

    def call(self, inputs):
        x, reference = inputs
        return _resize_bilinear_align_corners(x, ops.shape(reference)[1:3])

    def compute_output_shape(self, input_shape):
        x_shape, reference_shape = input_shape
        return (x_shape[0], reference_shape[1], reference_shape[2], x_shape[-1])


def _conv_bn_relu(x, filters, kernel_size, name):
    x = conv2d(x, filters, kernel_size, name=f"{name}-conv")
    x = batch_norm(x, name=f"{name}-bn")
    return keras.layers.ReLU(name=f"{name}-relu")(x)


def _dropout(x, rate, name):
    return keras.layers.SpatialDropout2D(rate, name=name)(x) if rate else x


def _classifier(x, num_classes, name, kernel_size=1):
    """Logits in float32 (under mixed precision too), with a bias."""
    return keras.layers.Conv2D(
        num_classes, kernel_size, padding="same", name=name, dtype="float32"
    )(x)


def fcn_head(x, num_classes, *, dropout=0.1, name="head"):
    """torchvision `FCNHead`: 3x3 conv to `C / 4` + BN + ReLU, dropout, 1x1 classifier."""
    x = _conv_bn_relu(x, max(1, x.shape[-1] // 4), 3, f"{name}-conv5")
    x = _dropout(x, dropout, f"{name}-dropout")
    return _classifier(x, num_classes, f"{name}-classifier")


def danet_head(x, num_classes, *, dropout=0.1, reduction=8, branch_classifiers=False, name="head"):
    """DANet: PAM and CAM branches (conv-BN-ReLU in and out), summed, classifier.

    With `branch_classifiers`, each branch also gets its own 1x1 classifier (the official
    `conv6` / `conv7`, pytorchcv's `branch_pa.conv3` / `branch_ca.conv3`) and the head
    returns `(logits, {"position": ..., "channel": ...})`.
    """
    inter = max(1, x.shape[-1] // 4)
    position = _conv_bn_relu(x, inter, 3, f"{name}-conv5a")
    position = PositionAttention(reduction=reduction, name=f"{name}-pam")(position)
    position = _conv_bn_relu(position, inter, 3, f"{name}-conv51")
    channel = _conv_bn_relu(x, inter, 3, f"{name}-conv5c")
    channel = DualChannelAttention(name=f"{name}-cam")(channel)
    channel = _conv_bn_relu(channel, inter, 3, f"{name}-conv52")
    summed = keras.layers.Add(name=f"{name}-sum")([position, channel])
    summed = _dropout(summed, dropout, f"{name}-dropout")
    logits = _classifier(summed, num_classes, f"{name}-classifier")
    if not branch_classifiers:
        return logits
    branches = {
        "position": _classifier(
            _dropout(position, dropout, f"{name}-conv6-dropout"), num_classes, f"{name}-conv6"
        ),
        "channel": _classifier(
            _dropout(channel, dropout, f"{name}-conv7-dropout"), num_classes, f"{name}-conv7"
        ),
    }
    return logits, branches


def ccnet_head(
    x, num_classes, *, head_channels=512, recurrence=2, dropout=0.1, reduction=8, name="head"
):
    """CCNet's RCCA module: criss-cross attention `recurrence` times, bottleneck, classifier."""
    inter = max(1, x.shape[-1] // 4)
    context = _conv_bn_relu(x, inter, 3, f"{name}-conva")
    context = CrissCrossAttention(reduction=reduction, recurrence=recurrence, name=f"{name}-cca")(
        context
    )
    context = _conv_bn_relu(context, inter, 3, f"{name}-convb")
    x = keras.layers.Concatenate(name=f"{name}-concat")([x, context])
    x = _conv_bn_relu(x, head_channels, 3, f"{name}-bottleneck")
    x = _dropout(x, dropout, f"{name}-dropout")
    return _classifier(x, num_classes, f"{name}-classifier")


def ocnet_head(
    x,
    num_classes,
    *,
    oc_mode="base",
    head_channels=512,
    dilations=(12, 24, 36),
    pyramid_sizes=(1, 2, 3, 6),
    dropout=0.05,
    name="head",
):
    """OCNet: Base-OC / Pyramid-OC after a 3x3 conv-BN-ReLU, or ASP-OC on the backbone map."""
    if oc_mode not in OC_MODES:
        raise ValueError(f"oc_mode must be one of {OC_MODES}, got {oc_mode!r}")
    common = dict(preset="official", dropout=dropout, out_channels=head_channels)
    if oc_mode == "asp":
        x = ObjectContext(mode="asp", dilations=tuple(dilations), name=f"{name}-oc", **common)(x)
    else:
        x = _conv_bn_relu(x, head_channels, 3, f"{name}-context")
        if oc_mode == "base":
            common.update(key_channels=head_channels // 2, value_channels=head_channels // 2)
        else:
            common.update(pyramid_sizes=tuple(pyramid_sizes))
        x = ObjectContext(mode=oc_mode, name=f"{name}-oc", **common)(x)
    return _classifier(x, num_classes, f"{name}-classifier")


def pan_head(features, num_classes, *, head_channels=32, gate_activation="sigmoid", name="head"):
    """PAN: FPA on the last stage, GAU decoders with stages 3, 2, 1, 3x3 classifier."""
    x = FeaturePyramidAttention(out_channels=head_channels, name=f"{name}-fpa")(features["stage4"])
    for stage in (3, 2, 1):
        x = GlobalAttentionUpsample(gate_activation=gate_activation, name=f"{name}-gau{stage}")(
            [features[f"stage{stage}"], x]
        )
    return _classifier(x, num_classes, f"{name}-classifier", kernel_size=3)


def segmentation_network(
    inputs,
    *,
    head,
    num_classes,
    classifier_activation="softmax",
    aux_head=False,
    backbone=None,
    output_stride=8,
    head_kwargs=None,
):
    """A dilated ResNet with a segmentation head; the output at the input's size.

    Args:
        inputs: the image tensor `(batch, height, width, 3)`.
        head: one of `HEADS`.
        num_classes: classes per pixel.
        classifier_activation: activation of the per-pixel scores (`None`: logits).
        aux_head: also return the auxiliary FCN head on stage 3 (for training); for the
            DANet head with `branch_classifiers=True`, its two branches' own maps instead
            (the official DANet's and pytorchcv's three outputs; no stage-3 head).
        backbone: `zoo.backbones.resnet.resnet_body` keyword arguments (default ResNet-50).
        output_stride: the backbone's output stride (8 or 16; 32 for no dilation).
        head_kwargs: keyword arguments of the head function (`head_channels`, ...).

    Returns:
        The `(batch, height, width, num_classes)` output tensor, or with `aux_head` a dict
        `{"segmentation": ..., "aux": ...}` of two such tensors (with DANet's branch
        classifiers `{"segmentation": ..., "position": ..., "channel": ...}`).
    """
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    features = resnet_body(inputs, **(backbone or RESNET50), output_stride=output_stride)
    head_kwargs = dict(head_kwargs or {})
    last = features["stage4"]
    if head == "pan":
        logits = pan_head(features, num_classes, **head_kwargs)
    else:
        function = {"fcn": fcn_head, "danet": danet_head, "ccnet": ccnet_head}
        logits = function.get(head, ocnet_head)(last, num_classes, **head_kwargs)
    branches = None
    if isinstance(logits, tuple):  # DANet with branch_classifiers
        logits, branches = logits
    outputs = {"segmentation": _upsample(logits, inputs, classifier_activation, "segmentation")}
    if aux_head and branches is not None:
        for branch, branch_logits in branches.items():
            outputs[branch] = _upsample(branch_logits, inputs, classifier_activation, branch)
    elif aux_head:
        aux = fcn_head(features[AUX_STAGE], num_classes, name="aux")
        outputs["aux"] = _upsample(aux, inputs, classifier_activation, "aux")
    return outputs if aux_head else outputs["segmentation"]


def _upsample(logits, inputs, classifier_activation, name):
    x = ResizeLike(name=f"{name}-upsample" if classifier_activation else name, dtype="float32")(
        [logits, inputs]
    )
    if classifier_activation is None:
        return x
    return keras.layers.Activation(classifier_activation, name=name, dtype="float32")(x)


def _network(head, backbone=None, output_stride=8, **head_defaults):
    """A registered model function: `segmentation_network` with this head's defaults;
    callers may override `output_stride`, `backbone` and any head argument."""

    def network(
        inputs,
        *,
        num_classes,
        classifier_activation="softmax",
        aux_head=False,
        output_stride=output_stride,
        backbone=backbone,
        **head_kwargs,
    ):
        return segmentation_network(
            inputs,
            head=head,
            num_classes=num_classes,
            classifier_activation=classifier_activation,
            aux_head=aux_head,
            backbone=backbone,
            output_stride=output_stride,
            head_kwargs={**head_defaults, **head_kwargs},
        )

    return network


# ResNet-50, output stride 8 (16 for PAN, as segmentation_models.pytorch); widths of the
# official heads.
fcn_resnet50 = _network("fcn")
danet_resnet50 = _network("danet")
ccnet_resnet50 = _network("ccnet", head_channels=512, recurrence=2)
ocnet_resnet50 = _network("ocnet", oc_mode="base", head_channels=512)
pan_resnet50 = _network("pan", output_stride=16, head_channels=32)

# The small variants trained here: a ResNet of basic blocks 16-64 wide with a 3x3 stem,
# output stride 8 (64 x 64 images give 8 x 8 maps), heads a few channels wide, ASPP
# dilations that fit 8 x 8 maps.
SMALL_BACKBONE = dict(
    block="basic", layers=(1, 1, 1, 1), channels=(16, 32, 64, 64), stem_type="deep", stem_width=16
)
fcn_small = _network("fcn", backbone=SMALL_BACKBONE)
danet_small = _network("danet", backbone=SMALL_BACKBONE, reduction=4)
ccnet_small = _network("ccnet", backbone=SMALL_BACKBONE, head_channels=32, reduction=4)
ocnet_small = _network(
    "ocnet", backbone=SMALL_BACKBONE, oc_mode="base", head_channels=32, dilations=(2, 4, 6)
)
pan_small = _network("pan", backbone=SMALL_BACKBONE, head_channels=16)
