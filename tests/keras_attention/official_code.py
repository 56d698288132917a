"""NumPy transcriptions of the papers' official PyTorch modules, for the fidelity tests.

Each transcription follows its module's `forward` step by step in the official NCHW layout
and reads a state dict with PyTorch's parameter names and layouts (`OIHW` convolution
kernels, BatchNorm `weight` / `bias` / `running_mean` / `running_var`). The tests fill a
Keras layer with random weights and BN statistics, export them to such a state dict with
`export_*` below, and compare the layer's output (float32) with the transcription
(float64) at 1e-5 relative. The source repository, file and commit of each module are in
its docstring. Official bugs the layers do not reproduce are transcribed as they are, so
the tests can show where they matter.
"""

import math

import keras
import numpy as np

EPS = 1e-5  # PyTorch's BatchNorm / LayerNorm / GroupNorm default


def numpy64(x):
    return np.asarray(keras.ops.convert_to_numpy(x)).astype("float64")


def to_nchw(x):
    return np.transpose(np.asarray(x, "float64"), (0, 3, 1, 2))


def to_nhwc(x):
    return np.transpose(x, (0, 2, 3, 1))


# --------------------------------------------------------------------------------------
# Exports: Keras sublayers -> PyTorch state dict entries


def export_conv(state, key, conv):
    """A Keras Conv2D (kernel HWIO) as a PyTorch conv (`key.weight` OIHW, `key.bias`)."""
    state[key + ".weight"] = np.transpose(numpy64(conv.kernel), (3, 2, 0, 1))
    if conv.use_bias:
        state[key + ".bias"] = numpy64(conv.bias)


def export_dense_as_conv1x1(state, key, dense):
    """A Keras Dense on channels-last tokens as a PyTorch 1x1 conv (`OI11`)."""
    state[key + ".weight"] = numpy64(dense.kernel).T[:, :, None, None]
    if dense.use_bias:
        state[key + ".bias"] = numpy64(dense.bias)


def export_batch_norm(state, key, norm):
    state[key + ".weight"] = numpy64(norm.gamma)
    state[key + ".bias"] = numpy64(norm.beta)
    state[key + ".running_mean"] = numpy64(norm.moving_mean)
    state[key + ".running_var"] = numpy64(norm.moving_variance)


def export_affine_norm(state, key, norm, shape):
    """LayerNorm / GroupNorm affine parameters, reshaped to the PyTorch module's shape."""
    state[key + ".weight"] = numpy64(norm.gamma).reshape(shape)
    state[key + ".bias"] = numpy64(norm.beta).reshape(shape)


# --------------------------------------------------------------------------------------
# NCHW building blocks (PyTorch semantics)


def conv2d(state, key, x, padding=0, dilation=1):
    """`nn.Conv2d` (stride 1, zero padding) with `key.weight` and an optional `key.bias`."""
    w = state[key + ".weight"]
    out_channels, _, kh, kw = w.shape
    n, _, h, wd = x.shape
    oh = h + 2 * padding - dilation * (kh - 1)
    ow = wd + 2 * padding - dilation * (kw - 1)
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    out = np.zeros((n, out_channels, oh, ow))
    for i in range(kh):
        for j in range(kw):
            window = padded[
                :, :, i * dilation : i * dilation + oh, j * dilation : j * dilation + ow
            ]
            out += np.einsum("nchw,oc->nohw", window, w[:, :, i, j])
    if key + ".bias" in state:
        out += state[key + ".bias"][None, :, None, None]
    return out


def grouped_conv1x1(state, key, x, groups):
    """A bias-free 1x1 `nn.Conv2d(..., groups=groups)`."""
    w = state[key + ".weight"][:, :, 0, 0]  # (O, I / groups)
    out_per_group, in_per_group = w.shape[0] // groups, w.shape[1]
    parts = [
        np.einsum(
            "nchw,oc->nohw",
            x[:, g * in_per_group : (g + 1) * in_per_group],
            w[g * out_per_group : (g + 1) * out_per_group],
        )
        for g in range(groups)
    ]
    return np.concatenate(parts, axis=1)


