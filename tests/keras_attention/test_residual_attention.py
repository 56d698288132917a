"""Closed-form checks of ResidualAttention and SoftMaskBranch (Wang et al., CVPR 2017).

The hourglass is re-wired here from the layer's own sublayers (an independent reading of the
official prototxt), the three mask activations are recomputed in NumPy from the logits of
that re-wiring, and the module output is rebuilt as post((1 + M) * trunk(pre(x))).
"""

import numpy as np
import pytest
from keras import layers, ops

from keras_attention import create_attention
from keras_attention.layers import ResidualAttention, SoftMaskBranch
from keras_attention.layers import residual_attention as ra
from tests.keras_attention import cases_residual_attention
from tests.layer_harness import harness_test, random_input, randomize_weights, to_numpy

test_layer_harness = harness_test(cases_residual_attention)

C = 8


def _built(cls, input_shape, seed=0, **kwargs):
    layer = cls(**kwargs)
    layer.build(input_shape)
    randomize_weights(layer, seed)
    return layer


def _apply(units, x):
    for unit in units:
        x = unit(x, training=False)
    return x


def reference_logits(branch, x):
    """The soft mask branch's pre-activation logits, wired by hand from its sublayers."""
    depth = branch.num_downsamples
    # Bottom-up: pool, then the units of that level; remember each level's output.
    levels = {0: x}
    for level in range(1, depth + 1):
        pooled = branch.pools[level - 1](levels[level - 1])
        levels[level] = _apply(branch.down_blocks[level - 1], pooled)
    # Top-down: upsample to the size of the level above, add its skip unit, apply its units.
    y = levels[depth]
    for level in range(depth - 1, -1, -1):
        size = tuple(levels[level].shape[1:3])
        y = ops.image.resize(y, size, interpolation="bilinear")
        if level > 0:
            skip = branch.skip_blocks[level - 1](levels[level], training=False)
            y = _apply(branch.up_blocks[depth - 1 - level], y + skip)
    for norm, conv in zip(branch.head_norms, branch.head_convs):
        y = conv(ops.relu(norm(y, training=False)))
    return to_numpy(y)


def numpy_mask(logits, activation):
    z = logits.astype("float64")
    if activation == "sigmoid":
        return 1 / (1 + np.exp(-z))
    if activation == "tanh":
        return np.tanh(z)
    if activation == "channel":
        norm = np.sqrt(np.sum(z**2, axis=-1, keepdims=True))
        return z / np.maximum(norm, 1e-12)
    mean = z.mean(axis=(1, 2), keepdims=True)
    variance = z.var(axis=(1, 2), keepdims=True)
    return 1 / (1 + np.exp(-(z - mean) / np.sqrt(variance + 1e-5)))


@pytest.mark.parametrize("activation", ["sigmoid", "channel", "spatial", "tanh"])
@pytest.mark.parametrize("depth,size", [(1, (6, 6)), (2, (7, 9)), (3, (9, 5))])
def test_soft_mask_activation_matches_numpy(activation, depth, size):
    shape = (2, *size, C)
    branch = _built(SoftMaskBranch, shape, num_downsamples=depth, mask_activation=activation)
    x = random_input(shape, seed=1)
    logits = reference_logits(branch, x)
    np.testing.assert_allclose(
        to_numpy(branch.compute_logits(x, training=False)), logits, rtol=1e-5, atol=1e-5
    )
    mask = to_numpy(branch(x, training=False))
    np.testing.assert_allclose(mask, numpy_mask(logits, activation), rtol=1e-5, atol=1e-5)
    if activation == "channel":
        # Unit norm wherever some logit is non-zero (a position can have all of the last
        # ReLU's inputs negative, so every logit there is exactly 0 and so is the mask).
        live = np.linalg.norm(logits, axis=-1) > 1e-6
        assert live.mean() > 0.5
        np.testing.assert_allclose(np.linalg.norm(mask, axis=-1)[live], 1.0, rtol=1e-5)
    elif activation == "tanh":
        assert mask.min() >= -1 and mask.max() <= 1 and mask.min() < 0 < mask.max()
    else:
        assert mask.min() >= 0 and mask.max() <= 1


