"""2D pose estimators: a small two-stack hourglass (Newell et al., ECCV 2016) with and without
Chu et al.'s multi-context attention (CVPR 2017, "Multi-context attention for human pose
estimation").

Both map a 64x64 grey image to one 16x16 heatmap per joint (stride 4). A 3x3 stride-2 stem
and a stride-2 residual unit bring the image to 16x16; each stack is an hourglass of depth 3
(16 -> 8 -> 4 -> 2 and back, a residual unit per level on both paths and on each skip),
a residual unit and a 1x1 convolution (`stackS-features`), then a 1x1 heatmap head
(`stackS-heatmaps`); the next stack's input adds 1x1 projections of the features and the
heatmaps to this stack's input (intermediate supervision: `intermediate_outputs=True` returns
every stack's heatmaps). A residual unit is `relu(x + bn(conv3x3(x)))` (one convolution, to fit
the CPU budget; a 1x1 projection where the width or stride changes).

`mca_hourglass_pose` adds the paper's attention (section 3), scaled down:

- multi-resolution holistic attention in every stack: a `MultiContextAttention` map (3
  mean-field steps with a shared pairwise kernel) from the stack's features at 16x16 and
  another from the hourglass decoder's 8x8 output, upsampled; the features are scaled by
  the mean of the two maps before the heatmap head and the next stack;
- part attention in the last stack: one map per joint from the attended features; joint
  `k`'s heatmap is its map times its 1x1 classifier's score, `a_k * (w_k . f + b_k)`.
  The paper applies each part's classifier to its part-attended features `a_k * f`; for a
  linear classifier that is `a_k * (w_k . f) + b_k`, the same but for the bias, which here
  is gated too, and this form needs no `joints` copies of the features.

With every map equal to 1 the attention model computes the baseline's function (the mean of
two maps of 1 is 1), and its other layers have the baseline's names and shapes, so baseline
weights load into it by name (tests/zoo/test_pose.py checks both).
"""

import keras
from keras import layers

from keras_attention.layers import MultiContextAttention
from zoo.backbones.common import BN_EPSILON, BN_MOMENTUM

WIDTH = 32
DEPTH = 3  # hourglass levels below 16x16
MEAN_FIELD_STEPS = 3


def _bn(x, *, name):
    return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)(x)


def _residual(x, filters, strides=1, *, name):
    shortcut = x
    y = layers.Conv2D(filters, 3, strides, padding="same", use_bias=False, name=f"{name}-conv")(x)
    y = _bn(y, name=f"{name}-bn")
    if strides != 1 or shortcut.shape[-1] != filters:
        shortcut = layers.Conv2D(
            filters, 1, strides, use_bias=False, name=f"{name}-downsample-conv"
        )(shortcut)
        shortcut = _bn(shortcut, name=f"{name}-downsample-bn")
    return layers.ReLU(name=f"{name}-act")(layers.Add(name=f"{name}-add")([y, shortcut]))


def _hourglass(x, level, *, name, decoder):
    """Newell's recursive hourglass; `decoder[level]` collects each level's output."""
    skip = _residual(x, WIDTH, name=f"{name}-skip{level}")
    low = layers.MaxPooling2D(2, name=f"{name}-pool{level}")(x)
    low = _residual(low, WIDTH, name=f"{name}-down{level}")
    if level > 1:
        low = _hourglass(low, level - 1, name=name, decoder=decoder)
    else:
        low = _residual(low, WIDTH, name=f"{name}-bottom")
    low = _residual(low, WIDTH, name=f"{name}-up{level}")
    up = layers.UpSampling2D(2, name=f"{name}-upsample{level}")(low)
    out = layers.Add(name=f"{name}-merge{level}")([skip, up])
    decoder[level] = out
    return out