def batch_norm(state, key, x):
    """`nn.BatchNorm2d` / `BatchNorm1d` in eval mode (channels on axis 1)."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean = state[key + ".running_mean"].reshape(shape)
    var = state[key + ".running_var"].reshape(shape)
    return (x - mean) / np.sqrt(var + EPS) * state[key + ".weight"].reshape(shape) + state[
        key + ".bias"
    ].reshape(shape)


def relu(x):
    return np.maximum(x, 0.0)


def leaky_relu(x, slope=0.01):
    return np.where(x >= 0, x, slope * x)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def max_pool2d(x, kernel):
    """`nn.MaxPool2d(kernel_size=kernel)` (stride = kernel, floor mode, no padding)."""
    kh, kw = kernel
    n, c, h, w = x.shape
    oh, ow = h // kh, w // kw
    x = x[:, :, : oh * kh, : ow * kw].reshape(n, c, oh, kh, ow, kw)
    return x.max(axis=(3, 5))


def upsample_bilinear_align_corners(x, size):
    """`F.upsample(x, size, mode="bilinear", align_corners=True)`, by explicit neighbours."""
    n, c, h, w = x.shape
    oh, ow = size

    def coordinates(out_size, in_size):
        scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        source = np.arange(out_size) * scale
        low = np.floor(source).astype(int)
        high = np.minimum(low + 1, in_size - 1)
        return low, high, source - low

    y0, y1, fy = coordinates(oh, h)
    x0, x1, fx = coordinates(ow, w)
    top = x[:, :, y0][..., x0] * (1 - fx) + x[:, :, y0][..., x1] * fx
    bottom = x[:, :, y1][..., x0] * (1 - fx) + x[:, :, y1][..., x1] * fx
    return top * (1 - fy)[:, None] + bottom * fy[:, None]


# --------------------------------------------------------------------------------------
# Non-local: mmcv


def export_non_local(layer):
    """State dict of mmcv `NonLocal2d(norm_cfg=dict(type="BN"))` for a `NonLocal` layer."""
    state = {}
    names = ["g"] if layer.pairwise == "gaussian" else ["g", "theta", "phi"]
    for name in names:
        export_dense_as_conv1x1(state, name + ".conv", getattr(layer, name))
    export_dense_as_conv1x1(state, "conv_out.conv", layer.out)
    export_batch_norm(state, "conv_out.bn", layer.out_norm)
    if layer.pairwise == "concatenation":
        export_dense_as_conv1x1(state, "concat_project.conv", layer.concat_project)
    return state


def mmcv_non_local_2d(state, x, mode, use_scale=True, sub_sample=False):
    """mmcv `NonLocal2d` with `norm_cfg=dict(type="BN")`, eval mode: `_NonLocalNd.forward`
    and its pairwise functions (`gaussian` has no scaling; `embedded_gaussian` divides by
    `sqrt(inter_channels)` when `use_scale`).

    Source: open-mmlab/mmcv, `mmcv/cnn/bricks/non_local.py`, commit
    a8073c74bf83d62ec36a103f835faa4837fb6585.
    """
    n = x.shape[0]

    def pool(y):
        return max_pool2d(y, (2, 2)) if sub_sample else y

    def flat(y):  # (N, C, H, W) -> (N, C, HW)
        return y.reshape(n, y.shape[1], -1)

    g_x = flat(pool(conv2d(state, "g.conv", x))).transpose(0, 2, 1)
    if mode == "gaussian":
        theta_x = flat(x).transpose(0, 2, 1)
        phi_x = flat(pool(x))
    else:
        theta_x = flat(conv2d(state, "theta.conv", x)).transpose(0, 2, 1)
        phi_x = flat(pool(conv2d(state, "phi.conv", x)))
    pairwise = theta_x @ phi_x
    if mode == "embedded_gaussian" and use_scale:
        pairwise = pairwise / theta_x.shape[-1] ** 0.5
    if mode in ("gaussian", "embedded_gaussian"):
        pairwise = softmax(pairwise)
    elif mode == "dot_product":
        pairwise = pairwise / pairwise.shape[-1]
    else:
        raise ValueError(f"mode {mode!r} is not transcribed")
    y = (pairwise @ g_x).transpose(0, 2, 1).reshape(n, -1, *x.shape[2:])
    return x + batch_norm(state, "conv_out.bn", conv2d(state, "conv_out.conv", y))


# --------------------------------------------------------------------------------------
# GCNet: ContextBlock


def export_global_context(layer):
    """State dict of GCNet's `ContextBlock` for a `GlobalContext` layer."""
    state = {}
    if layer.attention is not None:
        export_conv(state, "conv_mask", layer.attention)
    official = {"add": "channel_add_conv", "multiply": "channel_mul_conv"}
    for fusion in layer.fusions:
        reduce, norm, expand = layer.transform(fusion)
        key = official[fusion]
        export_conv(state, key + ".0", reduce)
        export_affine_norm(state, key + ".1", norm, (-1, 1, 1))
        export_conv(state, key + ".3", expand)
    return state