@pytest.mark.parametrize(
    "activation,expected", [("sigmoid", 0.5), ("channel", 0.0), ("spatial", 0.5)]
)
def test_soft_mask_of_zero_logits(activation, expected):
    """Zeroing the last 1x1 conv zeroes the logits: the epsilons keep the masks finite."""
    shape = (2, 6, 6, C)
    branch = _built(SoftMaskBranch, shape, mask_activation=activation)
    branch.head_convs[-1].kernel.assign(np.zeros(branch.head_convs[-1].kernel.shape, "float32"))
    mask = to_numpy(branch(random_input(shape), training=False))
    np.testing.assert_array_equal(mask, np.full(shape, expected, "float32"))


def test_soft_mask_return_attention_is_the_mask():
    shape = (2, 6, 6, C)
    branch = _built(SoftMaskBranch, shape)
    x = random_input(shape)
    mask, attention = branch(x, return_attention=True, training=False)
    np.testing.assert_array_equal(to_numpy(mask), to_numpy(attention))


@pytest.mark.parametrize("activation", ["sigmoid", "channel", "spatial", "tanh"])
def test_residual_attention_is_post_of_one_plus_mask_times_trunk(activation):
    shape = (2, 7, 9, C)
    layer = _built(ResidualAttention, shape, num_downsamples=2, mask_activation=activation)
    x = random_input(shape, seed=2)
    outputs, attention = layer(x, return_attention=True, training=False)

    pre = _apply(layer.pre_blocks, x)
    trunk = to_numpy(_apply(layer.trunk_blocks, pre))
    mask = numpy_mask(reference_logits(layer.soft_mask, pre), activation)
    fused = ((1 + mask) * trunk).astype("float32")
    expected = to_numpy(_apply(layer.post_blocks, fused))

    np.testing.assert_allclose(to_numpy(attention), mask, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(to_numpy(outputs), expected, rtol=1e-4, atol=1e-4)


def test_sigmoid_mask_scales_trunk_between_one_and_two_times():
    """Attention residual learning: with M in [0, 1], H = (1 + M) * T lies between T and 2T."""
    shape = (2, 8, 8, C)
    layer = _built(ResidualAttention, shape, pre_units=0)  # no post units: outputs are H
    x = random_input(shape, seed=3)
    outputs, mask = layer(x, return_attention=True, training=False)
    outputs, mask = to_numpy(outputs), to_numpy(mask)
    trunk = to_numpy(_apply(layer.trunk_blocks, x))
    assert mask.min() >= 0 and mask.max() <= 1
    np.testing.assert_allclose(outputs, (1 + mask) * trunk, rtol=1e-5, atol=1e-5)
    nonzero = np.abs(trunk) > 1e-3
    ratio = outputs[nonzero] / trunk[nonzero]
    assert ratio.min() >= 1 - 1e-5 and ratio.max() <= 2 + 1e-5


def test_identity_trunk_and_no_units():
    """p = t = 0: the module is x * (1 + M(x))."""
    shape = (2, 6, 6, C)
    layer = _built(ResidualAttention, shape, pre_units=0, trunk_units=0)
    x = random_input(shape, seed=4)
    mask = to_numpy(layer.soft_mask(x, training=False))
    np.testing.assert_allclose(
        to_numpy(layer(x, training=False)), x * (1 + mask), rtol=1e-5, atol=1e-5
    )


def test_residual_unit_is_pre_activation_bottleneck():
    shape = (2, 5, 5, C)
    layer = _built(ResidualAttention, shape, trunk_units=1)
    unit = layer.trunk_blocks[0]
    assert [conv.kernel.shape for conv in unit.convs] == [
        (1, 1, C, C // 4),
        (3, 3, C // 4, C // 4),
        (1, 1, C // 4, C),
    ]
    assert all(conv.bias is None for conv in unit.convs)
    assert all(norm.epsilon == 1e-5 and norm.momentum == 0.9 for norm in unit.norms)
    x = random_input(shape, seed=5)
    branch = x
    for norm, conv in zip(unit.norms, unit.convs):
        branch = conv(ops.relu(norm(branch, training=False)))
    np.testing.assert_allclose(
        to_numpy(unit(x, training=False)), x + to_numpy(branch), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize(
    "depth,size",
    [(1, (2, 3)), (1, (7, 9)), (2, (5, 6)), (2, (7, 9)), (3, (5, 5)), (3, (9, 7)), (3, (13, 10))],
)
def test_mask_has_the_input_spatial_size(depth, size):
    shape = (1, *size, C)
    layer = _built(ResidualAttention, shape, num_downsamples=depth)
    outputs, mask = layer(random_input(shape), return_attention=True, training=False)
    assert tuple(mask.shape) == shape and tuple(outputs.shape) == shape


@pytest.mark.parametrize("depth,r", [(1, 1), (2, 1), (3, 1), (2, 2)])
def test_hourglass_structure(monkeypatch, depth, r):
    """Poolings and upsamplings = num_downsamples, skips = num_downsamples - 1, 2r deepest."""
    calls = []

    def spy(cls):
        original = cls.call

        def call(self, *args, **kwargs):
            outputs = original(self, *args, **kwargs)
            calls.append((type(self).__name__, self.name, tuple(outputs.shape[1:3])))
            return outputs

        monkeypatch.setattr(cls, "call", call)

    for cls in (layers.MaxPooling2D, ra._ResizeLike, ra._PreActBottleneck):
        spy(cls)
    shape = (1, 9, 7, C)
    layer = _built(ResidualAttention, shape, num_downsamples=depth, units_per_level=r)
    layer(random_input(shape), training=False)

    names = [name for _, name, _ in calls]
    pools = [c for c in calls if c[0] == "MaxPooling2D"]
    upsamples = [c for c in calls if c[0] == "_ResizeLike"]
    # 9x7 -> 5x4 -> 3x2 -> 2x1: 'same' pooling rounds up.
    sizes = [(9, 7), (5, 4), (3, 2), (2, 1)][: depth + 1]
    assert [size for _, _, size in pools] == sizes[1:]
    assert [size for _, _, size in upsamples] == sizes[-2::-1]  # back up to every level
    assert sum(n.startswith("skip_") for n in names) == depth - 1
    assert sum(n.startswith(f"down_{depth}_") for n in names) == 2 * r
    assert sum(n.startswith("down_") for n in names) == r * (depth - 1) + 2 * r
    assert sum(n.startswith("up_") for n in names) == r * (depth - 1)
    assert [n for n in names if n.startswith(("pre_", "trunk_", "post_"))] == [
        "pre_0",
        "trunk_0",
        "trunk_1",
        "post_0",
    ]


def test_sublayer_names():
    layer = ResidualAttention(pre_units=1, trunk_units=2)
    layer.build((None, 8, 8, C))
    children = layer._flatten_layers(include_self=False, recursive=False)
    assert [child.name for child in children] == [
        "pre_0",
        "trunk_0",
        "trunk_1",
        "soft_mask",
        "post_0",
    ]
    assert isinstance(layer.soft_mask, SoftMaskBranch)


def test_dynamic_resize_matches_keras_resize():
    """The gather-based resize used for symbolic sizes equals ops.image.resize (bilinear)."""
    for (h_in, w_in), (h_out, w_out) in [
        ((4, 5), (7, 9)),
        ((3, 2), (5, 4)),
        ((1, 2), (2, 3)),
        ((2, 2), (4, 4)),
    ]:
        x = random_input((2, h_in, w_in, 3), seed=h_out * w_out)
        np.testing.assert_allclose(
            to_numpy(ra._bilinear_resize_dynamic(x, h_out, w_out)),
            to_numpy(ops.image.resize(x, (h_out, w_out), interpolation="bilinear")),
            rtol=1e-6,
            atol=1e-6,
        )


def test_factory_entry():
    layer = create_attention("residual_attention", C, num_downsamples=2)
    assert isinstance(layer, ResidualAttention) and layer.num_downsamples == 2
    assert (layer.pre_units, layer.trunk_units, layer.units_per_level) == (1, 2, 1)
