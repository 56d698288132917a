"""SAN10 (Zhao et al., "Exploring Self-attention for Image Recognition", CVPR 2020):
`san10_pairwise`, `san10_patchwise`.

Structure reference: the official code, hszhao/SAN `model/san.py` with
`config/imagenet/imagenet_san10_{pairwise,patchwise}.yaml` (layers [2, 1, 2, 4, 1], kernels
[3, 7, 7, 7, 7]). Parameter counts: the paper's ImageNet table, repeated in the official
README's "Overall result" table: SAN10-pair. 10.5M, SAN10-patch. 11.8M.

Counting rule: PyTorch's `parameters()`, i.e. without BatchNorm running statistics, which
is the Keras trainable count. The official structure counted by an independent formula
below gives 10,533,370 (pairwise) and 11,841,124 (patchwise) parameters: 10.5M and 11.8M,
the paper's numbers to its 0.1M rounding (tolerance 0.05M). Ours equals the official count
exactly for patchwise; for pairwise it is smaller by `2 + C // 32` per block, the two
biases `PairwiseSelfAttention` drops because they cancel (position convolution bias in
`p_i - p_j`, last weight convolution bias in the softmax): 10,531,592, still 10.5M.
"""

import keras
import numpy as np
import pytest
from keras import ops

from keras_attention.layers import PairwiseSelfAttention, PatchwiseSelfAttention
from zoo import registry
from zoo.models import build

NAMES = ("san10_pairwise", "san10_patchwise")
SA_TYPE = {"san10_pairwise": "pairwise", "san10_patchwise": "patchwise"}
SAM_CLASS = {"san10_pairwise": PairwiseSelfAttention, "san10_patchwise": PatchwiseSelfAttention}
PAPER_PARAMS = {"san10_pairwise": 10.5e6, "san10_patchwise": 11.8e6}
LAYERS, KERNELS, WIDTHS = (2, 1, 2, 4, 1), (3, 7, 7, 7, 7), (64, 256, 512, 1024, 2048)


def _bn(channels):
    return 2 * channels  # weight, bias (running statistics are buffers)


def _official_sam(sa_type, channels, kernel):
    rel, mid = channels // 16, channels // 4
    groups = mid // 8
    count = 2 * (channels * rel + rel) + channels * mid + mid  # conv1, conv2, conv3
    if sa_type == "pairwise":
        count += _bn(rel + 2) + (rel + 2) * rel + _bn(rel) + rel * groups + groups  # conv_w
        count += 2 * 2 + 2  # conv_p
    else:
        features = rel * (kernel * kernel + 1)
        count += _bn(features) + features * groups + _bn(groups)
        count += groups * kernel * kernel * groups + kernel * kernel * groups
    return count


def _official_params(sa_type, num_classes=1000):
    count = 3 * WIDTHS[0] + _bn(WIDTHS[0])  # conv_in, bn_in
    in_channels = WIDTHS[0]
    for blocks, kernel, width in zip(LAYERS, KERNELS, WIDTHS):
        count += in_channels * width + _bn(width)  # conv{i}, bn{i}
        mid = width // 4
        block = _bn(width) + _official_sam(sa_type, width, kernel) + _bn(mid)
        count += blocks * (block + mid * width + width)
        in_channels = width
    return count + WIDTHS[-1] * num_classes + num_classes


