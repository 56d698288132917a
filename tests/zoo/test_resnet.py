"""The ResNet family (zoo/backbones/resnet.py) against timm's resnet.py and closed forms.

Default run: reduced timm ResNets committed as fixtures (tools/make_resnet_fixtures.py: SE
with groups, ECA with the deep stem and average-pool shortcuts, basic blocks with CBAM and
the tiered stem, non-local blocks after selected blocks) reproduce timm's logits without
torch; the models without a timm counterpart (BAM, CGNL, AA) are checked against closed
forms; every registered model builds and runs under mixed_bfloat16 at two input sizes.
Under the `oracle` marker: the full-size models against live timm, all weights random.
"""

import keras
import numpy as np
import pytest
from safetensors.numpy import load_file

from keras_attention import layers as L
from tools.make_resnet_fixtures import CASES, FIXTURES
from zoo import models
from zoo.backbones.resnet import aa_depths, resnet_body
from zoo.convert.timm import load_timm_state_dict

MAX_RELATIVE_ERROR = 1e-4
RESNET_MODELS = (
    "resnet50",
    "seresnet50",
    "seresnext50_32x4d",
    "ecaresnet50d",
    "cbam_resnet50",
    "bam_resnet50",
    "nl_resnet50",
    "aa_resnet50",
    "cgnl_resnet50",
)


def relative_error(actual, expected):
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def layers_of(model, cls):
    return [layer for layer in model.layers if type(layer) is cls]


def fixture(case_id):
    import json

    with np.load(FIXTURES / f"{case_id}.npz") as npz:
        arrays = {key: npz[key] for key in npz.files}
    config = json.loads(str(arrays.pop("config")))
    return load_file(str(FIXTURES / f"{case_id}.safetensors")), arrays, config


def randomize_keras_layer(layer, seed):
    """Random values for every weight of `layer` (variances positive)."""
    rng = np.random.default_rng(seed)
    for variable in layer.weights:
        shape = tuple(variable.shape)
        if "variance" in variable.path:
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.normal(0.0, 0.5, shape)
        variable.assign(value.astype("float32"))


# --------------------------------------------------------------------------------------
# Default run: committed reduced timm ResNets


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_reduced_timm_resnet_logits(case_id):
    state, arrays, config = fixture(case_id)
    height, width = arrays["input"].shape[1:3]
    model = models.build(
        config["model"],
        input_shape=(height, width, 3),
        num_classes=config["num_classes"],
        classifier_activation=None,
        **config["body_kwargs"],
    )
    load_timm_state_dict(model, state)
    logits = to_numpy(model(arrays["input"], training=False))
    assert relative_error(logits, arrays["logits"]) < MAX_RELATIVE_ERROR


def test_fixture_with_a_layer_missing_names_the_unused_weight():
    state, _, config = fixture("resnet_nl_tiny")
    kwargs = dict(config["body_kwargs"], attention_positions=[[2, 1], [3, 0]])
    model = models.build(
        config["model"], input_shape=(70, 54, 3), num_classes=config["num_classes"], **kwargs
    )
    # the 12 tensors of the left-out block: t, p, g, z (weight, bias), norm (4)
    with pytest.raises(
        ValueError,
        match=r"weight 'layer3\.1\.nl\.[a-z_.]+' \(shape "
        r"\([\d, ]+\)\) matches no layer; 12 unused",
    ):
        load_timm_state_dict(model, state)


# --------------------------------------------------------------------------------------
# Layout: timm's module paths


def test_resnet50_layout_follows_timm_module_paths():
    model = models.build(
        "ecaresnet50d", include_top=False, input_shape=(64, 64, 3), layers=(1, 2, 1, 1)
    )
    names = [layer.name for layer in model.layers if layer.weights]
    assert names[:8] == [
        "conv1-0",
        "conv1-1",
        "conv1-3",
        "conv1-4",
        "conv1-6",
        "bn1",
        "layer1-0-conv1",
        "layer1-0-bn1",
    ]
    # stride-1 first stage: the d shortcut has no pool (timm's Identity at index 0)
    assert "layer1-0-downsample-0" not in [layer.name for layer in model.layers]
    assert [n for n in names if n.startswith("layer2-0-downsample")] == [
        "layer2-0-downsample-1",
        "layer2-0-downsample-2",
    ]
    assert type(model.get_layer("layer2-0-downsample-0")) is keras.layers.AveragePooling2D
    # the attention scales the residual branch after bn3, before the shortcut is added
    se = model.get_layer("layer2-1-se")
    assert se.input is model.get_layer("layer2-1-bn3").output
    assert model.get_layer("layer2-1-add").input[0] is se.output
    assert [n for n in names if n.startswith("layer2-1")] == [
        "layer2-1-conv1",
        "layer2-1-bn1",
        "layer2-1-conv2",
        "layer2-1-bn2",
        "layer2-1-conv3",
        "layer2-1-bn3",
        "layer2-1-se",
    ]