def gcnet_context_block(state, x, pooling_type="att", fusion_types=("channel_add",)):
    """GCNet's `ContextBlock.forward`: attention (or average) pooling, then the
    `channel_mul` gate and the `channel_add` term, in that order whatever the order of
    `fusion_types`. `nn.LayerNorm([planes, 1, 1])` normalises over the `planes` values.

    Source: xvjiarui/GCNet, `mmdet/ops/gcb/context_block.py`, commit
    029db5407dc27147eb1d41f62b09dfed8ec88837 (the same block is mmcv's `ContextBlock`).
    """
    n, c, h, w = x.shape
    if pooling_type == "att":
        mask = softmax(conv2d(state, "conv_mask", x).reshape(n, 1, h * w), axis=2)
        context = (x.reshape(n, c, h * w) @ mask.transpose(0, 2, 1)).reshape(n, c, 1, 1)
    else:
        context = x.mean(axis=(2, 3), keepdims=True)

    def transform(key):
        y = conv2d(state, key + ".0", context)
        mean = y.mean(axis=(1, 2, 3), keepdims=True)
        var = y.var(axis=(1, 2, 3), keepdims=True)
        y = (y - mean) / np.sqrt(var + EPS) * state[key + ".1.weight"] + state[key + ".1.bias"]
        return conv2d(state, key + ".3", relu(y))

    out = x
    if "channel_mul" in fusion_types:
        out = out * sigmoid(transform("channel_mul_conv"))
    if "channel_add" in fusion_types:
        out = out + transform("channel_add_conv")
    return out


# --------------------------------------------------------------------------------------
# CGNL: SpatialCGNL / SpatialCGNLx


def export_cgnl(layer):
    """State dict of CGNL's `SpatialCGNL` / `SpatialCGNLx` for a
    `CompactGeneralizedNonLocal` layer."""
    state = {}
    for keras_name, key in (("theta", "t"), ("phi", "p"), ("g", "g"), ("z", "z")):
        export_conv(state, key, getattr(layer, keras_name))
    export_affine_norm(state, "gn", layer.norm, (-1,))
    return state