def _dropped_biases(sa_type):
    if sa_type == "patchwise":
        return 0
    return sum(blocks * (2 + width // 4 // 8) for blocks, width in zip(LAYERS, WIDTHS))


def _count(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


_MODELS_224 = {}


def _model_224(name):
    if name not in _MODELS_224:
        _MODELS_224[name] = build(name)
    return _MODELS_224[name]


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_matches_official_code_and_paper(name):
    sa_type = SA_TYPE[name]
    model = _model_224(name)
    official = _official_params(sa_type)
    assert abs(official - PAPER_PARAMS[name]) <= 0.05e6
    assert _count(model.trainable_weights) == official - _dropped_biases(sa_type)
    # the rest are the BatchNorm running statistics, which PyTorch does not count
    assert {w.path.rsplit("/", 1)[-1] for w in model.non_trainable_weights} == {
        "moving_mean",
        "moving_variance",
    }


@pytest.mark.parametrize("name", NAMES)
def test_stage_structure_at_224(name):
    model = _model_224(name)
    sams = [layer for layer in model.layers if isinstance(layer, SAM_CLASS[name])]
    expected = []
    for stage, (blocks, kernel, width, size) in enumerate(
        zip(LAYERS, KERNELS, WIDTHS, (112, 56, 28, 14, 7))
    ):
        expected += [
            (f"layer{stage}-{i}-sam", (None, size, size, width), kernel, width // 16, width // 4, 8)
            for i in range(blocks)
        ]
    got = [
        (
            s.name,
            tuple(s.input.shape),
            s.kernel_size,
            s.relation_channels,
            s.value_channels,
            s.share_planes,
        )
        for s in sams
    ]
    assert got == expected
    if name == "san10_patchwise":
        assert not any(s.softmax for s in sams)  # as the official code
    assert tuple(model.get_layer("act4").output.shape) == (None, 7, 7, 2048)
    spec = registry.get_spec(name)
    assert (spec.timm_name, spec.classifier_name, spec.family, spec.weights) == (
        None,
        "fc",
        "san",
        (),
    )
    assert spec.default_input_shape == (224, 224, 3)


# ---------------------------------------------------------------------------- behaviour


def _reference_features(model, images, zero_attention):
    """The official `SAN.forward` / `Bottleneck.forward` written out, calling the model's
    layers."""
    get = model.get_layer
    x = ops.relu(get("bn_in")(get("conv_in")(images)))
    for stage, blocks in enumerate(LAYERS):
        x = get(f"conv{stage}")(ops.max_pool(x, 2, 2, padding="valid"))
        for i in range(blocks):
            name = f"layer{stage}-{i}"
            y = ops.relu(get(f"{name}-bn1")(x))
            sam = get(f"{name}-sam")
            y = ops.zeros_like(y[..., : sam.value_channels]) if zero_attention else sam(y)
            y = get(f"{name}-conv")(ops.relu(get(f"{name}-bn2")(y)))
            x = x + y
        x = ops.relu(get(f"bn{stage}")(x))
    return x


def _randomise_bn_statistics(model, seed=0):
    rng = np.random.default_rng(seed)
    for weight in model.non_trainable_weights:
        shape = tuple(weight.shape)
        if weight.path.endswith("moving_variance"):
            weight.assign(rng.uniform(0.5, 1.5, shape).astype("float32"))
        elif weight.path.endswith("moving_mean"):
            weight.assign(rng.uniform(-0.1, 0.1, shape).astype("float32"))


def _max_relative(a, b):
    a, b = ops.convert_to_numpy(a), ops.convert_to_numpy(b)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("name", NAMES)
def test_forward_equals_official_composition(monkeypatch, name):
    """The body against the official forward written out, with the real attention and with
    every attention layer's output forced to zeros (each block then adds
    `conv(relu(bn2(0)))`), which must change the output."""
    model = build(name, include_top=False, input_shape=(128, 128, 3))
    _randomise_bn_statistics(model)
    images = keras.random.normal((1, 128, 128, 3), seed=1)
    real = model(images, training=False)
    assert _max_relative(real, _reference_features(model, images, False)) < 1e-4
    with monkeypatch.context() as patch:
        patch.setattr(
            SAM_CLASS[name],
            "call",
            lambda self, inputs, training=None, **kw: ops.zeros_like(
                inputs[..., : self.value_channels]
            ),
        )
        zeroed = model(images, training=False)
        assert _max_relative(zeroed, _reference_features(model, images, True)) < 1e-4
    assert _max_relative(real, zeroed) > 1e-2


@pytest.mark.parametrize("name", NAMES)
def test_forward_224_batch_1_is_finite_distribution(name):
    images = keras.random.uniform((1, 224, 224, 3), seed=2)
    probs = ops.convert_to_numpy(_model_224(name)(images, training=False))
    assert probs.shape == (1, 1000)
    assert np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_dynamic_input_size_matches_fixed_size_model(name):
    dynamic = build(name, include_top=False, input_shape=(None, None, 3))
    for size, final in ((128, 4), (150, 4)):  # 150 -> 75, 37, 18, 9, 4: odd levels
        images = keras.random.normal((1, size, size, 3), seed=size)
        got = ops.convert_to_numpy(dynamic(images, training=False))
        assert got.shape == (1, final, final, 2048)
        assert np.all(np.isfinite(got))
    fixed = build(name, include_top=False, input_shape=(150, 150, 3))
    fixed.set_weights(dynamic.get_weights())
    assert _max_relative(got, fixed(images, training=False)) < 1e-5


def test_too_small_input_names_the_reflection_padding():
    # 112 -> 56, 28, 14, 7, 3: the last stage's 7x7 footprint needs more than 3 pixels
    with pytest.raises(ValueError, match=r"Reflection padding of 3 .* needs a height above 3"):
        build("san10_pairwise", input_shape=(112, 112, 3))


@pytest.mark.parametrize("name", NAMES)
def test_mixed_bfloat16_builds_and_runs(name):
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = build(name, input_shape=(128, 128, 3), num_classes=3)
    assert model.get_layer("layer1-0-sam").compute_dtype == "bfloat16"
    probs = model(keras.random.uniform((2, 128, 128, 3), seed=3), training=False)
    assert keras.backend.standardize_dtype(probs.dtype) == "float32"
    probs = ops.convert_to_numpy(probs)
    assert np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-3)


@pytest.mark.parametrize("name", NAMES)
def test_one_training_step(name):
    model = build(name, input_shape=(128, 128, 3), num_classes=3, classifier_activation=None)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        run_eagerly=True,
    )
    sam = model.get_layer("layer1-0-sam")
    before = ops.convert_to_numpy(sam.query.kernel).copy()
    images = keras.random.uniform((2, 128, 128, 3), seed=4)
    history = model.fit(images, np.array([0, 2]), batch_size=2, epochs=1, verbose=0)
    loss = history.history["loss"][0]
    assert np.isfinite(loss) and 0 < loss < 100
    # the gradient reaches the attention weights' query projection
    assert not np.allclose(ops.convert_to_numpy(sam.query.kernel), before)
