"""Building blocks shared by the zoo's backbones, matching PyTorch numerics exactly.

PyTorch pads a strided convolution symmetrically (``padding = ((stride - 1) + dilation *
(kernel - 1)) // 2``, timm's ``get_padding``), while Keras' ``padding="same"`` puts the extra
row and column at the bottom and right. Converted weights only reproduce timm's logits with
the same padding, so strided convolutions and pools pad explicitly here. BatchNorm uses
PyTorch's defaults (``eps=1e-5``, momentum 0.1, i.e. Keras ``momentum=0.9``).

Layer names are the module paths of the timm model the backbone mirrors with ``-`` for ``.``
(timm's ``layer1.0.conv1`` is the layer ``layer1-0-conv1``): all the timm converter needs to
find each weight. Not the dot itself, because Keras' PyTorch backend keys variables by their
path in a ``torch.nn.ParameterDict``, which refuses dots.
"""

import keras

from keras_attention.convolution import GroupedConv2D

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9


def timm_path(layer_name):
    """The timm module path a zoo layer name stands for (``layer1-0-se`` -> ``layer1.0.se``)."""
    return layer_name.replace("-", ".")


def torch_padding(kernel_size, stride=1, dilation=1):
    """timm's ``get_padding``: the symmetric padding PyTorch models use."""
    return ((stride - 1) + dilation * (kernel_size - 1)) // 2


def conv2d(x, filters, kernel_size, *, strides=1, groups=1, dilation_rate=1, use_bias=False, name):
    """A convolution padded like PyTorch's (symmetric), ``name`` = the timm module path.
    Grouped ones are `GroupedConv2D`, which TF Serving runs without XLA."""
    padding = torch_padding(kernel_size, strides, dilation_rate)
    if strides == 1 and 2 * padding == dilation_rate * (kernel_size - 1):
        mode = "same" if padding else "valid"
    else:
        if padding:
            x = keras.layers.ZeroPadding2D(padding, name=f"{name}-pad")(x)
        mode = "valid"
    conv_class = GroupedConv2D if groups > 1 else keras.layers.Conv2D
    return conv_class(
        filters,
        kernel_size,
        strides=strides,
        padding=mode,
        groups=groups,
        dilation_rate=dilation_rate,
        use_bias=use_bias,
        name=name,
    )(x)


def batch_norm(x, *, name):
    return keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)(x)


def max_pool(x, pool_size=3, strides=2, *, name):
    """``nn.MaxPool2d(pool_size, strides, padding=pool_size // 2)``. Zero padding equals
    PyTorch's -inf padding because every caller pools non-negative (post-ReLU) maps."""
    padding = pool_size // 2
    if padding:
        x = keras.layers.ZeroPadding2D(padding, name=f"{name}-pad")(x)
    return keras.layers.MaxPooling2D(pool_size, strides, padding="valid", name=name)(x)


def avg_pool_downsample(x, *, name):
    """``nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)`` (the "d" shortcut):
    Keras' "same" average pooling also pads at the end only and excludes the padding."""
    return keras.layers.AveragePooling2D(2, 2, padding="same", name=name)(x)