def cgnl_official(state, x, groups, kernel, use_scale=False, order=2):
    """`SpatialCGNL.forward` (dot kernel) or `SpatialCGNLx.forward` (Gaussian RBF kernel:
    Taylor terms `sqrt((2 gamma)^p / p! * beta) t^p`, `p^p` with gamma fixed at 1e-4 and
    the constant `beta = exp(-2 gamma)`), then the grouped `z`, GroupNorm and the residual.

    Source: KaiyuYue/cgnl-network.pytorch, `model/resnet.py`, commit
    33e348bce7ba0f6141ec23ade7f4216851e1e1d6.
    """
    t, p, g = (conv2d(state, key, x) for key in ("t", "p", "g"))
    b, c, h, w = t.shape

    def dot(t, p, g, c):
        att = p.reshape(b, 1, -1) @ g.reshape(b, -1, 1)
        if use_scale:
            att = att / (c * h * w) ** 0.5
        return (att @ t.reshape(b, 1, -1)).reshape(b, c, h, w)

    def gaussian(t, p, g, c):
        t, p, g = t.reshape(b, 1, -1), p.reshape(b, 1, -1), g.reshape(b, -1, 1)
        gamma = 1e-4
        beta = math.exp(-2 * gamma)
        alphas = [math.sqrt((2 * gamma) ** k / math.factorial(k) * beta) for k in range(order + 1)]
        t_taylor = np.concatenate([t**k * a for k, a in enumerate(alphas)], axis=1)
        p_taylor = np.concatenate([p**k * a for k, a in enumerate(alphas)], axis=1)
        att = p_taylor @ g
        if use_scale:
            att = att / (c * h * w) ** 0.5
        att = att.reshape(b, 1, order + 1)
        return (att @ t_taylor).reshape(b, c, h, w)

    kernel_fn = dot if kernel == "dot" else gaussian
    size = c // groups
    y = np.concatenate(
        [
            kernel_fn(
                t[:, i * size : (i + 1) * size],
                p[:, i * size : (i + 1) * size],
                g[:, i * size : (i + 1) * size],
                size,
            )
            for i in range(groups)
        ],
        axis=1,
    )
    z = grouped_conv1x1(state, "z", y, groups)
    zg = z.reshape(b, groups, -1)
    normed = (
        (zg - zg.mean(axis=2, keepdims=True)) / np.sqrt(zg.var(axis=2, keepdims=True) + EPS)
    ).reshape(z.shape)
    shape = (1, -1, 1, 1)
    return normed * state["gn.weight"].reshape(shape) + state["gn.bias"].reshape(shape) + x


# --------------------------------------------------------------------------------------
# OCNet: BaseOC_Module, Pyramid_OC_Module, ASP_OC_Module


OCNET_SOURCE = (
    "openseg-group/OCNet.pytorch, `oc_module/base_oc_block.py`, "
    "`oc_module/pyramid_oc_block.py`, `oc_module/asp_oc_block.py`, commit "
    "679a45b8996c583817bbdde81971a47d71c7654e"
)


def inplace_abn(state, key, x):
    """`InPlaceABNSync(C)` with its defaults: BatchNorm then leaky ReLU, slope 0.01
    (`inplace_abn/bn.py` of the same commit)."""
    return leaky_relu(batch_norm(state, key, x))


def _export_attention_block(state, key, stage):
    conv_key, key_norm, value, out = stage
    export_conv(state, key + ".f_key.0", conv_key)
    export_batch_norm(state, key + ".f_key.1", key_norm)
    export_conv(state, key + ".f_value", value)
    export_conv(state, key + ".W", out)


def export_object_context(layer):
    """State dict of OCNet's `BaseOC_Module` / `Pyramid_OC_Module` / `ASP_OC_Module` for
    an `ObjectContext` layer (`mode` "base", "pyramid", "asp")."""
    state = {}
    if layer.mode == "base":
        _export_attention_block(state, "stages.0", layer.stages[0])
    elif layer.mode == "pyramid":
        for i, stage in enumerate(layer.stages):
            _export_attention_block(state, f"stages.{i}", stage)
        export_conv(state, "up_dr.0", layer.widen)
        export_batch_norm(state, "up_dr.1", layer.widen_norm)
    else:
        export_conv(state, "context.0", layer.context_conv)
        export_batch_norm(state, "context.1", layer.context_norm)
        _export_attention_block(state, "context.2.stages.0", layer.stages[0])
        export_conv(state, "context.2.conv_bn_dropout.0", layer.context_project)
        export_batch_norm(state, "context.2.conv_bn_dropout.1", layer.context_project_norm)
        for i, (conv, norm) in enumerate(zip(layer.aspp_convs, layer.aspp_norms)):
            export_conv(state, f"conv{i + 2}.0", conv)
            export_batch_norm(state, f"conv{i + 2}.1", norm)
    export_conv(state, "conv_bn_dropout.0", layer.fuse)
    export_batch_norm(state, "conv_bn_dropout.1", layer.fuse_norm)
    return state