def test_features_are_timm_feature_info_maps():
    model = models.build(
        "seresnet50", features_only=True, input_shape=(64, 96, 3), layers=(1, 1, 1, 1)
    )
    shapes = {key: tuple(value.shape[1:]) for key, value in model.output.items()}
    assert shapes == {
        "stem": (32, 48, 64),
        "stage1": (16, 24, 256),
        "stage2": (8, 12, 512),
        "stage3": (4, 6, 1024),
        "stage4": (2, 3, 2048),
    }


def test_invalid_configurations_raise():
    inputs = keras.Input((32, 32, 3))
    with pytest.raises(
        ValueError,
        match=r"stem_type must be one of \('', 'deep', "
        r"'deep_tiered'\), got 'tiered'",
    ):
        resnet_body(inputs, stem_type="tiered")
    with pytest.raises(ValueError, match="basic blocks support only cardinality=1"):
        resnet_body(inputs, block="basic", cardinality=32, base_width=4)
    with pytest.raises(
        ValueError, match="attention_placement='replace_conv' needs attention='aa_conv'"
    ):
        resnet_body(inputs, attention="se", attention_placement="replace_conv")
    with pytest.raises(
        ValueError,
        match=r"take \['key_ratio', 'num_heads', 'relative', "
        r"'value_ratio'\], got \['dk'\]",
    ):
        resnet_body(
            inputs,
            attention="aa_conv",
            attention_placement="replace_conv",
            attention_kwargs={"dk": 8},
        )
    with pytest.raises(ValueError, match="'after_blocks' needs attention_positions"):
        resnet_body(inputs, attention="nl", attention_placement="after_blocks")


def test_every_other_block_places_attention_in_even_blocks():
    model = keras.Model(
        *_io(
            resnet_body,
            layers=(3, 1, 2, 1),
            channels=(4, 8, 8, 8),
            attention="se",
            attention_placement="every_other_block",
        )
    )
    assert [layer.name for layer in layers_of(model, L.SqueezeExcite)] == [
        "layer1-0-se",
        "layer1-2-se",
        "layer2-0-se",
        "layer3-0-se",
        "layer4-0-se",
    ]


def _io(body, shape=(32, 32, 3), **kwargs):
    inputs = keras.Input(shape)
    return inputs, list(body(inputs, **kwargs).values())[-1]


# --------------------------------------------------------------------------------------
# BAM-ResNet-50: BAM on the outputs of stages 1-3


def _copy_shared_weights(source, target):
    for layer in source.layers:
        if layer.weights:
            target.get_layer(layer.name).set_weights(layer.get_weights())


def test_bam_resnet50_equals_resnet50_when_bam_is_a_constant_gain():
    """With the spatial branch's last conv zeroed, BAM is `x * (1 + sigmoid(0)) = 1.5 x`;
    dividing the 1x1 convolutions that read each BAM output (the next stage's conv1 and
    shortcut) by 1.5 must give back resnet50's logits exactly - which fails if a BAM sits
    anywhere else or is missing."""
    kwargs = dict(
        layers=(1, 1, 1, 1),
        channels=(16, 32, 64, 128),
        input_shape=(64, 64, 3),
        classifier_activation=None,
    )
    plain = models.build("resnet50", **kwargs)
    bam = models.build("bam_resnet50", **kwargs)
    assert [layer.name for layer in layers_of(bam, L.BAM)] == ["bam1", "bam2", "bam3"]
    for index, layer in enumerate(plain.layers):
        if layer.weights:
            randomize_keras_layer(layer, index)
    _copy_shared_weights(plain, bam)
    for index, layer in enumerate(layers_of(bam, L.BAM)):
        randomize_keras_layer(layer, 100 + index)
    images = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype("float32")
    assert relative_error(to_numpy(bam(images)), to_numpy(plain(images))) > 1e-2
    for layer in layers_of(bam, L.BAM):
        layer.spatial_final.kernel.assign(np.zeros(layer.spatial_final.kernel.shape))
        layer.spatial_final.bias.assign(np.zeros(layer.spatial_final.bias.shape))
    for stage in (2, 3, 4):
        for name in (f"layer{stage}-0-conv1", f"layer{stage}-0-downsample-0"):
            conv = bam.get_layer(name)
            conv.kernel.assign(to_numpy(conv.kernel) / 1.5)
    assert relative_error(to_numpy(bam(images)), to_numpy(plain(images))) < 1e-5


