"""Video classifiers: a small C2D ResNet (Wang et al., CVPR 2018, "Non-local Neural
Networks", section 4.1) with and without 3D non-local blocks.

C2D applies only 2D convolutions: every kernel has temporal extent 1 (`Conv3D` with kernel
`(1, k, k)`), so frames meet for the first time in the global average pool before the
classifier, unless a `keras_attention.layers.NonLocal` block (embedded Gaussian over all
`time x height x width` positions) lets them meet earlier. The paper's C2D is a ResNet-50
with non-local blocks in res3 and res4; these are scaled to 8-frame 32x32 clips (a 3x3
stride-2 stem, three stages of one basic block, 16, 32 and 64 wide, spatial stride 2 in
stages 2 and 3, time never pooled) and trained from scratch on
`zoo.tasks.moving_mnist_clips` (tools/train_video.py).

`c2d_small` is the baseline; `nonlocal_c2d_small` is the same network with one `NonLocal`
block after each of stages 2 and 3 (`stage2-nl`, `stage3-nl`). A fresh block is the identity
(its output BatchNorm's gamma starts at 0), so the two compute the same function at
initialisation given the same convolution weights.
"""

import keras
from keras import layers

from keras_attention.layers import NonLocal
from zoo.backbones.common import BN_EPSILON, BN_MOMENTUM

WIDTHS = (16, 32, 64)
STRIDES = (2, 1, 2)  # spatial strides of the stages: 32x32 clips give 8x8, 8x8 and 4x4 maps


def _conv(x, filters, kernel_size, strides=1, *, name):
    """A per-frame 2D convolution (a `Conv3D` with temporal kernel 1, computed frame by
    frame, which is several times faster on CPUs)."""
    conv = layers.Conv2D(
        filters, kernel_size, strides=strides, padding="same", use_bias=False, name=name
    )
    return layers.TimeDistributed(conv, name=f"{name}-frames")(x)


def _bn(x, *, name):
    return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)(x)


def _basic_block(x, filters, strides, *, name):
    shortcut = x
    x = _conv(x, filters, 3, strides, name=f"{name}-conv1")
    x = layers.ReLU(name=f"{name}-act1")(_bn(x, name=f"{name}-bn1"))
    x = _bn(_conv(x, filters, 3, name=f"{name}-conv2"), name=f"{name}-bn2")
    if strides != 1 or shortcut.shape[-1] != filters:
        shortcut = _conv(shortcut, filters, 1, strides, name=f"{name}-downsample-conv")
        shortcut = _bn(shortcut, name=f"{name}-downsample-bn")
    x = layers.Add(name=f"{name}-add")([x, shortcut])
    return layers.ReLU(name=f"{name}-act2")(x)


def build_c2d(
    input_shape=(8, 32, 32, 1),
    num_classes=10,
    classifier_activation="softmax",
    nonlocal_stages=(),
    widths=WIDTHS,
    name="c2d_small",
):
    """The small C2D ResNet.

    Args:
        input_shape: `(frames, height, width, channels)`; any sizes (`None` allowed).
        num_classes: classifier width.
        classifier_activation: `"softmax"` or `None` (logits).
        nonlocal_stages: the stages (1-based) followed by a `NonLocal` block.
        widths: the three stages' widths (the stem has the first).
        name: the model's name.

    Returns:
        A functional `keras.Model` from clips `(batch, *input_shape)` to class scores.
    """
    input_shape = tuple(input_shape)
    if len(input_shape) != 4:
        raise ValueError(
            f"input_shape must be (frames, height, width, channels), got {input_shape}"
        )
    unknown = set(nonlocal_stages) - {1, 2, 3}
    if unknown:
        raise ValueError(f"nonlocal_stages must be among 1, 2 and 3, got {nonlocal_stages!r}")
    inputs = keras.Input(input_shape, name="clip")
    x = _conv(inputs, widths[0], 3, 2, name="conv1")
    x = layers.ReLU(name="act1")(_bn(x, name="bn1"))
    for stage, (filters, strides) in enumerate(zip(widths, STRIDES), start=1):
        x = _basic_block(x, filters, strides, name=f"stage{stage}")
        if stage in nonlocal_stages:
            # phi and g max-pooled 2x in space where the map is at least 8x8 (the paper's
            # subsampling), so the 8x8x8 map of stage 2 attends over 8x4x4 keys
            subsample = x.shape[2] is None or x.shape[2] >= 8
            x = NonLocal(subsample=subsample, name=f"stage{stage}-nl")(x)
    x = layers.GlobalAveragePooling3D(name="global_pool")(x)
    x = layers.Dense(num_classes, name="fc", dtype="float32")(x)
    if classifier_activation is not None:
        x = layers.Activation(classifier_activation, name="predictions", dtype="float32")(x)
    return keras.Model(inputs, x, name=name)


def c2d_small(input_shape, num_classes, **kwargs):
    return build_c2d(input_shape, num_classes, name="c2d_small", **kwargs)


def nonlocal_c2d_small(input_shape, num_classes, **kwargs):
    return build_c2d(
        input_shape, num_classes, nonlocal_stages=(2, 3), name="nonlocal_c2d_small", **kwargs
    )