def ocnet_self_attention_block(state, key, x, key_channels, scale=1):
    """`_SelfAttentionBlock.forward`: max-pool by `scale`, shared query / key
    `f_key` (conv + InPlaceABNSync), value, `key_channels ** -0.5` softmax attention, `W`,
    and a bilinear (corners aligned) upsample back when `scale > 1`."""
    n, _, h, w = x.shape
    if scale > 1:
        x = max_pool2d(x, (scale, scale))
    value = conv2d(state, key + ".f_value", x)
    value_channels = value.shape[1]
    value = value.reshape(n, value_channels, -1).transpose(0, 2, 1)
    query = inplace_abn(state, key + ".f_key.1", conv2d(state, key + ".f_key.0", x))
    query = query.reshape(n, key_channels, -1)
    sim_map = softmax(key_channels**-0.5 * (query.transpose(0, 2, 1) @ query))
    context = (sim_map @ value).transpose(0, 2, 1).reshape(n, value_channels, *x.shape[2:])
    context = conv2d(state, key + ".W", context)
    if scale > 1:
        context = upsample_bilinear_align_corners(context, (h, w))
    return context


def ocnet_base_oc(state, x, key_channels):
    """`BaseOC_Module.forward` (sizes `[1]`, eval mode)."""
    context = ocnet_self_attention_block(state, "stages.0", x, key_channels)
    fused = conv2d(state, "conv_bn_dropout.0", np.concatenate([context, x], axis=1))
    return inplace_abn(state, "conv_bn_dropout.1", fused)


def ocnet_pyramid_oc(state, x, sizes):
    """`Pyramid_OC_Module.forward` with `_PyramidSelfAttentionBlock` (key width
    `in_channels // 2`, value width `in_channels`), eval mode."""
    n, c, h, w = x.shape
    key_channels = c // 2
    contexts = [inplace_abn(state, "up_dr.1", conv2d(state, "up_dr.0", x))]
    for index, scale in enumerate(sizes):
        key = f"stages.{index}"
        value = conv2d(state, key + ".f_value", x)
        query = inplace_abn(state, key + ".f_key.1", conv2d(state, key + ".f_key.0", x))
        step_h, step_w = h // scale, w // scale
        rows = []
        for i in range(scale):
            row = []
            for j in range(scale):
                x0, y0 = i * step_h, j * step_w
                x1 = h if i == scale - 1 else min(x0 + step_h, h)
                y1 = w if j == scale - 1 else min(y0 + step_w, w)
                v = value[:, :, x0:x1, y0:y1]
                q = query[:, :, x0:x1, y0:y1].reshape(n, key_channels, -1)
                sim = softmax(key_channels**-0.5 * (q.transpose(0, 2, 1) @ q))
                local = sim @ v.reshape(n, v.shape[1], -1).transpose(0, 2, 1)
                row.append(local.transpose(0, 2, 1).reshape(v.shape))
            rows.append(np.concatenate(row, axis=3))
        contexts.append(conv2d(state, key + ".W", np.concatenate(rows, axis=2)))
    fused = conv2d(state, "conv_bn_dropout.0", np.concatenate(contexts, axis=1))
    return inplace_abn(state, "conv_bn_dropout.1", fused)