# --------------------------------------------------------------------------------------
# Non-local and CGNL ResNet-50: blocks after selected residual blocks


def test_nl_resnet50_places_timm_non_local_blocks_after_every_other_block():
    model = models.build("nl_resnet50", input_shape=(64, 64, 3))
    blocks = layers_of(model, L.NonLocal)
    assert [layer.name for layer in blocks] == [
        "layer2-1-nl",
        "layer2-3-nl",
        "layer3-1-nl",
        "layer3-3-nl",
        "layer3-5-nl",
    ]
    # timm NonLocalAttn: inner width make_divisible(C / 8, 8), scale C ** -0.5
    assert [(layer.inner, layer.scale_value) for layer in blocks] == [(64, 512**-0.5)] * 2 + [
        (128, 1024**-0.5)
    ] * 3
    assert blocks[0].input is model.get_layer("layer2-1-act3").output
    assert model.get_layer("layer2-2-conv1").input is blocks[0].output


def _cgnl_closed_form(layer, x):
    """The official CGNL dot-product block in numpy (NHWC), from the layer's weights."""
    groups, inner = layer.groups, layer.inner
    theta = x @ to_numpy(layer.theta.kernel)[0, 0]
    phi = x @ to_numpy(layer.phi.kernel)[0, 0]
    g = x @ to_numpy(layer.g.kernel)[0, 0]
    batch, height, width, _ = x.shape
    per_group = inner // groups
    y = np.empty_like(theta)
    for k in range(groups):
        part = slice(k * per_group, (k + 1) * per_group)
        s = np.sum(phi[..., part] * g[..., part], axis=(1, 2, 3), keepdims=True)
        y[..., part] = theta[..., part] * s
    kernel = to_numpy(layer.z.kernel)[0, 0]  # (inner / groups, C)
    channels = x.shape[-1]
    out_per_group = channels // groups
    z = np.empty(x.shape)
    for k in range(groups):
        z[..., k * out_per_group : (k + 1) * out_per_group] = (
            y[..., k * per_group : (k + 1) * per_group]
            @ kernel[:, k * out_per_group : (k + 1) * out_per_group]
        )
    grouped = z.reshape(batch, height, width, groups, out_per_group)
    mean = grouped.mean(axis=(1, 2, 4), keepdims=True)
    var = grouped.var(axis=(1, 2, 4), keepdims=True)
    normed = ((grouped - mean) / np.sqrt(var + 1e-5)).reshape(z.shape)
    return normed * to_numpy(layer.norm.gamma) + to_numpy(layer.norm.beta) + x


def test_cgnl_resnet50_block_before_the_last_res4_block_matches_closed_form():
    model = models.build("cgnl_resnet50", input_shape=(64, 64, 3))
    (cgnl,) = layers_of(model, L.CompactGeneralizedNonLocal)
    assert cgnl.name == "layer3-4-cgnl"
    assert (cgnl.groups, cgnl.inner, cgnl.kernel, cgnl.use_scale) == (8, 512, "dot", False)
    assert cgnl.input is model.get_layer("layer3-4-act3").output
    assert model.get_layer("layer3-5-conv1").input is cgnl.output
    assert model.get_layer("layer3-5-add").input[1] is cgnl.output  # identity shortcut
    randomize_keras_layer(cgnl, 0)
    probe = keras.Model(model.input, [cgnl.input, cgnl.output])
    images = np.random.default_rng(1).normal(size=(2, 64, 64, 3)).astype("float32")
    x, out = (to_numpy(t).astype("float64") for t in probe(images))
    assert relative_error(out, _cgnl_closed_form(cgnl, x)) < 1e-4


