"""NumPy transcription of PAN's `FPABlock` and `GAUBlock` from segmentation_models.pytorch,
the reimplementation `keras_attention.layers.pyramid_attention` follows (PAN has no
official code).

Source: qubvel-org/segmentation_models.pytorch,
`segmentation_models_pytorch/decoders/pan/decoder.py`, commit
b8586c797018235eff5eba8add4ca74a3a36b516. Each function follows its module's `forward` in
NCHW (float64), reading a state dict with smp's parameter names (`ConvBnRelu` = `.conv`
with bias, `.bn`, optional ReLU; `nn.Sequential` indices as in the module); `export_*`
writes a Keras layer's weights under those names. The GAU gate's sigmoid is smp's; the
`gate` argument swaps it for the paper's ReLU.
"""

from tests.keras_attention import official_code as O

# Keras unit of FeaturePyramidAttention -> smp FPABlock `ConvBnRelu` path
FPA_UNITS = {
    "global_branch": "branch1.1",
    "features": "mid.0",
    "down1": "down1.1",
    "down2": "down2.1",
    "down3a": "down3.1",
    "down3b": "down3.2",
    "up2": "conv2",
    "up1": "conv1",
}
# Keras unit of GlobalAttentionUpsample -> smp GAUBlock `ConvBnRelu` path
GAU_UNITS = {"gate": "conv1.1", "low": "conv2"}


def _export(layer, units):
    state = {}
    for attribute, key in units.items():
        conv, norm = getattr(layer, attribute)
        O.export_conv(state, key + ".conv", conv)
        O.export_batch_norm(state, key + ".bn", norm)
    return state


def export_fpa(layer):
    return _export(layer, FPA_UNITS)


def export_gau(layer):
    return _export(layer, GAU_UNITS)


def conv_bn(state, key, x, relu=True):
    """smp `ConvBnRelu` with `padding = kernel // 2` (every use in the PAN decoder)."""
    kernel = state[key + ".conv.weight"].shape[-1]
    y = O.batch_norm(state, key + ".bn", O.conv2d(state, key + ".conv", x, padding=kernel // 2))
    return O.relu(y) if relu else y


def global_average(x):
    """`nn.AdaptiveAvgPool2d(1)`."""
    return x.mean(axis=(2, 3), keepdims=True)


def smp_fpa_block(state, x):
    """`FPABlock.forward` (bilinear mode, corners aligned); returns `(output, map)` where
    `map` is the upsampled pyramid sum that multiplies the middle branch."""
    _, _, height, width = x.shape
    pooled = conv_bn(state, "branch1.1", global_average(x))
    pooled = O.upsample_bilinear_align_corners(pooled, (height, width))
    middle = conv_bn(state, "mid.0", x)
    x1 = conv_bn(state, "down1.1", O.max_pool2d(x, (2, 2)))
    x2 = conv_bn(state, "down2.1", O.max_pool2d(x1, (2, 2)))
    x3 = conv_bn(state, "down3.2", conv_bn(state, "down3.1", O.max_pool2d(x2, (2, 2))))
    x3 = O.upsample_bilinear_align_corners(x3, (height // 4, width // 4))
    merged = conv_bn(state, "conv2", x2) + x3
    merged = O.upsample_bilinear_align_corners(merged, (height // 2, width // 2))
    merged = merged + conv_bn(state, "conv1", x1)
    pyramid = O.upsample_bilinear_align_corners(merged, (height, width))
    return pyramid * middle + pooled, pyramid


def smp_gau_block(state, low, high, gate="sigmoid"):
    """`GAUBlock.forward(x=low, y=high)`; returns `(output, channel weights)`."""
    height, width = low.shape[2:]
    high_up = O.upsample_bilinear_align_corners(high, (height, width))
    low = conv_bn(state, "conv2", low)
    weights = conv_bn(state, "conv1.1", global_average(high), relu=False)
    weights = O.sigmoid(weights) if gate == "sigmoid" else O.relu(weights)
    return high_up + low * weights, weights