def _holistic_attention(features, coarse, *, name):
    """Scale `features` by the mean of a map from them and an upsampled map from `coarse`."""
    _, fine_map = MultiContextAttention(steps=MEAN_FIELD_STEPS, name=f"{name}-attention")(
        features, return_attention=True
    )
    _, coarse_map = MultiContextAttention(steps=MEAN_FIELD_STEPS, name=f"{name}-attention8")(
        coarse, return_attention=True
    )
    coarse_map = layers.UpSampling2D(2, interpolation="bilinear", name=f"{name}-attention-up")(
        coarse_map
    )
    attention = layers.Average(name=f"{name}-attention-mean")([fine_map, coarse_map])
    return layers.Multiply(name=f"{name}-attended")([features, attention])


def build_hourglass_pose(
    input_shape=(64, 64, 1),
    num_classes=9,
    classifier_activation=None,
    stacks=2,
    attention=False,
    intermediate_outputs=False,
    name="hourglass_pose",
):
    """The small stacked hourglass.

    Args:
        input_shape: `(height, width, channels)`, height and width multiples of 32.
        num_classes: joints (heatmap channels).
        classifier_activation: None or `"linear"`: the heatmaps are a linear regression of
            Gaussian bumps. `"softmax"`, the zoo's default for classifiers, is read as None.
        stacks: hourglasses in sequence.
        attention: add multi-context attention (see the module docstring).
        intermediate_outputs: return every stack's heatmaps (a list, for intermediate
            supervision) instead of the last stack's.
        name: the model's name.

    Returns:
        A functional `keras.Model` from images to `(batch, height / 4, width / 4,
        num_classes)` heatmaps.
    """
    if classifier_activation not in (None, "linear", "softmax"):
        raise ValueError(
            f"classifier_activation: pose heatmaps are linear; pass None, got "
            f"{classifier_activation!r}"
        )
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape}")
    for size in input_shape[:2]:
        if size is not None and size % 32:
            raise ValueError(
                f"input_shape: height and width must be multiples of 32, got {input_shape}"
            )
    inputs = keras.Input(input_shape, name="image")
    x = layers.Conv2D(WIDTH // 2, 3, 2, padding="same", use_bias=False, name="stem-conv")(inputs)
    x = layers.ReLU(name="stem-act")(_bn(x, name="stem-bn"))
    x = _residual(x, WIDTH, strides=2, name="stem-res")
    outputs = []
    for stack in range(1, stacks + 1):
        prefix = f"stack{stack}"
        decoder = {}
        y = _hourglass(x, DEPTH, name=f"{prefix}-hourglass", decoder=decoder)
        y = _residual(y, WIDTH, name=f"{prefix}-res")
        y = layers.Conv2D(WIDTH, 1, use_bias=False, name=f"{prefix}-features")(y)
        features = layers.ReLU(name=f"{prefix}-features-act")(_bn(y, name=f"{prefix}-features-bn"))
        if attention:
            features = _holistic_attention(features, decoder[DEPTH - 1], name=prefix)
        heatmaps = layers.Conv2D(num_classes, 1, name=f"{prefix}-heatmaps", dtype="float32")(
            features
        )
        if attention and stack == stacks:
            _, parts = MultiContextAttention(
                mode="part",
                parts=num_classes,
                steps=MEAN_FIELD_STEPS,
                name=f"{prefix}-part-attention",
                dtype="float32",
            )(features, return_attention=True)
            heatmaps = layers.Multiply(name=f"{prefix}-part-attended")([heatmaps, parts])
        outputs.append(heatmaps)
        if stack < stacks:
            x = layers.Add(name=f"{prefix}-next")(
                [
                    x,
                    layers.Conv2D(WIDTH, 1, name=f"{prefix}-next-features")(features),
                    layers.Conv2D(WIDTH, 1, name=f"{prefix}-next-heatmaps")(heatmaps),
                ]
            )
    return keras.Model(inputs, outputs if intermediate_outputs else outputs[-1], name=name)


def hourglass_pose(input_shape, num_classes, **kwargs):
    return build_hourglass_pose(input_shape, num_classes, name="hourglass_pose", **kwargs)


def mca_hourglass_pose(input_shape, num_classes, **kwargs):
    return build_hourglass_pose(
        input_shape, num_classes, attention=True, name="mca_hourglass_pose", **kwargs
    )