# --------------------------------------------------------------------------------------
# AA-ResNet-50: attention-augmented 3x3 convolutions in stages 2-4


def _aa_parameters(f_in, f_out, dk, dv, heads, height, width):
    """Parameters of one augmented convolution: conv branch (bias), qkv (bias), attention
    output projection (bias), relative tables (2W - 1 and 2H - 1 rows of dk / heads)."""
    return (
        9 * f_in * (f_out - dv)
        + (f_out - dv)
        + f_in * (2 * dk + dv)
        + 2 * dk
        + dv
        + dv * dv
        + dv
        + (2 * width - 1 + 2 * height - 1) * (dk // heads)
    )


def test_aa_resnet50_augments_every_stage_2_to_4_conv_with_the_paper_ratios():
    model = models.build("aa_resnet50")
    augmented = layers_of(model, L.AttentionAugmentedConv2D)
    assert [layer.name for layer in augmented] == (
        [f"layer2-{b}-conv2" for b in range(4)]
        + [f"layer3-{b}-conv2" for b in range(6)]
        + [f"layer4-{b}-conv2" for b in range(3)]
    )
    # kappa = 2 upsilon = 0.2 of F_out, rounded to multiples of the 8 heads
    assert aa_depths(128) == (24, 16) and aa_depths(256) == (48, 24)
    assert aa_depths(512) == (104, 48)
    sizes = {2: 28, 3: 14, 4: 7}
    for layer in augmented:
        stage = int(layer.name[5])
        width = 64 * 2 ** (stage - 1)
        dk, dv = aa_depths(width)
        assert (layer.filters, layer.dk, layer.dv, layer.num_heads, layer.relative) == (
            width,
            dk,
            dv,
            8,
            True,
        )
        assert layer.count_params() == _aa_parameters(
            width, width, dk, dv, 8, sizes[stage], sizes[stage]
        )
        # strided blocks pool 2x2 first, so the attention runs at the output resolution
        pooled = layer.name.endswith("-0-conv2")
        source = model.get_layer(f"{layer.name[:-6]}-act1").output
        if pooled:
            assert layer.input is model.get_layer(f"{layer.name}-pool").output
            assert model.get_layer(f"{layer.name}-pool").input is source
        else:
            assert layer.input is source
    plain = models.build("resnet50")
    convs = sum(9 * (64 * 2 ** (s - 1)) ** 2 for s in (2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 4, 4, 4))
    assert model.count_params() == plain.count_params() - convs + sum(
        layer.count_params() for layer in augmented
    )


def test_aa_resnet50_needs_a_fixed_input_size():
    with pytest.raises(
        ValueError,
        match=r"aa_resnet50 needs a fixed height and width "
        r"\(relative position tables",
    ):
        models.build("aa_resnet50", input_shape=(None, None, 3))


def test_aa_resnet_trains_a_step_through_the_relative_position_tables():
    model = models.build(
        "aa_resnet50",
        input_shape=(64, 64, 3),
        num_classes=3,
        layers=(1, 1, 1, 1),
        channels=(16, 32, 64, 128),
        classifier_activation=None,
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    tables = [layer.key_rel_w for layer in layers_of(model, L.AttentionAugmentedConv2D)]
    assert len(tables) == 3
    before = [to_numpy(table).copy() for table in tables]
    rng = np.random.default_rng(0)
    images = rng.normal(size=(4, 64, 64, 3)).astype("float32")
    labels = np.array([0, 1, 2, 0])
    loss = model.train_on_batch(images, labels)
    assert np.isfinite(loss)
    for table, old in zip(tables, before):
        assert np.max(np.abs(to_numpy(table) - old)) > 0


# --------------------------------------------------------------------------------------
# Every registered model: mixed precision and input sizes


@pytest.mark.slow
@pytest.mark.parametrize("name", RESNET_MODELS)
def test_model_builds_and_runs_under_mixed_bfloat16(name):
    keras.config.set_dtype_policy("mixed_bfloat16")
    dynamic = name != "aa_resnet50"
    shape = (None, None, 3) if dynamic else (64, 64, 3)
    model = models.build(name, input_shape=shape, classifier_activation=None)
    sizes = [(64, 64), (72, 40)] if dynamic else [(64, 64)]
    for height, width in sizes:
        images = np.random.default_rng(0).normal(size=(1, height, width, 3)).astype("float32")
        logits = model(images, training=False)
        assert keras.backend.standardize_dtype(logits.dtype) == "float32"
        assert np.all(np.isfinite(to_numpy(logits)))
    assert model.get_layer("layer1-0-conv1").compute_dtype == "bfloat16"
    keras.backend.clear_session()


# --------------------------------------------------------------------------------------
# Oracle: the full models against live timm


def _timm_model(name):
    import timm
    from timm.layers import NonLocalAttn

    from tools.make_resnet_fixtures import add_after_blocks, timm_resnet

    if name == "cbam_resnet50":
        return timm_resnet(
            dict(block="bottleneck", layers=[3, 4, 6, 3], block_args=dict(attn_layer="cbam"))
        )
    if name == "nl_resnet50":
        from zoo.backbones.resnet import NL_POSITIONS

        model = timm.create_model("resnet50", pretrained=False)
        return add_after_blocks(model, NL_POSITIONS, NonLocalAttn)
    return timm.create_model(name, pretrained=False)


TIMM_PARITY = (
    "resnet50",
    "seresnet50",
    "seresnext50_32x4d",
    "ecaresnet50d",
    "cbam_resnet50",
    "nl_resnet50",
)


@pytest.mark.oracle
@pytest.mark.parametrize("name", TIMM_PARITY)
def test_live_timm_parity(name, tmp_path):
    """Random timm weights -> safetensors -> our model, at 224 and 200 (odd maps on the
    way down) from one dynamic-size build."""
    pytest.importorskip("timm", reason="live oracle needs the `oracle` extra (timm, torch)")
    import torch
    from safetensors.torch import save_file

    from tools.make_resnet_fixtures import float_state, randomize

    torch.manual_seed(0)
    reference = randomize(_timm_model(name), 0)
    path = tmp_path / f"{name}.safetensors"
    save_file(float_state(reference), str(path))
    model = models.build(name, input_shape=(None, None, 3), classifier_activation=None)
    load_timm_state_dict(model, load_file(str(path)))
    for size, batch in ((224, 2), (200, 1)):
        images = torch.randn((batch, 3, size, size), generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            expected = reference(images).numpy()
        logits = to_numpy(model(images.permute(0, 2, 3, 1).numpy(), training=False))
        error = relative_error(logits, expected)
        print(f"{name} @ {size}: max relative logit error {error:.2e}")
        assert error < MAX_RELATIVE_ERROR


def _tiny_resnext():
    inputs = keras.Input((32, 24, 3))
    features = resnet_body(
        inputs,
        layers=(1, 1, 1, 1),
        channels=(8, 8, 8, 16),
        cardinality=4,
        base_width=16,
        attention="cgnl",
        attention_kwargs={"groups": 2},
        attention_placement="between_stages",
    )
    return keras.Model(inputs, features)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="a TensorFlow SavedModel")
def test_resnext_saved_model_runs_without_xla(tmp_path):
    """Keras' grouped Conv2D would put an XLA-compiled function into the SavedModel, which
    tensorflow_model_server refuses without --xla_cpu_compilation_enabled; the zoo's grouped
    convolutions are GroupedConv2D, and CGNL's output projection too."""
    from serving.saved_model import xla_compiled_functions

    _tiny_resnext().export(tmp_path / "resnext", verbose=False)
    assert xla_compiled_functions(tmp_path / "resnext") == []


def test_weights_saved_with_keras_grouped_conv2d_are_refused(tmp_path):
    """Keras keys weight files by layer class: a file written when the grouped convolutions
    were Keras' Conv2D (an older cached timm conversion, say) must not load silently."""
    from keras_attention.convolution import GroupedConv2D
    from zoo.weights import WeightsError, load_keras_weights

    model = _tiny_resnext()

    def as_keras_conv2d(layer):
        cls = keras.layers.Conv2D if type(layer) is GroupedConv2D else type(layer)
        return cls.from_config(layer.get_config())

    older = keras.models.clone_model(model, clone_function=as_keras_conv2d)
    older.save_weights(tmp_path / "older.weights.h5")
    with pytest.raises(WeightsError, match="does not fit"):
        load_keras_weights(model, tmp_path / "older.weights.h5")