def ocnet_asp_oc(state, x, out_features, dilations):
    """`ASP_OC_Module.forward` (eval mode): the context branch (3x3 conv + ABN, then
    `BaseOC_Context_Module` with key width `out_features // 2`, value width
    `out_features` and `sizes=[2]`), the 1x1 and three dilated 3x3 branches, concatenated
    (`5 * out_features`) and fused by a bias-free 1x1 conv + ABN to `2 * out_features`."""
    feat = inplace_abn(state, "context.1", conv2d(state, "context.0", x, padding=1))
    feat = ocnet_self_attention_block(state, "context.2.stages.0", feat, out_features // 2, scale=2)
    feat1 = inplace_abn(
        state, "context.2.conv_bn_dropout.1", conv2d(state, "context.2.conv_bn_dropout.0", feat)
    )
    feats = [feat1, inplace_abn(state, "conv2.1", conv2d(state, "conv2.0", x))]
    for i, d in enumerate(dilations):
        key = f"conv{i + 3}"
        feats.append(
            inplace_abn(state, key + ".1", conv2d(state, key + ".0", x, padding=d, dilation=d))
        )
    fused = conv2d(state, "conv_bn_dropout.0", np.concatenate(feats, axis=1))
    return inplace_abn(state, "conv_bn_dropout.1", fused)


# --------------------------------------------------------------------------------------
# BAM


def export_bam(layer):
    """State dict of the official `BAM` (`channel_att.gate_c`, `spatial_att.gate_s`)."""
    state = {}
    c = "channel_att.gate_c."
    state[c + "gate_c_fc_0.weight"] = numpy64(layer.channel_reduce.kernel).T
    state[c + "gate_c_fc_0.bias"] = numpy64(layer.channel_reduce.bias)
    export_batch_norm(state, c + "gate_c_bn_1", layer.channel_norm)
    state[c + "gate_c_fc_final.weight"] = numpy64(layer.channel_expand.kernel).T
    state[c + "gate_c_fc_final.bias"] = numpy64(layer.channel_expand.bias)
    s = "spatial_att.gate_s."
    export_conv(state, s + "gate_s_conv_reduce0", layer.spatial_reduce)
    export_batch_norm(state, s + "gate_s_bn_reduce0", layer.spatial_reduce_norm)
    for i, (conv, norm) in enumerate(zip(layer.dilated_convs, layer.dilated_norms)):
        export_conv(state, s + f"gate_s_conv_di_{i}", conv)
        export_batch_norm(state, s + f"gate_s_bn_di_{i}", norm)
    export_conv(state, s + "gate_s_conv_final", layer.spatial_final)
    return state


def bam_official(state, x, dilation=4, num_dilated=2):
    """The official `BAM.forward` in eval mode, bug included: the channel gate pools with
    `F.avg_pool2d(x, H, stride=H)` (a square `H x H` window) and flattens the result, which
    is the global average only when `H == W` and, for `H < W < 2H`, averages the first `H`
    columns (other shapes fail there). (`ChannelGate.__init__` as committed also reads an
    undefined `gate_activation`; that line has no part in the computation.)

    Source: Jongchan/attention-module, `MODELS/bam.py`, commit
    459efad0e05ee7dde50c41ca10a3d0800bc3792a.
    """
    n, c, h, w = x.shape
    if w < h or w >= 2 * h:
        raise ValueError("the official channel gate fails unless H <= W < 2H")
    pooled = x[:, :, :h, :h].mean(axis=(2, 3))  # avg_pool2d(x, H, stride=H), one window
    gc = "channel_att.gate_c."
    hidden = pooled @ state[gc + "gate_c_fc_0.weight"].T + state[gc + "gate_c_fc_0.bias"]
    hidden = relu(batch_norm(state, gc + "gate_c_bn_1", hidden))
    channel = (
        hidden @ state[gc + "gate_c_fc_final.weight"].T + state[gc + "gate_c_fc_final.bias"]
    )[:, :, None, None]
    gs = "spatial_att.gate_s."
    spatial = relu(
        batch_norm(state, gs + "gate_s_bn_reduce0", conv2d(state, gs + "gate_s_conv_reduce0", x))
    )
    for i in range(num_dilated):
        spatial = conv2d(
            state, gs + f"gate_s_conv_di_{i}", spatial, padding=dilation, dilation=dilation
        )
        spatial = relu(batch_norm(state, gs + f"gate_s_bn_di_{i}", spatial))
    spatial = conv2d(state, gs + "gate_s_conv_final", spatial)
    return (1 + sigmoid(channel * spatial)) * x


# --------------------------------------------------------------------------------------
# SAN: patchwise SAM


def export_san_patchwise(layer):
    """State dict of SAN's `SAM(sa_type=1)` for a `PatchwiseSelfAttention` layer."""
    state = {}
    for keras_name, key in (("query", "conv1"), ("key", "conv2"), ("value", "conv3")):
        export_conv(state, key, getattr(layer, keras_name))
    export_batch_norm(state, "conv_w.0", layer.weight_norm1)
    export_conv(state, "conv_w.2", layer.weight_conv1)
    export_batch_norm(state, "conv_w.3", layer.weight_norm2)
    export_conv(state, "conv_w.5", layer.weight_conv2)
    return state


def san_patchwise(state, x, kernel_size, share_planes):
    """`SAM.forward` with `sa_type=1` (patchwise), stride 1, dilation 1, eval mode: `phi`
    (`conv1`) of each position with the square `kernel_size x kernel_size` unfold of the
    reflection-padded `psi` (`conv2`), channel-major as `nn.Unfold`; `conv_w` to
    `kernel_size ** 2 * out_planes // share_planes` weights with no softmax; then the
    `Aggregation` CUDA kernel (reflection padding, output channel `c` weighted by group
    `c % (out_planes // share_planes)`), transcribed from its forward loop.

    Source: hszhao/SAN, `model/san.py` and `lib/sa/functions/aggregation_refpad.py`,
    commit d88b022fc3ec4920d4596f94983f0e5b1ced62c6.
    """
    n, _, h, w = x.shape
    k = kernel_size
    pad = k // 2
    x1, x2, x3 = (conv2d(state, key, x) for key in ("conv1", "conv2", "conv3"))
    x1 = x1.reshape(n, -1, 1, h * w)
    padded = np.pad(x2, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="reflect")
    taps = [padded[:, :, i : i + h, j : j + w] for i in range(k) for j in range(k)]
    x2 = np.stack(taps, axis=2).reshape(n, -1, 1, h * w)  # (rel * k^2): channel-major
    y = relu(batch_norm(state, "conv_w.0", np.concatenate([x1, x2], axis=1)))
    y = relu(batch_norm(state, "conv_w.3", conv2d(state, "conv_w.2", y)))
    weights = conv2d(state, "conv_w.5", y).reshape(n, -1, k * k, h * w)
    weights = weights.reshape(n, -1, k * k, h, w)
    groups = weights.shape[1]
    values = np.pad(x3, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="reflect")
    out = np.zeros_like(x3)
    for c in range(x3.shape[1]):
        for i in range(k):
            for j in range(k):
                out[:, c] += weights[:, c % groups, i * k + j] * values[:, c, i : i + h, j : j + w]
    return out


# --------------------------------------------------------------------------------------
# GeneralizedAttention: mmcv


def export_generalized_attention(layer):
    """State dict of mmcv's `GeneralizedAttention` for a `GeneralizedAttention` layer."""
    state = {"gamma": numpy64(layer.gamma).reshape(1)}
    for keras_name, key in (
        ("query", "query_conv"),
        ("key", "key_conv"),
        ("value", "value_conv"),
        ("output_proj", "proj_conv"),
    ):
        if getattr(layer, keras_name) is not None:
            export_conv(state, key, getattr(layer, keras_name))
    if layer.position_x is not None:
        state["appr_geom_fc_x.weight"] = numpy64(layer.position_x.kernel).T
        state["appr_geom_fc_y.weight"] = numpy64(layer.position_y.kernel).T
    if layer.content_bias is not None:
        state["appr_bias"] = numpy64(layer.content_bias)
    if layer.position_bias is not None:
        state["geom_bias"] = numpy64(layer.position_bias)
    return state


def mmcv_generalized_attention(
    state, x, num_heads, attention_type, embedding_dim, position_magnitude=1.0, kv_stride=1
):
    """mmcv `GeneralizedAttention.forward` (`q_stride=1`, `spatial_range=-1`), every branch
    of its energy computation as written, including the E2-without-E4 branch whose
    vertical term reads the query permuted to `(w, h)` order (wrong on square maps, a
    broadcasting error on others).

    Source: open-mmlab/mmcv, `mmcv/cnn/bricks/generalized_attention.py`, commit
    a8073c74bf83d62ec36a103f835faa4837fb6585.
    """
    e1, e2, e3, e4 = (flag == "1" for flag in attention_type)
    n, c, h, w = x.shape
    d = c // num_heads
    x_kv = x[:, :, ::kv_stride, ::kv_stride]  # AvgPool2d((1, 1), stride=kv_stride)
    h_kv, w_kv = x_kv.shape[2:]
    if e1 or e2:
        query = conv2d(state, "query_conv", x).reshape(n, num_heads, d, h * w)
        query = query.transpose(0, 1, 3, 2)
    if e1 or e3:
        key = conv2d(state, "key_conv", x_kv).reshape(n, num_heads, d, h_kv * w_kv)
    if e2 or e4:

        def embedding(size, size_kv):
            diff = np.arange(size)[:, None] - np.arange(size_kv)[None, :] * kv_stride
            diff = (diff * position_magnitude)[:, :, None]
            dims = 1000.0 ** ((4.0 / embedding_dim) * np.arange(embedding_dim // 4))
            return np.concatenate([np.sin(diff / dims), np.cos(diff / dims)], axis=2)

        feat_x = embedding(w, w_kv) @ state["appr_geom_fc_x.weight"].T
        feat_x = feat_x.reshape(1, w, w_kv, num_heads, d).transpose(0, 3, 1, 2, 4) / 2**0.5
        feat_y = embedding(h, h_kv) @ state["appr_geom_fc_y.weight"].T
        feat_y = feat_y.reshape(1, h, h_kv, num_heads, d).transpose(0, 3, 1, 2, 4) / 2**0.5
        feat_x = np.repeat(feat_x, n, axis=0)
        feat_y = np.repeat(feat_y, n, axis=0)
    energy = np.zeros((n, num_heads, h, w, h_kv, w_kv))
    if e1 and e3:
        bias = state["appr_bias"].reshape(1, num_heads, 1, d)
        energy = ((query + bias) @ key).reshape(energy.shape)
    elif e1:
        energy = (query @ key).reshape(energy.shape)
    elif e3:
        bias = state["appr_bias"].reshape(1, num_heads, 1, d)
        energy = energy + (bias @ key).reshape(n, num_heads, 1, 1, h_kv, w_kv)
    if e2 and e4:
        bias = state["geom_bias"].reshape(1, num_heads, 1, d)
        q = (query + bias).reshape(n, num_heads, h, w, d)
        energy_x = q.transpose(0, 1, 3, 2, 4) @ feat_x.transpose(0, 1, 2, 4, 3)
        energy_x = energy_x.transpose(0, 1, 3, 2, 4)[:, :, :, :, None]
        energy_y = (q @ feat_y.transpose(0, 1, 2, 4, 3))[..., None]
        energy = energy + energy_x + energy_y
    elif e2:
        q = query.reshape(n, num_heads, h, w, d).transpose(0, 1, 3, 2, 4)
        energy_x = (q @ feat_x.transpose(0, 1, 2, 4, 3)).transpose(0, 1, 3, 2, 4)[..., None]
        energy_y = (q @ feat_y.transpose(0, 1, 2, 4, 3))[..., None]  # the permuted query
        energy = energy + energy_x + energy_y
    elif e4:
        bias = state["geom_bias"].reshape(1, num_heads, d, 1)
        energy_x = feat_x.reshape(n, num_heads, w * w_kv, d) @ bias
        energy_y = feat_y.reshape(n, num_heads, h * h_kv, d) @ bias
        energy = (
            energy
            + energy_x.reshape(n, num_heads, 1, w, 1, w_kv)
            + energy_y.reshape(n, num_heads, h, 1, h_kv, 1)
        )
    attention = softmax(energy.reshape(n, num_heads, h * w, h_kv * w_kv), axis=3)
    value = conv2d(state, "value_conv", x_kv).reshape(n, num_heads, d, h_kv * w_kv)
    out = (attention @ value.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    out = conv2d(state, "proj_conv", out.reshape(n, num_heads * d, h, w))
    return state["gamma"] * out + x


def built_randomized(layer, shape, seed):
    """`layer` built for `shape` with every weight and BatchNorm statistic randomised."""
    from tests.layer_harness import randomize_weights

    layer.build(shape)
    randomize_weights(layer, seed=seed)
    return layer


def assert_close_nchw(ours, reference_nchw, rtol=1e-5):
    """Our NHWC output against a transcription's NCHW output, `rtol` relative to the
    reference's largest magnitude."""
    reference = to_nhwc(reference_nchw)
    ours = numpy64(ours)
    assert ours.shape == reference.shape
    scale = np.max(np.abs(reference))
    np.testing.assert_allclose(ours, reference, rtol=rtol, atol=rtol * scale)
